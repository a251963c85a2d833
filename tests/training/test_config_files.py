"""`asintrovae-train --config`: shipped configurations by name, files overridden by flags, one-line refusals naming
the file and the key, the resolved configuration every run writes replaying the run bit for bit; the schedulers'
options and the trackers of `--report_to`."""

import json
import logging

import pytest
import torch
import yaml

from asintrovae_hf.models.loading import check_sample_size
from asintrovae_hf.training.args import parse_args, scaled_step_rules, scheduler_kwargs
from asintrovae_hf.training.config_files import named_configs
from helpers import TINY, pipeline_weights, reset_accelerate

SHIPPED = {
    # name: (resolution, channels, blocks, latent, batch, lr, beta_kl, beta_rec, beta_neg, epochs or steps)
    "digits": (16, 1, (32, 64), 32, 64, 2e-4, 1.0, 1.0, 64.0, None),
    "mnist": (28, 1, (64, 128), 32, 128, 2e-4, 1.0, 1.0, 256.0, 100),
    "cifar10": (32, 3, (64, 128, 256), 128, 64, 2e-4, 1.0, 1.0, 256.0, 150),
    "celeba128": (128, 3, (64, 128, 256, 512, 512), 256, 32, 2e-4, 0.5, 1.0, 256.0, 150),
    "celeba256": (256, 3, (64, 128, 256, 512, 512, 512), 256, 32, 2e-4, 0.5, 1.0, 1024.0, 150),
    "mnist-5k": (28, 1, (16, 32), 32, 32, 2e-4, 1.0, 1.0, 256.0, None),
}


def test_shipped_configurations_load_by_name_and_name_their_sources():
    assert set(named_configs()) == set(SHIPPED)
    from importlib.resources import files

    for name, (res, ch, blocks, z, batch, lr, kl, rec, neg, epochs) in SHIPPED.items():
        config = parse_args(["--config", name])
        model, objective = config.model, config.objective
        assert (model.resolution, model.num_channels, model.block_out_channels, model.latent_dim) == (res, ch, blocks, z)
        assert (config.data.train_batch_size, config.optimization.learning_rate) == (batch, lr)
        assert (objective.beta_kl, objective.beta_rec, objective.beta_neg) == (kl, rec, neg)
        if epochs:
            assert config.optimization.num_epochs == epochs and objective.schedule == "tanh"  # the authors' preset
        check_sample_size(model.resolution, model.block_out_channels)
        text = (files("asintrovae_hf") / "configs" / f"{name}.yaml").read_text()
        assert "Source" in text or name == "mnist-5k"
        if name not in ("digits", "mnist-5k"):
            assert "LOUEY233/AS-IntroVAE" in text and "taldatech/soft-intro-vae-pytorch" in text
    assert parse_args(["--config", "mnist"]).data.dataset_name == "ylecun/mnist"


def test_the_mnist_5k_configuration_is_the_mnist_table_budget():
    from helpers import load_script

    budget = load_script("heldout_benchmark").BUDGETS["mnist-5k"]
    from_file, from_flags = parse_args(["--config", "mnist-5k"]), parse_args(["--dataset_name", "mnist-5k", *budget])
    assert from_file.data.dataset_name == "mnist-5k" and from_file.optimization.max_train_steps == 1500
    for section in ("data", "model", "objective", "optimization"):
        assert getattr(from_file, section) == getattr(from_flags, section), section


def test_flags_override_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("learning_rate: 1e-3\nbeta_neg: 8\nblock_out_channels: 8,16\nuse_ema: false\n")
    config = parse_args(["--config", str(path), "--beta_neg", "4", "--use_ema"])
    assert config.optimization.learning_rate == 1e-3 and config.model.block_out_channels == (8, 16)
    assert config.objective.beta_neg == 4.0 and config.ema.use_ema
    # the command line's data source replaces the file's other one
    assert parse_args(["--config", "celeba128", "--dataset_name", "x/y"]).data.train_data_dir is None


