"""Validation while training (`--validation_steps`): held-out metrics, validation.jsonl, best/ and the refusals."""

import json

import numpy as np
import pytest
import torch
import yaml

import asintrovae_hf.training.validation as validation
from asintrovae_hf import AsIntroVAEPipeline
from asintrovae_hf.training.args import parse_args
from asintrovae_hf.training.inputs import load_training_data
from asintrovae_hf.training.loop import main, train
from asintrovae_hf.training.setup import setup
from helpers import TINY, pipeline_weights, reset_accelerate

pytestmark = pytest.mark.usefixtures("fresh_accelerate")

QUICK = TINY + ["--checkpointing_steps", "100", "--save_images_steps", "100", "--num_validation_images", "48"]


def _records(out):
    return [json.loads(line) for line in (out / "validation.jsonl").read_text().splitlines()]


def test_validation_on_digits_logs_every_metric_and_leaves_training_unchanged(tmp_path, monkeypatch):
    from accelerate import Accelerator

    logged = []
    real_log = Accelerator.log
    monkeypatch.setattr(Accelerator, "log", lambda self, values, step=None, **kw: (
        logged.append((step, dict(values))), real_log(self, values, step=step, **kw))[1])
    validated = tmp_path / "validated"
    train(parse_args(QUICK + ["--output_dir", str(validated), "--max_train_steps", "4", "--validation_steps", "3",
                              "--checkpointing_steps", "3"]))
    records = _records(validated)
    assert [r["step"] for r in records] == [3, 4]  # every 3 steps, and the last one
    expected = {"reconstruction_mse", "neg_elbo", "neg_elbo_bits_per_dim", "fd", "precision", "recall",
                "class_entropy"}
    for record in records:
        assert set(record["metrics"]) == expected and record["num_images"] == 48 and record["seconds"] >= 0
        assert all(np.isfinite(v) for v in record["metrics"].values())
        assert 0 < record["metrics"]["reconstruction_mse"] < 1 and record["metrics"]["fd"] > 0
    tracked = {step: values for step, values in logged if "validation/fd" in values}
    assert sorted(tracked) == [3, 4]
    assert tracked[4] == {f"validation/{k}": v for k, v in records[1]["metrics"].items()}

    reset_accelerate()
    plain = tmp_path / "plain"
    train(parse_args(QUICK + ["--output_dir", str(plain), "--max_train_steps", "4", "--checkpointing_steps", "3"]))
    assert not (plain / "validation.jsonl").exists()
    for folder in ("", "checkpoint-3"):
        a, b = pipeline_weights(validated / folder), pipeline_weights(plain / folder)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), folder  # bit for bit


def test_best_pipeline_is_kept_on_improvement_only_survives_the_limit_and_a_resume(tmp_path, monkeypatch):
    values = {2: 3.0, 4: 1.0, 6: 2.0, 8: 1.5, 10: 0.5}
    seen = {}

    def scripted(encoder, decoder, vset, seed, batch_size=256):
        step = 2 * (len(seen) + 1) if not seen else max(seen) + 2
        seen[step] = {f"decoder.{k}": v.detach().clone() for k, v in decoder.state_dict().items()}
        return {"reconstruction_mse": values[step], "neg_elbo": 10.0}

    monkeypatch.setattr(validation, "compute_metrics", scripted)
    out = tmp_path / "run"
    common = QUICK + ["--output_dir", str(out), "--validation_steps", "2", "--keep_best_by", "reconstruction_mse",
                      "--checkpointing_steps", "2", "--checkpoints_total_limit", "1", "--ema_decay", "0.5"]
    train(parse_args(common + ["--max_train_steps", "6"]))
    best = json.loads((out / "best" / "metrics.json").read_text())
    assert (best["step"], best["metric"], best["value"]) == (4, "reconstruction_mse", 1.0)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-6"]  # best/ is not a checkpoint
    saved = pipeline_weights(out / "best")
    assert all(torch.equal(saved[k], v) for k, v in seen[4].items())  # the EMA decoder of step 4
    assert isinstance(AsIntroVAEPipeline.from_pretrained(out / "best"), AsIntroVAEPipeline)
    assert [r["best"]["updated"] for r in _records(out)] == [True, True, False]

    # resumed: step 8 (1.5) is worse than the best read back (1.0, step 4), step 10 (0.5) better
    reset_accelerate()
    train(parse_args(common + ["--max_train_steps", "8", "--resume_from_checkpoint", "latest"]))
    assert json.loads((out / "best" / "metrics.json").read_text())["step"] == 4
    reset_accelerate()
    train(parse_args(common + ["--max_train_steps", "10", "--resume_from_checkpoint", "latest"]))
    assert json.loads((out / "best" / "metrics.json").read_text())["step"] == 10
    assert [r["step"] for r in _records(out)] == [2, 4, 6, 8, 10]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-10"]
    assert not list(out.glob(".best*"))


