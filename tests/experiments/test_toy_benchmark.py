"""The 2D toy benchmark: a short training run beats an untrained model, the official loop's schedule, and the
script's outputs, resume and grids."""

import json

import pytest
import torch

from asintrovae_hf.experiments.toy import sample_points, sample_toy_data, toy_eval_range, toy_lr_milestones
from asintrovae_hf.experiments.toy import toy_objective_defaults, train_vector_model
from asintrovae_hf.experiments.toy.comparison import record_key
from asintrovae_hf.experiments.toy.data import toy_modes
from asintrovae_hf.experiments.toy.metrics import histogram_kl_jsd, mode_coverage
from asintrovae_hf.objectives.config import ObjectiveConfig
from asintrovae_hf.training.checkpointing import TrainingState, list_checkpoints

from helpers import load_script


def load_toy2d():
    return load_script("toy2d")


def jsd_of(decoder, seed=0):
    gen = torch.Generator().manual_seed(seed)
    real = sample_toy_data("8gaussians", 5000, generator=gen).numpy()
    fake = sample_points(decoder, 5000, generator=gen).numpy()
    return histogram_kl_jsd(real, fake, bins=100, range_=toy_eval_range("8gaussians"))[1]


def test_short_training_beats_an_untrained_model():
    hp = toy_objective_defaults("8gaussians", "soft-introvae")
    sampler = lambda n, g: sample_toy_data("8gaussians", n, generator=g)  # noqa: E731
    untrained_config = ObjectiveConfig(objective="soft-introvae", **{**hp, "num_vae_steps": 1})
    _, untrained, _ = train_vector_model(sampler, untrained_config, num_iter=1, batch_size=8,
                                         hidden_dims=(64, 64), learning_rate=0.0)
    config = ObjectiveConfig(objective="soft-introvae", **{**hp, "num_vae_steps": 150})
    _, trained, history = train_vector_model(sampler, config, num_iter=400, batch_size=256, hidden_dims=(64, 64),
                                             learning_rate=2e-4 * 5, lr_milestones=(), log_every=100)
    assert [h["iteration"] for h in history] == [100, 200, 300, 400]
    assert "exp_elbo_rec" in history[-1] and "loss" in history[0]  # warm-up then introspective terms
    assert jsd_of(trained) < 0.9 * jsd_of(untrained)  # measured: 86 vs 106


def test_official_schedule_defaults():
    """The official 2D loop: 2,000 plain-VAE iterations, lr x0.1 at 10,000 and 15,000 of 30,000."""
    hp = toy_objective_defaults("8gaussians", "as-introvae")
    assert hp["num_vae_steps"] == 2000 and (hp["beta_kl"], hp["beta_rec"], hp["beta_neg"]) == (0.3, 0.2, 0.9)
    assert toy_lr_milestones(30000) == (10000, 15000)
    assert toy_lr_milestones(3000) == (1000, 1500)
    config = ObjectiveConfig(objective="as-introvae", **hp)
    assert config.phase(1999, 30000).vae and not config.phase(2000, 30000).vae
    assert config.phase(2000, 30000).c == 0.0  # c counts the adversarial iterations only


def test_learning_rate_decays_at_the_milestones():
    config = ObjectiveConfig(objective="vae", num_vae_steps=0)
    sampler = lambda n, g: sample_toy_data("8gaussians", n, generator=g)  # noqa: E731
    _, _, history = train_vector_model(sampler, config, num_iter=6, batch_size=8, hidden_dims=(8,),
                                       learning_rate=1.0, lr_milestones=(2, 4), lr_gamma=0.1, log_every=1)
    assert [h["lr"] for h in history] == pytest.approx([1.0, 0.1, 0.1, 0.01, 0.01, 0.01])