@pytest.mark.parametrize("name, text, message", [
    ("a.yaml", "beta_negg: 3\n", "a.yaml: unknown key 'beta_negg': expected an option of asintrovae-train --help "
                                 "(did you mean 'beta_neg'?)"),
    ("b.yaml", "train_batch_size: '64'\n", "b.yaml: key 'train_batch_size': expected an integer, got '64' (str)"),
    ("c.yaml", "learning_rate: -1\n", "c.yaml: key 'learning_rate': must be a positive number, got -1.0"),
    ("d.yaml", "beta_neg: -2\n", "d.yaml: key 'beta_neg': must be >= 0; got -2.0"),
    ("e.json", '{"use_ema": "yes"}', "e.json: key 'use_ema': expected true or false, got 'yes' (str)"),
    ("f.yaml", "objective: gan\n", "f.yaml: key 'objective': expected one of as-introvae, soft-introvae, introvae, "
                                   "vae; got 'gan' (str)"),
    ("g.yaml", "latent_dim: null\n", "g.yaml: key 'latent_dim': expected a value, got null"),
    ("h.yaml", "- 1\n", "h.yaml: expected a mapping of option names to values, got list"),
    ("i.yaml", "lr_scheduler: piecewise_constant\n", "i.yaml: key 'lr_scheduler': --lr_step_rules is required"),
    ("j.yaml", "resolution: 18\n", "j.yaml: key 'resolution': 18 cannot be used: "),
    ("k.yaml", "block_out_channels: [8, 16, 32, 64, 128]\n", "k.yaml: key 'block_out_channels': --resolution 16 "
                                                             "cannot be used: "),
])
def test_a_refused_file_is_one_line_naming_the_file_and_the_key(tmp_path, capsys, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--config", str(tmp_path / name)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err, err


def test_an_unknown_name_lists_the_shipped_ones(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--config", "mnistt"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'mnistt'" in err and "celeba128, celeba256, cifar10, digits, mnist, mnist-5k" in err


@pytest.mark.usefixtures("fresh_accelerate")
def test_the_resolved_configuration_replays_the_run_bit_for_bit(tmp_path, monkeypatch):
    from accelerate import Accelerator

    from asintrovae_hf.training.loop import train

    logged = []
    real_log = Accelerator.log
    monkeypatch.setattr(Accelerator, "log", lambda self, values, step=None, **kw: (
        logged.append((step, dict(values))), real_log(self, values, step=step, **kw))[1])
    first = tmp_path / "first"
    train(parse_args(TINY + ["--output_dir", str(first), "--max_train_steps", "3", "--logging_steps", "1",
                             "--lr_scheduler", "cosine_with_restarts", "--lr_num_cycles", "2", "--lr_warmup_steps", "1",
                             "--seed", "3"]))
    first_log, logged[:] = list(logged), []
    resolved = yaml.safe_load((first / "config.yaml").read_text())
    assert resolved["seed"] == 3 and resolved["lr_num_cycles"] == 2 and resolved["block_out_channels"] == [8, 16]
    assert resolved["beta_neg"] == 8.0 and "hub_token" not in resolved
    summary = json.loads((first / "train_summary.json").read_text())
    assert summary["config"] == {**resolved, "output_dir": "."}  # uploaded: local paths made portable

    reset_accelerate()
    replay = tmp_path / "replay"
    config = parse_args(["--config", str(first / "config.yaml"), "--output_dir", str(replay)])
    train(config)
    assert [step for step, _ in first_log] == [1, 2, 3]
    assert logged == first_log  # every loss term and learning rate of every step, exactly
    first_weights, replay_weights = pipeline_weights(first), pipeline_weights(replay)
    assert all(torch.equal(first_weights[k], replay_weights[k]) for k in first_weights)
    # train_summary.json is read back the same way
    from_summary = parse_args(["--config", str(first / "train_summary.json"), "--output_dir", str(replay)])
    assert from_summary == config
    # a learning rate given with the file moves both networks' (they follow it unless set apart)
    faster = parse_args(["--config", str(first / "config.yaml"), "--learning_rate", "1e-3"]).optimization
    assert faster.encoder_learning_rate == faster.decoder_learning_rate == 1e-3


def test_every_diffusers_scheduler_takes_its_options_or_is_refused(capsys):
    from diffusers.optimization import TYPE_TO_SCHEDULER_FUNCTION

    extra = {"cosine_with_restarts": ["--lr_num_cycles", "3"], "polynomial": ["--lr_power", "2"],
             "piecewise_constant": ["--lr_step_rules", "1:10,0.1:20,0.01"]}
    for kind in TYPE_TO_SCHEDULER_FUNCTION:
        name = str(getattr(kind, "value", kind))
        warmup = [] if name in ("constant", "piecewise_constant") else ["--lr_warmup_steps", "2"]
        config = parse_args(TINY + ["--lr_scheduler", name, *warmup, *extra.get(name, [])])
        assert config.optimization.lr_scheduler == name
    for argv, message in [
        (["--lr_scheduler", "piecewise_constant"], "--lr_step_rules is required by --lr_scheduler piecewise_constant"),
        (["--lr_scheduler", "piecewise_constant", "--lr_step_rules", "1:10,0.1:5,0.01"], "the steps must increase"),
        (["--lr_scheduler", "cosine", "--lr_power", "2"], "--lr_power is an option of --lr_scheduler polynomial"),
        (["--lr_scheduler", "constant", "--lr_warmup_steps", "5"], "--lr_warmup_steps expected 0"),
        (["--lr_scheduler", "polynomial", "--learning_rate", "1e-8"], "lr_end (1e-07) must be smaller"),
    ]:
        with pytest.raises(SystemExit):
            parse_args(TINY + argv)
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    # a prepared scheduler steps once per process: the rules' steps are scaled with the processes
    assert scaled_step_rules("1:10,0.1:20,0.01", 2) == "1.0:20,0.1:40,0.01"
    kwargs = scheduler_kwargs(dict(lr_warmup_steps=1, lr_num_cycles=None, lr_power=2.0, lr_step_rules=None), 10, 2)
    assert kwargs == dict(num_warmup_steps=2, num_training_steps=20, power=2.0)


@pytest.fixture
def restore_loggers():
    """trackio (and what it imports) sets the levels of other libraries' loggers, such as httpx's: give them back."""
    loggers = {name: logger for name, logger in logging.Logger.manager.loggerDict.items()
               if isinstance(logger, logging.Logger)}
    before = {name: (logger.level, logger.disabled, logger.propagate) for name, logger in loggers.items()}
    yield
    for name, (level, disabled, propagate) in before.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.disabled, logger.propagate = disabled, propagate


@pytest.mark.usefixtures("fresh_accelerate", "restore_loggers")
def test_trackers_tensorboard_and_trackio_offline_and_a_missing_one_named(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    pytest.importorskip("trackio")
    import trackio.sqlite_storage
    import trackio.utils

    from asintrovae_hf.training.loop import train

    for module in (trackio.utils, trackio.sqlite_storage):  # read once, at import: keep the run in tmp_path
        monkeypatch.setattr(module, "TRACKIO_DIR", Path(tmp_path / "trackio"))
    out = tmp_path / "run"
    train(parse_args([a for a in TINY if a not in ("--report_to", "none")] + [
        "--report_to", "tensorboard,trackio", "--output_dir", str(out), "--max_train_steps", "2",
        "--logging_steps", "1", "--tracker_project_name", "cfgtest", "--save_images_steps", "1"]))
    assert list((out / "logs").rglob("events.out.tfevents*"))
    assert (tmp_path / "trackio" / "cfgtest.db").exists()

    import accelerate.utils

    monkeypatch.setattr(accelerate.utils, "is_aim_available", lambda: False)
    with pytest.raises(SystemExit):
        parse_args(TINY[:-2] + ["--report_to", "aim"])
    err = capsys.readouterr().err
    assert "--report_to 'aim' needs the 'aim' package, which is not installed: pip install aim" in err
    with pytest.raises(SystemExit):
        parse_args(TINY[:-2] + ["--report_to", "tensorbord"])
    assert "trackers of Accelerate (" in capsys.readouterr().err


def test_an_oversized_config_file_is_refused_before_parsing(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("# padding\n" * 200_000 + "beta_neg: 8\n")
    with pytest.raises(SystemExit):
        parse_args(["--config", str(path)])
    from asintrovae_hf.training.config_files import ConfigFileError, read_config_file

    with pytest.raises(ConfigFileError, match=r"big.yaml': expected at most 1,048,576 bytes, got 2,000,012 bytes"):
        read_config_file(str(path))
