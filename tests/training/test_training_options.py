"""Training options end to end: --compile, --channels_last, the Hub upload's file selection, one-line errors."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

import asintrovae_hf.hub as hub
import asintrovae_hf.training.inputs as training_inputs
import asintrovae_hf.training.loop as training
import asintrovae_hf.training.setup as training_setup
from asintrovae_hf import AsIntroVAEPipeline
from asintrovae_hf.training.loop import main, train
from asintrovae_hf.training.args import parse_args
from helpers import TINY, pipeline_weights as saved_weights, reset_accelerate
from helpers import run_training_script as run_script

PIPELINE_FILES = ["README.md", "model_index.json", "train_summary.json", "samples.png", "reconstructions.png",
                  "samples_from_pretrained.png", "encoder/config.json", "encoder/diffusion_pytorch_model.safetensors",
                  "decoder/config.json", "decoder/diffusion_pytorch_model.safetensors", "pipeline_asintrovae.py",
                  "encoder/modeling_asintrovae_encoder.py", "decoder/modeling_asintrovae_decoder.py"]


def checkpoint_weights(checkpoint):
    return saved_weights(checkpoint)  # a checkpoint holds encoder/ and decoder/ in save_pretrained format


pytestmark = pytest.mark.usefixtures("fresh_accelerate")


def assert_plain_keys(weights):
    bad = [k for k in weights if "_orig_mod." in k or "module." in k]
    assert not bad, bad


def assert_weights_close(a, b, **tolerance):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k].float(), b[k].float(), msg=k, **tolerance)


def assert_adam_weights_close(a, b, steps, lr=2e-4, tolerance=1e-5, share=1e-3):
    """
    Weights after `steps` Adam steps from the same start, computed two ways (compiled and eager): all but a `share` of
    the values agree to `tolerance`, and every value to within what `steps` opposite updates can put between two runs
    (`2 x steps x lr`). Adam divides each gradient by its own running scale, so a gradient near zero whose last bits
    differ moves its weight by about `lr` one way or the other: per-value closeness alone would test the rounding
    (it failed on data that had passed, the built-in digits' train split instead of all 1,797 images).
    """
    assert a.keys() == b.keys()
    values = far = 0
    for k in a:
        diff = (a[k].float() - b[k].float()).abs()
        assert diff.max() <= 2 * steps * lr * 1.01, (k, diff.max().item())
        values, far = values + diff.numel(), far + int((diff > tolerance + tolerance * b[k].float().abs()).sum())
    assert far <= share * values, f"{far} of {values} values differ by more than {tolerance}"


def spy_on_train_step(monkeypatch):
    """Record, at each step, the wrappers of the networks and the memory format of the batch and a conv weight."""
    real_step, seen = training.train_step, []

    def spy(objective, encoder, decoder, opt_e, opt_d, x, *args, **kwargs):
        conv = next(p for p in encoder.parameters() if p.ndim == 4 and p.shape[1] > 1 and p.shape[2] > 1)
        seen.append({
            "compiled": training_setup.is_compiled_module(encoder) and training_setup.is_compiled_module(decoder),
            "x_channels_last": x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous(),
            "weight_channels_last": conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous(),
        })
        return real_step(objective, encoder, decoder, opt_e, opt_d, x, *args, **kwargs)

    monkeypatch.setattr(training, "train_step", spy)
    return seen


# ---- --compile ------------------------------------------------------------------------------------------------


@pytest.mark.slow  # TorchInductor builds ~40 C++ kernels on CPU: 30-60 s here with a cold cache, ~5 s warm
@pytest.mark.usefixtures("torch_compile_environment")
@pytest.mark.skipif(bool(os.environ.get("ATEN_CPU_CAPABILITY")),
                    reason="TorchInductor builds kernels for the CPU's own instruction set; with ATEN_CPU_CAPABILITY "
                           "forcing a lower one (default, avx2 on an AVX-512 CPU) torch's compiled kernels fail to "
                           "build or run (torch 2.13), whatever this package does")
def test_compile_trains_checkpoints_resumes_and_saves_plain_weights(tmp_path, monkeypatch):
    common = TINY + ["--save_images_steps", "1000", "--logging_steps", "1", "--checkpointing_steps", "1"]
    eager = tmp_path / "eager"
    train(parse_args(common + ["--output_dir", str(eager), "--max_train_steps", "3"]))

    seen = spy_on_train_step(monkeypatch)
    out = tmp_path / "compiled"
    reset_accelerate()
    # the gradient parts backpropagate the retained encoder graph twice more (the weights are unchanged by it);
    # torch 2.14's compiled graphs refused that before `train_step` turned AOTAutograd's donated buffers off
    first = train(parse_args(common + ["--output_dir", str(out), "--max_train_steps", "3", "--compile",
                                       "--log_gradient_norms_steps", "1"]))
    assert first["global_step"] == 3 and len(seen) == 3 and all(s["compiled"] for s in seen)
    norms = [json.loads(line) for line in (out / "gradient_norms.jsonl").read_text().splitlines()]
    assert [n["step"] for n in norms] and all(n["grad_norm_adversarial"] >= 0 and n["grad_norm_vae"] > 0
                                              for n in norms)
    assert_plain_keys(checkpoint_weights(out / "checkpoint-2"))
    assert_adam_weights_close(saved_weights(out), saved_weights(eager), steps=3)

    # as if the run had stopped after step 2: resume it, compiled again
    shutil.rmtree(out / "checkpoint-3")
    reset_accelerate()
    seen.clear()
    resumed = train(parse_args(common + ["--output_dir", str(out), "--max_train_steps", "3", "--compile",
                                         "--log_gradient_norms_steps", "1", "--resume_from_checkpoint", "latest"]))
    assert resumed["global_step"] == 3 and len(seen) == 1 and seen[0]["compiled"]
    assert all(v == v for v in resumed["final_losses"].values())

    # the pipeline loads, with the module's own parameter names, and matches eager training (same seed, same steps)
    pipe = AsIntroVAEPipeline.from_pretrained(out)
    assert type(pipe.encoder).__name__ == "AsIntroVAEEncoder" and type(pipe.decoder).__name__ == "AsIntroVAEDecoder"
    weights = saved_weights(out)
    assert_plain_keys(weights)
    assert set(pipe.encoder.state_dict()) == {k[len("encoder."):] for k in weights if k.startswith("encoder.")}
    assert_adam_weights_close(weights, saved_weights(eager), steps=3)
    assert_adam_weights_close(checkpoint_weights(out / "checkpoint-3"), checkpoint_weights(eager / "checkpoint-3"),
                              steps=3)
    torch._dynamo.reset()


def test_compile_without_a_cxx_compiler_fails_clearly(tmp_path):
    pytest.importorskip("torch._inductor.cpp_builder")
    from torch._inductor import config as inductor_config

    # (the compiler search is cached per list of candidates: a new list is searched afresh). torch's own `patch`
    # restores the option; monkeypatch's undo left torch's config without it, failing later compile tests.
    with inductor_config.patch({"cpp.cxx": (None, str(tmp_path / "no-such-g++"))}):
        with pytest.raises(training_setup.UsageError, match="C\\+\\+ compiler") as info:
            train(parse_args(TINY + ["--output_dir", str(tmp_path / "x"), "--max_train_steps", "1", "--compile"]))
    assert "--compile" in str(info.value)
    assert not (tmp_path / "x" / "checkpoint-1").exists()


# ---- --channels_last ------------------------------------------------------------------------------------------


def test_channels_last_matches_the_default_layout_and_resumes(tmp_path, monkeypatch):
    common = TINY + ["--save_images_steps", "1000", "--logging_steps", "1", "--checkpointing_steps", "2"]
    default = tmp_path / "default"
    train(parse_args(common + ["--output_dir", str(default), "--max_train_steps", "3", "--no-channels_last"]))

    seen = spy_on_train_step(monkeypatch)
    out = tmp_path / "channels_last"
    reset_accelerate()
    train(parse_args(common + ["--output_dir", str(out), "--max_train_steps", "3", "--channels_last"]))
    assert len(seen) == 3 and all(s["weight_channels_last"] for s in seen)
    # (a one-channel batch is contiguous in both layouts; the weights are what `--channels_last` converts)
    assert_adam_weights_close(saved_weights(out), saved_weights(default), steps=3)

    # as if the run had stopped after step 2: resume it
    shutil.rmtree(out / "checkpoint-3")
    reset_accelerate()
    summary = train(parse_args(common + ["--output_dir", str(out), "--max_train_steps", "3", "--channels_last",
                                         "--resume_from_checkpoint", "latest"]))
    assert summary["global_step"] == 3 and all(s["weight_channels_last"] for s in seen)

    # same seed, same steps: the same weights up to float rounding (other kernels, other summation order)
    assert_adam_weights_close(checkpoint_weights(out / "checkpoint-2"), checkpoint_weights(default / "checkpoint-2"),
                              steps=2)
    assert_adam_weights_close(saved_weights(out), saved_weights(default), steps=3)
    assert_plain_keys(saved_weights(out))
    AsIntroVAEPipeline.from_pretrained(out)


def test_channels_last_rgb_batches_are_channels_last(tmp_path, monkeypatch):
    from PIL import Image
    import numpy as np

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    seen = spy_on_train_step(monkeypatch)
    train(parse_args(TINY + ["--train_data_dir", str(folder), "--output_dir", str(tmp_path / "rgb"),
                             "--max_train_steps", "1", "--train_batch_size", "8", "--channels_last"]))
    assert seen == [{"compiled": False, "x_channels_last": True, "weight_channels_last": True}]


def test_channels_last_is_the_cpu_default_and_can_be_turned_off(tmp_path, monkeypatch):
    seen = spy_on_train_step(monkeypatch)
    train(parse_args(TINY + ["--output_dir", str(tmp_path / "a"), "--max_train_steps", "1"]))
    reset_accelerate()
    train(parse_args(TINY + ["--output_dir", str(tmp_path / "b"), "--max_train_steps", "1", "--no-channels_last"]))
    assert [s["weight_channels_last"] for s in seen] == [True, False]


# ---- Hub upload -----------------------------------------------------------------------------------------------


def test_push_to_hub_leaves_out_intermediate_grids_and_a_custom_logging_dir(tmp_path, monkeypatch):
    calls = {}

    def fake_upload_folder(*, repo_id, folder_path, ignore_patterns=None, **kwargs):
        from huggingface_hub.utils import filter_repo_objects

        files = sorted(p.relative_to(folder_path).as_posix() for p in Path(folder_path).rglob("*") if p.is_file())
        calls["all"] = files
        calls["upload"] = sorted(filter_repo_objects(files, ignore_patterns=ignore_patterns))
        return "commit"

    monkeypatch.setattr(hub, "create_repo", lambda repo_id, **kwargs: f"https://huggingface.co/{repo_id}")
    monkeypatch.setattr(hub, "upload_folder", fake_upload_folder)
    out = tmp_path / "push"
    (out / "tb" / "run[1]").mkdir(parents=True)
    (out / "tb" / "run[1]" / "notes.txt").write_text("a file of the logging folder that is not an event file")
    train(parse_args(TINY + ["--output_dir", str(out), "--max_train_steps", "2", "--checkpointing_steps", "1",
                             "--save_images_steps", "1", "--report_to", "tensorboard", "--logging_dir", "tb/run[1]",
                             "--push_to_hub", "--hub_model_id", "someone/digits-vae"]))
    # the folder holds what must stay local...
    assert {"samples-000001.png", "reconstructions-000002.png"} <= set(calls["all"])
    assert any(f.startswith("tb/run[1]/") and "tfevents" in f for f in calls["all"])
    assert not (out / "logs").exists()
    # ...and exactly the pipeline, the card, the summary and the final grids are uploaded
    assert calls["upload"] == sorted(PIPELINE_FILES)


def test_training_ignore_patterns(tmp_path):
    out = tmp_path / "out"
    for name in ["samples.png", "samples-000010.png", "reconstructions-000010.png", "reconstructions.png",
                 "samples_from_pretrained.png", "tb/a/events.out.tfevents.1", "tb/notes.txt",
                 "runs/x/events.out.tfevents.2",
                 "tb2/keep.txt", "checkpoint-3/model.safetensors"]:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("x")
    keep = ["reconstructions.png", "samples.png", "samples_from_pretrained.png", "tb2/keep.txt"]
    assert hub.files_to_upload(str(out), hub.training_ignore_patterns(str(out), "tb")) == keep
    # a logging folder outside the output folder adds nothing
    assert hub.training_ignore_patterns(str(out), str(tmp_path / "elsewhere")) == list(hub.HUB_IGNORE_PATTERNS)
    assert hub.training_ignore_patterns(str(out), "../sibling") == list(hub.HUB_IGNORE_PATTERNS)
    assert hub.training_ignore_patterns(str(out), ".") == list(hub.HUB_IGNORE_PATTERNS)
    assert hub.training_ignore_patterns(str(out), str(out / "tb")) == [*hub.HUB_IGNORE_PATTERNS, "tb", "tb/**"]


# ---- one-line errors, and only for expected failures ------------------------------------------------------------


def test_unreachable_hub_dataset_is_a_one_line_error(tmp_path):
    result = run_script(TINY + ["--output_dir", str(tmp_path / "o"), "--max_train_steps", "1",
                                "--dataset_name", "someone/no-such-dataset"])
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "someone/no-such-dataset" in error[0] and "network" in error[0]


def test_expected_failures_print_one_line(tmp_path, monkeypatch, capsys):
    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'someone/data' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(training_inputs, "load_image_dataset", unreachable)
    assert main(TINY + ["--output_dir", str(tmp_path / "a"), "--dataset_name", "someone/data"]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Couldn't reach 'someone/data'" in errors[0] and "Traceback" not in err

    monkeypatch.undo()
    reset_accelerate()
    assert main(TINY + ["--output_dir", str(tmp_path / "b"), "--train_data_dir", str(tmp_path / "missing")]) == 1
    assert "not found" in capsys.readouterr().err

    reset_accelerate()
    assert main(TINY + ["--output_dir", str(tmp_path / "c"), "--max_train_samples", "8"]) == 1
    assert "fewer than one batch" in capsys.readouterr().err


def test_programming_errors_keep_their_traceback(tmp_path, monkeypatch):
    def broken_step(*args, **kwargs):
        raise ValueError("a bug in the training step")

    monkeypatch.setattr(training, "train_step", broken_step)
    with pytest.raises(ValueError, match="a bug in the training step"):
        main(TINY + ["--output_dir", str(tmp_path / "x"), "--max_train_steps", "1"])


# ---- --log_gradient_norms_steps ---------------------------------------------------------------------------------


def test_gradient_norms_are_logged_on_adversarial_steps_without_changing_the_run(tmp_path):
    common = TINY + ["--max_train_steps", "6", "--num_vae_steps", "2", "--checkpointing_steps", "100",
                     "--save_images_steps", "100", "--no-use_ema"]
    train(parse_args(common + ["--output_dir", str(tmp_path / "measured"), "--log_gradient_norms_steps", "2"]))
    reset_accelerate()
    train(parse_args(common + ["--output_dir", str(tmp_path / "plain")]))
    lines = [json.loads(line) for line in (tmp_path / "measured" / "gradient_norms.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [2, 4]  # steps 0 and 1 are the plain-VAE warm-up
    assert all(line["grad_norm_adversarial"] > 0 and line["grad_norm_vae"] > 0 for line in lines)
    assert not (tmp_path / "plain" / "gradient_norms.jsonl").exists()
    assert_weights_close(saved_weights(tmp_path / "measured"), saved_weights(tmp_path / "plain"), rtol=0, atol=0)