def test_toy2d_script_outputs(tmp_path, capsys):
    toy2d = load_toy2d()
    out = tmp_path / "toy"
    assert toy2d.main(["--dataset", "8gaussians", "--methods", "vae", "as-introvae", "--seeds", "0", "1",
                       "--num_iter", "6", "--num_vae_steps", "2", "--batch_size", "64", "--gnelbo_grid", "16",
                       "--output_dir", str(out), "--encoder_reduction", "mean"]) == 0
    lines = [json.loads(l) for l in capsys.readouterr().out.splitlines() if l.startswith("{")]
    assert len(lines) == 4
    assert set(lines[0]) >= {"dataset", "method", "seed", "num_iter", "kl", "jsd", "gnelbo", "seconds"}
    assert [line["devices"] for line in lines] == [["cpu"]] * 4
    assert (out / "8gaussians.png").exists() and (out / "runs.jsonl").exists()
    assert len(list((out / "models").glob("*/encoder"))) == 4
    assert not list((out / "models").glob("*/checkpoint-*"))  # removed once a run is recorded
    table = (out / "results.md").read_text()
    assert "| 8gaussians | vae | 4 x 256 | 6 | 0, 1 |" in table
    assert "| 8gaussians | as-introvae | 4 x 256 | 6 | 0, 1 |" in table
    assert "modes covered" in table and {"modes_covered", "high_quality", "hidden_dims"} <= set(lines[0])
    # the table can be rebuilt from the JSON lines alone
    assert toy2d.main(["--summarize", str(out / "runs.jsonl"), "--output_dir", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "results.md").read_text().splitlines()[2:] == table.splitlines()[2:]


def test_toy2d_resumes_an_interrupted_batch(tmp_path, capsys):
    """Runs already recorded in runs.jsonl are skipped; a torn last line is redone."""
    toy2d = load_toy2d()
    out = tmp_path / "toy"
    common = ["--methods", "vae", "--num_iter", "3", "--num_vae_steps", "1", "--batch_size", "16",
              "--gnelbo_grid", "8", "--output_dir", str(out)]
    assert toy2d.main(common + ["--seeds", "0"]) == 0
    first = (out / "runs.jsonl").read_text()
    with open(out / "runs.jsonl", "a") as f:
        f.write('{"dataset": "8gaussians", "torn')  # a run killed while writing its line
    capsys.readouterr()
    assert toy2d.main(common + ["--seeds", "0", "1"]) == 0
    printed = [json.loads(l) for l in capsys.readouterr().out.splitlines() if l.startswith("{")]
    assert [r["seed"] for r in printed] == [1]  # seed 0 was not run again
    assert (out / "runs.jsonl").read_text().startswith(first)


def test_toy2d_flags_override_the_reference_hyperparameters():
    toy2d = load_toy2d()
    args = toy2d.parse_args(["--methods", "as-introvae", "--num_iter", "2", "--beta_neg", "3.5",
                             "--encoder_reduction", "mean", "--squash", "--schedule", "tanh",
                             "--include_constant", "--no-detach_rec_target", "--seeds", "0"])
    (run,) = toy2d.plan_runs(args)
    config = run.config
    assert (config.beta_neg, config.encoder_reduction, config.squash, config.schedule) == (3.5, "mean", True, "tanh")
    assert config.include_constant and not config.detach_rec_target
    assert config.beta_kl == 0.3 and config.beta_rec == 0.2 and config.num_vae_steps == 2000


def test_toy2d_presets_and_grid():
    toy2d = load_toy2d()
    args = toy2d.parse_args(["--methods", "soft-introvae", "as-introvae:reference", "--seeds", "0",
                             "--grid", "beta_kl=0.1,0.3", "--grid", "beta_neg=0.5,1.5,4.5"])
    runs = toy2d.plan_runs(args)
    assert len(runs) == 2 * 2 * 3
    reference = [r for r in runs if r.name == "as-introvae (reference)"]
    assert all(not r.config.detach_rec_target and r.config.squash for r in reference)
    assert {(r.config.beta_kl, r.config.beta_neg) for r in reference} == {(a, b) for a in (0.1, 0.3)
                                                                         for b in (0.5, 1.5, 4.5)}
    assert all(r.overrides == {"beta_kl": r.config.beta_kl, "beta_neg": r.config.beta_neg} for r in runs)
    with pytest.raises(SystemExit):
        toy2d.parse_args(["--methods", "as-introvae:best"])
    with pytest.raises(SystemExit):
        toy2d.parse_args(["--grid", "beta_kl=high"])


class _Interrupt(Exception):
    pass


def _short_toy_run(checkpoint_dir=None, stop_at=None):
    config = ObjectiveConfig(objective="as-introvae", num_vae_steps=10,
                             **{k: v for k, v in toy_objective_defaults("8gaussians", "as-introvae").items()
                                if k != "num_vae_steps"})
    sampler = lambda n, g: sample_toy_data("8gaussians", n, generator=g)  # noqa: E731

    def callback(iteration, terms):
        if iteration == stop_at:
            raise _Interrupt

    return train_vector_model(sampler, config, num_iter=40, batch_size=16, hidden_dims=(16,), seed=3,
                              lr_milestones=(30,), log_every=5, callback=callback,
                              checkpoint_dir=checkpoint_dir, checkpoint_every=10)


def test_a_killed_toy_run_resumes_exactly_from_its_checkpoint(tmp_path):
    """Weights, optimizers, the learning-rate decay (after the resume point) and the data/noise generator all come
    back: the resumed run ends bit-equal to an uninterrupted one, with the same logged terms."""
    encoder, decoder, history = _short_toy_run()
    path = tmp_path / "run"
    with pytest.raises(_Interrupt):
        _short_toy_run(str(path), stop_at=25)  # the last checkpoint is at iteration 20, the only one kept
    assert list_checkpoints(str(path)) == [str(path / "checkpoint-20")]
    assert TrainingState.load(str(path / "checkpoint-20")).global_step == 20
    assert {"encoder", "decoder", "training_state.json", "optimizer.bin", "scheduler_1.bin",
            "random_states_0.pkl"} <= {p.name for p in (path / "checkpoint-20").iterdir()}  # the image format
    encoder2, decoder2, history2 = _short_toy_run(str(path))
    for a, b in ((encoder, encoder2), (decoder, decoder2)):
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(x, y), name
    assert [{k: v for k, v in h.items() if k not in ("seconds", "devices")} for h in history2] == history
    assert history2[-1]["seconds"] > 0 and not list(path.glob("*.partial"))
    assert history2[-1]["devices"] == ["cpu"]


def test_a_toy_checkpoint_from_another_device_resumes_and_both_devices_are_recorded(tmp_path):
    """The checkpoint holds the devices it trained on (a GPU's, here written into its log), and a run resumed on
    the CPU lists both and ends as the uninterrupted CPU run does: the data and noise are drawn on the CPU either
    way."""
    encoder, _, history = _short_toy_run()
    with pytest.raises(_Interrupt):
        _short_toy_run(str(tmp_path), stop_at=25)
    log_file = tmp_path / "checkpoint-20" / "training_log.json"
    log = json.loads(log_file.read_text())
    assert log["devices"] == ["cpu"]
    log_file.write_text(json.dumps({**log, "devices": ["cuda:0"]}))
    encoder2, _, history2 = _short_toy_run(str(tmp_path))
    assert history2[-1]["devices"] == ["cuda:0", "cpu"]
    for (name, x), (_, y) in zip(encoder.state_dict().items(), encoder2.state_dict().items()):
        assert torch.equal(x, y), name


def test_a_full_disk_while_a_toy_checkpoint_is_written_keeps_the_previous_one(tmp_path, monkeypatch):
    """The toy writes through the image training's atomic write: a failed write is one line naming the checkpoint,
    the previous checkpoint stays whole and no `.partial` is left, and the same call then resumes from it."""
    import errno

    from asintrovae_hf.experiments.toy import vector_checkpoints

    encoder, _, history = _short_toy_run()
    save_networks, calls = vector_checkpoints.save_networks, []

    def fill_the_disk_at_the_second_write(folder, networks):
        calls.append(folder)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        save_networks(folder, networks)

    monkeypatch.setattr(vector_checkpoints, "save_networks", fill_the_disk_at_the_second_write)
    with pytest.raises(RuntimeError, match="Cannot write checkpoint .*checkpoint-20.*checkpoint-10.* is intact") as err:
        _short_toy_run(str(tmp_path))
    assert "\n" not in str(err.value) and "run the same command again" in str(err.value)
    assert list_checkpoints(str(tmp_path)) == [str(tmp_path / "checkpoint-10")] and not list(tmp_path.glob("*.partial"))
    monkeypatch.setattr(vector_checkpoints, "save_networks", save_networks)
    encoder2, _, history2 = _short_toy_run(str(tmp_path))
    assert [{k: v for k, v in h.items() if k not in ("seconds", "devices")} for h in history2] == history
    for (name, x), (_, y) in zip(encoder.state_dict().items(), encoder2.state_dict().items()):
        assert torch.equal(x, y), name


@pytest.mark.parametrize("device, message", [
    ("gpu", "must name a torch device"),
    ("meta", "must be cpu or a cuda device"),
    pytest.param("cuda", "needs a GPU that this torch", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="this machine has a GPU")),
])
def test_toy2d_refuses_a_device_it_cannot_train_on(device, message, capsys):
    toy2d = load_toy2d()
    with pytest.raises(SystemExit):
        toy2d.parse_args(["--methods", "vae", "--device", device])
    err = capsys.readouterr().err
    assert message in err and device in err


