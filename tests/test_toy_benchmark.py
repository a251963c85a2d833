"""The 2D toy benchmark: a short training run beats an untrained model, and the script's outputs."""

import importlib.util
import json
from pathlib import Path

import torch

from asintrovae_hf.metrics import histogram_kl_jsd
from asintrovae_hf.objectives import ObjectiveConfig
from asintrovae_hf.toy_data import sample_toy_data, toy_eval_range
from asintrovae_hf.toy_hparams import toy_hyperparameters
from asintrovae_hf.vector_training import sample_points, train_vector_model

ROOT = Path(__file__).resolve().parents[1]


def load_toy2d():
    spec = importlib.util.spec_from_file_location("toy2d", ROOT / "scripts" / "toy2d.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def jsd_of(decoder, seed=0):
    gen = torch.Generator().manual_seed(seed)
    real = sample_toy_data("8gaussians", 5000, generator=gen).numpy()
    fake = sample_points(decoder, 5000, generator=gen).numpy()
    return histogram_kl_jsd(real, fake, bins=100, range_=toy_eval_range("8gaussians"))[1]


def test_short_training_beats_an_untrained_model():
    hp = toy_hyperparameters("8gaussians", "soft-introvae")
    lr = hp.pop("learning_rate")
    config = ObjectiveConfig(objective="soft-introvae", **hp)
    sampler = lambda n, g: sample_toy_data("8gaussians", n, generator=g)  # noqa: E731
    _, untrained, _ = train_vector_model(sampler, config, num_iter=1, num_vae_steps=1, batch_size=8,
                                         hidden_dims=(64, 64), learning_rate=0.0)
    _, trained, history = train_vector_model(sampler, config, num_iter=400, num_vae_steps=150, batch_size=256,
                                             hidden_dims=(64, 64), learning_rate=lr * 5, log_every=100)
    assert [h["iteration"] for h in history] == [100, 200, 300, 400]
    assert "exp_elbo_rec" in history[-1] and "loss" in history[0]  # warm-up then introspective terms
    assert jsd_of(trained) < 0.9 * jsd_of(untrained)  # measured: 86 vs 106


def test_toy2d_script_outputs(tmp_path, capsys):
    toy2d = load_toy2d()
    out = tmp_path / "toy"
    assert toy2d.main(["--dataset", "8gaussians", "--methods", "vae", "as-introvae", "--seeds", "0", "1",
                       "--num_iter", "6", "--batch_size", "64", "--gnelbo_grid", "16", "--output_dir", str(out),
                       "--encoder_reduction", "mean"]) == 0
    lines = [json.loads(l) for l in capsys.readouterr().out.splitlines() if l.startswith("{")]
    assert len(lines) == 4
    assert set(lines[0]) == {"dataset", "method", "seed", "num_iter", "kl", "jsd", "gnelbo", "seconds"}
    assert (out / "8gaussians.png").exists() and (out / "runs.jsonl").exists()
    table = (out / "results.md").read_text()
    assert "| 8gaussians | vae | 2 |" in table and "| 8gaussians | as-introvae | 2 |" in table
    # the table can be rebuilt from the JSON lines alone
    assert toy2d.main(["--summarize", str(out / "runs.jsonl"), "--output_dir", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "results.md").read_text().splitlines()[2:] == table.splitlines()[2:]


def test_toy2d_flags_override_the_reference_hyperparameters():
    toy2d = load_toy2d()
    args = toy2d.parse_args(["--num_iter", "2", "--batch_size", "16", "--gnelbo_grid", "8", "--beta_neg", "3.5",
                             "--encoder_reduction", "mean", "--no-squash", "--schedule", "linear"])
    _, (_, _, _, config, _) = toy2d.run_one("8gaussians", "as-introvae", 0, args)
    assert (config.beta_neg, config.encoder_reduction, config.squash, config.schedule) == (3.5, "mean", False, "linear")
    assert config.beta_kl == 0.3 and config.beta_rec == 0.2