def test_a_resume_drops_later_records_and_never_repeats_a_step(tmp_path):
    log = tmp_path / "validation.jsonl"
    log.write_text("".join(json.dumps({"step": s, "metrics": {}}) + "\n" for s in (2, 4, 4, 6)) + '{"step": 8, "me')
    assert validation.start_validation_log(str(tmp_path), 4) == {2, 4}
    assert [r["step"] for r in validation.read_validation_log(str(tmp_path))] == [2, 4]
    assert validation.start_validation_log(str(tmp_path), 0) == set()  # a new run starts the log anew


def _best_with(tmp_path, step):
    keeper = validation.BestPipeline(str(tmp_path), "neg_elbo", 0)

    def save(folder):
        import os

        os.makedirs(folder)
        (tmp_path / folder / "weights").write_text(str(step))

    keeper.save(step, {"neg_elbo": float(step)}, save)
    return keeper


def test_best_is_written_atomically(tmp_path):
    keeper = _best_with(tmp_path, 5)

    def killed(folder):  # a kill while the new best is written leaves the previous one
        (tmp_path / folder).mkdir()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        keeper.save(6, {"neg_elbo": 1.0}, killed)
    validation.recover_best(str(tmp_path))
    assert (tmp_path / "best" / "weights").read_text() == "5" and not (tmp_path / ".best.partial").exists()
    # killed between the two renames: the previous best/ goes back
    (tmp_path / "best").rename(tmp_path / ".best.replaced")
    validation.recover_best(str(tmp_path))
    assert json.loads((tmp_path / "best" / "metrics.json").read_text())["step"] == 5
    assert validation.BestPipeline(str(tmp_path), "neg_elbo", 3).value == 5.0  # read back on resume
    assert validation.BestPipeline(str(tmp_path), "reconstruction_mse", 3).value is None  # another metric


def _folder_of_images(folder, count):
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")


def _pixels(dataset, column):
    return {np.asarray(image).tobytes() for image in dataset[column]}


def test_validation_split_holds_out_rows_of_a_folder_and_of_a_saved_dataset(tmp_path):
    from asintrovae_hf.data import load_digits_dataset

    _folder_of_images(tmp_path / "images", 40)
    load_digits_dataset().select(range(40)).save_to_disk(str(tmp_path / "saved"))
    for source in (["--train_data_dir", str(tmp_path / "images")], ["--dataset_name", str(tmp_path / "saved")]):
        config = parse_args(QUICK + source + ["--output_dir", str(tmp_path / "out"), "--validation_steps", "2",
                                              "--validation_split", "0.2", "--max_train_samples", "100"])
        train_part, column, held_out = load_training_data(config.data, 0.2)
        assert (len(train_part), len(held_out)) == (32, 8)
        assert not _pixels(train_part, column) & _pixels(held_out, column)
        again = load_training_data(config.data, 0.2)[2]  # the same rows every time
        assert _pixels(again, column) == _pixels(held_out, column)
        run = setup(config)
        assert run.data.num_images == 32 and len(run.validation.images) == 8 and run.validation.classifier is None
        reset_accelerate()


def test_validation_on_a_folder_records_fit_metrics(tmp_path):
    _folder_of_images(tmp_path / "images", 40)
    _folder_of_images(tmp_path / "heldout", 6)
    out = tmp_path / "run"
    train(parse_args(QUICK + ["--train_data_dir", str(tmp_path / "images"), "--output_dir", str(out),
                              "--max_train_steps", "2", "--validation_steps", "2", "--validation_data_dir",
                              str(tmp_path / "heldout"), "--keep_best_by", "neg_elbo"]))
    (record,) = _records(out)
    assert set(record["metrics"]) == {"reconstruction_mse", "neg_elbo", "neg_elbo_bits_per_dim"}
    assert record["num_images"] == 6 and (out / "best" / "model_index.json").exists()