def test_a_damaged_or_foreign_toy_checkpoint_is_refused_by_name(tmp_path):
    import os
    import pickle
    import shutil

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    with pytest.raises(_Interrupt):
        _short_toy_run(str(tmp_path), stop_at=25)
    folder = tmp_path / "checkpoint-20"
    (folder / "random_states_0.pkl").write_bytes(pickle.dumps({"generator": Payload()}, protocol=2))
    with pytest.raises(RuntimeError, match="checkpoint-20.*random_states_0.pkl cannot be loaded safely") as err:
        _short_toy_run(str(tmp_path))
    assert "\n" not in str(err.value) and not (tmp_path / "ran").exists()
    shutil.rmtree(folder)
    with pytest.raises(_Interrupt):
        _short_toy_run(str(tmp_path), stop_at=25)
    state = json.loads((folder / "training_state.json").read_text())
    state["options"]["num_iter"] = 50  # from a longer run
    (folder / "training_state.json").write_text(json.dumps(state))
    with pytest.raises(RuntimeError, match="not a checkpoint of a 40-iteration run"):
        _short_toy_run(str(tmp_path))


def test_default_toy_networks_are_the_official_ones():
    """`SoftIntroVAESimple(n_layers=3, num_hidden=256)`: input Linear, 3 hidden Linear, output Linear, all 256 wide."""
    sampler = lambda n, g: sample_toy_data("8gaussians", n, generator=g)  # noqa: E731
    config = ObjectiveConfig(objective="vae")
    encoder, decoder, _ = train_vector_model(sampler, config, num_iter=1, batch_size=4)
    shapes = lambda m: [(l.in_features, l.out_features) for l in m.modules() if isinstance(l, torch.nn.Linear)]  # noqa
    assert shapes(encoder) == [(2, 256), (256, 256), (256, 256), (256, 256), (256, 4)]
    assert shapes(decoder) == [(2, 256), (256, 256), (256, 256), (256, 256), (256, 2)]
    relus = lambda m: sum(isinstance(l, torch.nn.ReLU) for l in m.modules())  # noqa: E731
    assert relus(encoder) == relus(decoder) == 4


