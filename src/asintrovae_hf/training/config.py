"""The settings of a training run, in one frozen object: [`TrainingConfig`] and its sections.

`parse_args` (`args.py`) builds it once from the command line, with every default resolved and every value checked;
the set-up, the loop, checkpoints and the model card read it and never change it. Each field keeps the name of its
command-line flag (`config.optimization.learning_rate` is `--learning_rate`), and [`TrainingConfig.options`] gives the
flat `{flag name: value}` view that checkpoints, trackers and the model card record.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

from ..builtin_datasets import BUILTIN_DATASETS, BuiltinDataset
from ..objectives.config import ObjectiveConfig
from ..objectives.registry import DatasetDefaults


# The objective options that differ on the built-in digits, per objective: each registered objective's
# `defaults["digits"]` (read when accessed, so objectives registered later count).
DIGITS_OBJECTIVE_DEFAULTS: Mapping[str, Dict[str, float]] = DatasetDefaults("digits")


@dataclass(frozen=True)
class DataConfig:
    r"""
    Where the images come from and how they are batched.

    Args:
        dataset_name (`str`, *optional*): A Hub dataset id, a local dataset path, or a built-in dataset (`"digits"`,
            `"mnist-5k"`: their `"train"` split); with neither this nor `train_data_dir`, the built-in digits.
        dataset_config_name (`str`, *optional*): The dataset's configuration.
        train_data_dir (`str`, *optional*): A folder of images.
        image_column (`str`, *optional*): Defaults to the first image column.
        class_column (`str`, *optional*): A column of class labels: the networks are then class-conditional.
        cache_dir (`str`, *optional*): The datasets / Hub cache.
        center_crop (`bool`, defaults to `True`): Center crop; otherwise a random crop.
        random_flip (`bool`, defaults to `False`): Flip horizontally with probability 0.5.
        max_train_samples (`int`, *optional*): Train on the first this many images.
        dataloader_num_workers (`int`, defaults to 0): Worker processes of the data loader.
        train_batch_size (`int`, defaults to 64): Batch size per process.
    """

    dataset_name: Optional[str] = None
    dataset_config_name: Optional[str] = None
    train_data_dir: Optional[str] = None
    image_column: Optional[str] = None
    class_column: Optional[str] = None
    cache_dir: Optional[str] = None
    center_crop: bool = True
    random_flip: bool = False
    max_train_samples: Optional[int] = None
    dataloader_num_workers: int = 0
    train_batch_size: int = 64

    @property
    def is_digits(self) -> bool:
        """The built-in digits (whose objective defaults are `DIGITS_OBJECTIVE_DEFAULTS`)."""
        return self.train_data_dir is None and self.dataset_name in (None, "digits")

    @property
    def builtin(self) -> Optional[BuiltinDataset]:
        """The built-in dataset trained on (made in memory: no files to check), or `None`."""
        if self.train_data_dir is not None or self.dataset_name not in (None, *BUILTIN_DATASETS):
            return None
        return BUILTIN_DATASETS[self.dataset_name or "digits"]


@dataclass(frozen=True)
class ModelConfig:
    r"""
    The encoder and decoder.

    Args:
        pretrained_model_name_or_path (`str`, *optional*): Start from a saved pipeline; its networks' shape then
            replaces the four fields below (the set-up records the replaced ones).
        resolution (`int`, defaults to 16): Image size (`sample_size`).
        num_channels (`int`, defaults to 1): Image channels (1 for the digits, 3 for other data on the command line).
        latent_dim (`int`, defaults to 32): Size of the latent vector.
        block_out_channels (`Tuple[int]`, defaults to `(32, 64)`): Channels per block.
        gradient_checkpointing (`bool`, defaults to `False`): Recompute each block's activations in the backward pass.
    """

    pretrained_model_name_or_path: Optional[str] = None
    resolution: int = 16
    num_channels: int = 1
    latent_dim: int = 32
    block_out_channels: Tuple[int, ...] = (32, 64)
    gradient_checkpointing: bool = False


@dataclass(frozen=True)
class OptimizationConfig:
    r"""
    How long and how the networks are optimised: one Adam optimizer and learning-rate schedule per network.

    Args:
        num_epochs (`int`, defaults to 100): Epochs, unless `max_train_steps` is set.
        max_train_steps (`int`, *optional*): Optimizer steps; overrides `num_epochs`.
        gradient_accumulation_steps (`int`, defaults to 1): Batches per optimizer step.
        learning_rate (`float`, defaults to 2e-4): The learning rate given for both networks (kept for the record;
            the two below are the ones used).
        encoder_learning_rate (`float`, defaults to 2e-4): The encoder's learning rate.
        decoder_learning_rate (`float`, defaults to 2e-4): The decoder's learning rate.
        adam_beta1, adam_beta2, adam_epsilon, adam_weight_decay (`float`): Adam's settings (0.9, 0.999, 1e-8, 0).
        max_grad_norm (`float`, *optional*): Clip each network's gradient norm to this value.
        lr_scheduler (`str`, defaults to `"constant"`): A diffusers scheduler name.
        lr_warmup_steps (`int`, defaults to 0): The scheduler's warm-up steps.
        lr_num_cycles (`int`, *optional*): `cosine_with_restarts`' number of restarts (diffusers' default when unset).
        lr_power (`float`, *optional*): `polynomial`'s power (diffusers' default when unset).
        lr_step_rules (`str`, *optional*): `piecewise_constant`'s rules, e.g. `"1:1000,0.1:2000,0.01"`.
    """

    num_epochs: int = 100
    max_train_steps: Optional[int] = None
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-4
    encoder_learning_rate: float = 2e-4
    decoder_learning_rate: float = 2e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    adam_weight_decay: float = 0.0
    max_grad_norm: Optional[float] = None
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    lr_num_cycles: Optional[int] = None
    lr_power: Optional[float] = None
    lr_step_rules: Optional[str] = None


@dataclass(frozen=True)
class EMAConfig:
    r"""
    The exponential moving average of the decoder (diffusers' `EMAModel`), the weights that get saved.

    Args:
        use_ema (`bool`, defaults to `True`): Keep the average.
        ema_max_decay (`float`, defaults to 0.999): The decay (its maximum with `ema_warmup`).
        ema_warmup (`bool`, defaults to `False`): diffusers' warm-up of the decay.
        ema_inv_gamma (`float`, defaults to 1.0): The warm-up's `inv_gamma`.
        ema_power (`float`, defaults to 0.75): The warm-up's `power`.
    """

    use_ema: bool = True
    ema_max_decay: float = 0.999
    ema_warmup: bool = False
    ema_inv_gamma: float = 1.0
    ema_power: float = 3 / 4


@dataclass(frozen=True)
class CheckpointingConfig:
    r"""
    Args:
        checkpointing_steps (`int`, defaults to 500): Steps between checkpoints.
        checkpoints_total_limit (`int`, *optional*): Keep at most this many checkpoints.
        resume_from_checkpoint (`str`, *optional*): `"latest"` or a checkpoint folder.
        ddp_timeout (`int`, defaults to 300): Seconds a process waits for the others in a collective before it stops
            with an error naming the rank that did not answer.
    """

    checkpointing_steps: int = 500
    checkpoints_total_limit: Optional[int] = None
    resume_from_checkpoint: Optional[str] = None
    ddp_timeout: int = 300


@dataclass(frozen=True)
class ValidationConfig:
    r"""
    Measuring the model on held-out images while it trains (`training/validation.py`).

    Args:
        validation_steps (`int`, defaults to 0): Steps between validations (and one at the last step); 0: never.
        validation_split (`float`, *optional*): Hold out this fraction of the training data (not for the built-in
            datasets, which validate on their `"test"` split).
        validation_data_dir (`str`, *optional*): A folder of images to validate on instead.
        num_validation_images (`int`, defaults to 1000): At most this many held-out images.
        keep_best_by (`str`, *optional*): `"reconstruction_mse"`, `"neg_elbo"` or `"fd"` (lower is better): keep
            `OUTPUT_DIR/best/`, the pipeline of the best validation so far.
    """

    validation_steps: int = 0
    validation_split: Optional[float] = None
    validation_data_dir: Optional[str] = None
    num_validation_images: int = 1000
    keep_best_by: Optional[str] = None


@dataclass(frozen=True)
class LoggingConfig:
    r"""
    Args:
        logging_dir (`str`, defaults to `"logs"`): The trackers' folder, relative to `output_dir`.
        report_to (`str`, defaults to `"tensorboard"`): Accelerate trackers (comma-separated), `all` or `none`.
        tracker_project_name (`str`, defaults to `"asintrovae"`): The trackers' project.
        logging_steps (`int`, defaults to 10): Steps between reading the losses on the host.
        save_images_steps (`int`, defaults to 500): Steps between sample grids.
        num_grid_images (`int`, defaults to 64): Images per grid.
        log_gradient_norms_steps (`int`, defaults to 0): Adversarial steps between measurements of the encoder's
            gradient parts (0: never).
    """

    logging_dir: str = "logs"
    report_to: str = "tensorboard"
    tracker_project_name: str = "asintrovae"
    logging_steps: int = 10
    save_images_steps: int = 500
    num_grid_images: int = 64
    log_gradient_norms_steps: int = 0


@dataclass(frozen=True)
class HubConfig:
    r"""
    Args:
        push_to_hub (`bool`, defaults to `False`): Upload the trained pipeline at the end.
        hub_model_id (`str`, *optional*): The repository; defaults to the output folder's name.
        hub_token (`str`, *optional*): Left out of every record of the options.
        hub_private_repo (`bool`, defaults to `False`): Create the repository private.
    """

    push_to_hub: bool = False
    hub_model_id: Optional[str] = None
    hub_token: Optional[str] = field(default=None, repr=False)
    hub_private_repo: bool = False


@dataclass(frozen=True)
class TrainingConfig:
    r"""
    Every setting of a training run. The defaults are those of `parse_args([])`, apart from `channels_last` and
    `mixed_precision`, whose `None` leaves the choice to the device and to the Accelerate config.

    Args:
        output_dir (`str`, defaults to `"as-introvae-digits"`): Where the pipeline, checkpoints and grids go.
        seed (`int`, defaults to 0): Seeds the networks' initialisation, the shuffling, the noise and the grids.
        mixed_precision (`str`, *optional*): `"no"`, `"fp16"` or `"bf16"`; defaults to the Accelerate config.
        channels_last (`bool`, *optional*): The channels-last memory format; defaults to on for the CPU only.
        compile (`bool`, defaults to `False`): `torch.compile` the networks.
        preset (`str`, defaults to `"recommended"`): The preset `objective` was built from (for the record).
        data, model, objective, optimization, ema, checkpointing, validation, logging, hub: The sections.
            `objective` defaults to the built-in digits' (`DIGITS_OBJECTIVE_DEFAULTS`), like `data`.
    """

    output_dir: str = "as-introvae-digits"
    seed: int = 0
    mixed_precision: Optional[str] = None
    channels_last: Optional[bool] = None
    compile: bool = False
    preset: str = "recommended"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(
        default_factory=lambda: ObjectiveConfig(**DIGITS_OBJECTIVE_DEFAULTS.get(ObjectiveConfig.objective, {})))
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