@pytest.mark.parametrize("argv, message", [
    (["--validation_steps", "-1"], "--validation_steps must be >= 0, got -1"),
    (["--keep_best_by", "neg_elbo"], "--keep_best_by needs --validation_steps N > 0"),
    (["--validation_steps", "5", "--validation_split", "0.1"],
     "--validation_split expected unset with the built-in --dataset_name digits"),
    (["--train_data_dir", "x", "--validation_steps", "5", "--validation_split", "1"],
     "--validation_split expected a fraction in (0, 1), got 1.0"),
    (["--train_data_dir", "x", "--validation_steps", "5"],
     "--validation_steps needs held-out images with --train_data_dir x: expected --validation_split FRACTION"),
    (["--train_data_dir", "x", "--validation_steps", "5", "--validation_split", "0.1", "--keep_best_by", "fd"],
     "--keep_best_by fd needs a built-in dataset"),
    (["--train_data_dir", "x", "--validation_split", "0.1"], "--validation_split needs --validation_steps N > 0"),
    (["--keep_best_by", "loss"], "invalid choice: 'loss'"),
])
def test_bad_combinations_are_refused_in_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        parse_args(TINY + argv)
    assert info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("asintrovae-train: error: ") and message in last, last


def test_a_config_file_round_trips_the_validation_options(tmp_path, capsys):
    (tmp_path / "run.yaml").write_text("validation_steps: 50\nkeep_best_by: fd\nnum_validation_images: 200\n")
    config = parse_args(["--config", str(tmp_path / "run.yaml"), "--output_dir", str(tmp_path / "out")])
    assert (config.validation.validation_steps, config.validation.keep_best_by) == (50, "fd")
    from asintrovae_hf.training.config_files import write_config

    write_config(config.options(), str(tmp_path / "resolved.yaml"))
    resolved = yaml.safe_load((tmp_path / "resolved.yaml").read_text())
    assert {k: resolved[k] for k in ("validation_steps", "validation_split", "validation_data_dir",
                                     "num_validation_images", "keep_best_by")} == {
        "validation_steps": 50, "validation_split": None, "validation_data_dir": None,
        "num_validation_images": 200, "keep_best_by": "fd"}
    assert parse_args(["--config", str(tmp_path / "resolved.yaml")]) == config
    (tmp_path / "bad.yaml").write_text("keep_best_by: fd\n")
    with pytest.raises(SystemExit):
        parse_args(["--config", str(tmp_path / "bad.yaml")])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.yaml: key 'keep_best_by': needs --validation_steps N > 0" in err


def test_validation_options_are_refused_before_training(tmp_path, capsys):
    _folder_of_images(tmp_path / "images", 40)
    code = main(QUICK + ["--train_data_dir", str(tmp_path / "images"), "--output_dir", str(tmp_path / "out"),
                         "--validation_steps", "2", "--validation_data_dir", str(tmp_path / "missing")])
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the data's progress bars
    assert code == 1 and last.startswith("error: Cannot use --validation_data_dir") and "no such folder" in last


def test_best_is_left_out_of_the_hub_upload(tmp_path):
    from asintrovae_hf.hub import files_to_upload, training_ignore_patterns

    for name in ("model_index.json", "validation.jsonl", "best/model_index.json", "best/metrics.json",
                 ".best.partial/model_index.json", ".best.replaced/metrics.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}")
    assert files_to_upload(str(tmp_path), training_ignore_patterns(str(tmp_path), "logs")) == [
        "model_index.json", "validation.jsonl"]


def test_class_conditional_validation_uses_the_labels(tmp_path):
    out = tmp_path / "run"
    train(parse_args(QUICK + ["--class_column", "label", "--output_dir", str(out), "--max_train_steps", "2",
                              "--validation_steps", "2", "--keep_best_by", "fd"]))
    (record,) = _records(out)
    assert "fd" in record["metrics"] and (out / "best" / "metrics.json").exists()