def test_toy2d_hidden_dims_option_is_recorded_and_old_records_keep_their_key(tmp_path):
    toy2d = load_toy2d()
    args = toy2d.parse_args(["--methods", "vae", "--seeds", "0", "--num_iter", "2", "--hidden_dims", "8", "8"])
    (run,) = toy2d.plan_runs(args)
    assert run.hidden_dims == (8, 8) and run.settings()["hidden_dims"] == [8, 8]
    (official,) = toy2d.plan_runs(toy2d.parse_args(["--methods", "vae", "--seeds", "0"]))
    assert official.hidden_dims == (256, 256, 256, 256)
    # a record written before the option existed is the same run as --hidden_dims 256 256 256
    (legacy,) = toy2d.plan_runs(toy2d.parse_args(["--methods", "vae", "--seeds", "0", "--hidden_dims", "256", "256",
                                                  "256"]))
    old_settings = {k: v for k, v in legacy.settings().items() if k != "hidden_dims"}
    assert record_key({"settings": old_settings}) == legacy.key() != official.key()
    with pytest.raises(SystemExit):
        toy2d.parse_args(["--hidden_dims", "0"])


def test_mode_coverage_counts_modes_and_high_quality_points():
    centres, std = toy_modes("8gaussians")
    gen = torch.Generator().manual_seed(0)
    real = sample_toy_data("8gaussians", 5000, generator=gen)
    modes, quality = mode_coverage(real, centres, std)
    assert modes == 8 and quality > 0.98  # 3 std in 2D holds 98.9 % of a Gaussian's mass
    # three modes only, plus 30 % of the points spread between the modes
    three = real[(torch.cdist(real.double(), centres[:3]).min(dim=1).values < 0.1)]
    stray = torch.rand(len(three) * 3 // 7, 2, generator=gen) * 0.4 - 0.2
    modes, quality = mode_coverage(torch.cat([three, stray]), centres, std)
    assert modes == 3 and quality == pytest.approx(0.7, abs=0.02)
    # a mode with fewer than 1 % of the points does not count
    few = torch.cat([centres[:1].float().repeat(995, 1), centres[1:2].float().repeat(5, 1)])
    assert mode_coverage(few, centres, std) == (1, 1.0)
    assert toy_modes("rings") is None
