"""The training configuration: parsed once into a frozen `TrainingConfig`, read by everything after, seeded once."""

import argparse
import dataclasses

import pytest

import asintrovae_hf.training.loop as training
import asintrovae_hf.training.setup as training_setup
from asintrovae_hf.objectives.config import ObjectiveConfig
from asintrovae_hf.training.args import build_parser, option_names, parse_args
from asintrovae_hf.training.config import DataConfig, LoggingConfig, ModelConfig, OptimizationConfig, TrainingConfig
from helpers import TINY


def test_the_config_and_each_section_are_frozen():
    config = parse_args([])
    for owner, name in ((config, "seed"), (config.optimization, "learning_rate"), (config.data, "dataset_name"),
                        (config.objective, "beta_neg"), (config.hub, "hub_token")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(owner, name, getattr(owner, name))


def test_parse_args_of_the_defaults_is_the_default_config():
    config = parse_args([])
    assert config == TrainingConfig()
    assert config.output_dir == "as-introvae-digits" and config.seed == 0 and config.preset == "recommended"
    assert config.mixed_precision is None and config.channels_last is None and config.compile is False
    assert config.data == DataConfig(train_batch_size=64, center_crop=True, random_flip=False)
    assert config.model == ModelConfig(resolution=16, num_channels=1, latent_dim=32, block_out_channels=(32, 64))
    assert config.objective == ObjectiveConfig.from_preset("recommended", beta_neg=64.0)  # the digits' value
    assert (config.optimization.encoder_learning_rate, config.optimization.decoder_learning_rate) == (2e-4, 2e-4)
    assert config.optimization.max_train_steps is None and config.optimization.num_epochs == 100
    assert config.ema.use_ema and config.ema.ema_max_decay == 0.999
    assert config.checkpointing.checkpointing_steps == 500 and config.logging.report_to == "tensorboard"
    assert not config.hub.push_to_hub


def test_parse_args_resolves_what_depends_on_other_options():
    config = parse_args(["--train_data_dir", "images", "--learning_rate", "1e-3", "--decoder_learning_rate", "5e-4",
                         "--preset", "reference", "--beta_neg", "4", "--block_out_channels", "8,16,32"])
    assert config.model.num_channels == 3  # not the digits: RGB unless --num_channels says otherwise
    assert (config.optimization.encoder_learning_rate, config.optimization.decoder_learning_rate) == (1e-3, 5e-4)
    assert config.objective == ObjectiveConfig.from_preset("reference", beta_neg=4.0)
    assert config.preset == "reference" and config.model.block_out_channels == (8, 16, 32)


@pytest.mark.parametrize("argv, beta_neg", [
    ([], 64.0), (["--dataset_name", "digits", "--objective", "soft-introvae"], 64.0),
    (["--preset", "reference"], 64.0), (["--objective", "introvae"], 256.0), (["--beta_neg", "256"], 256.0),
    (["--dataset_name", "user/faces"], 256.0), (["--train_data_dir", "images", "--objective", "soft-introvae"], 256.0),
])
def test_beta_neg_defaults_to_the_digits_value_only_on_the_digits(argv, beta_neg):
    """The digits grid's best `beta_neg` applies to the methods it was measured for, on the built-in digits only."""
    assert parse_args(argv).objective.beta_neg == beta_neg


def test_the_help_shows_the_digits_defaults():
    text = " ".join(build_parser().format_help().split())
    assert "(default: 256.0; 64.0 for soft-introvae and as-introvae on the built-in digits)" in text


def test_every_flag_is_one_config_field():
    assert sorted(option_names()) == sorted(TrainingConfig().options())
    assert len(option_names()) == len(set(option_names()))  # exactly one flag per field
    assert "hub_token" not in repr(parse_args(["--hub_token", "secret"]))


TINY_CONFIG = dict(
    data=DataConfig(train_batch_size=16, max_train_samples=64),
    model=ModelConfig(resolution=8, block_out_channels=(8, 16), latent_dim=4),
    objective=ObjectiveConfig(beta_neg=8.0),
    optimization=OptimizationConfig(max_train_steps=2),
    logging=LoggingConfig(report_to="none", num_grid_images=8),
)


@pytest.mark.usefixtures("fresh_accelerate")
def test_a_config_built_in_python_trains_as_the_command_line_does(tmp_path, monkeypatch):
    from helpers import reset_accelerate

    parsed = training.train(parse_args(TINY + ["--output_dir", str(tmp_path / "cli"), "--max_train_steps", "2"]))
    reset_accelerate()

    def no_parsing(*args, **kwargs):
        raise AssertionError("training parsed a command line")

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", no_parsing)
    built = training.train(TrainingConfig(output_dir=str(tmp_path / "python"), **TINY_CONFIG))
    assert built["final_losses"] == parsed["final_losses"]
    assert built["replica_checksums"] == parsed["replica_checksums"]


@pytest.mark.usefixtures("fresh_accelerate")
@pytest.mark.parametrize("extra", [[], ["--class_column", "label"]], ids=["unconditional", "class-conditional"])
def test_set_seed_is_called_once_per_run(tmp_path, monkeypatch, extra):
    seeds = []
    real_set_seed = training_setup.set_seed

    def counting_set_seed(seed, *args, **kwargs):
        seeds.append(seed)
        return real_set_seed(seed, *args, **kwargs)

    monkeypatch.setattr(training_setup, "set_seed", counting_set_seed)
    training.train(parse_args(TINY + ["--output_dir", str(tmp_path / "o"), "--max_train_steps", "1", "--seed", "3",
                                      *extra]))
    assert seeds == [3]
