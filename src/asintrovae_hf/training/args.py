"""Command-line options of `scripts/train_as_introvae.py`, named as in diffusers' `train_unconditional.py`, parsed into
a [`TrainingConfig`]."""

import argparse
import math
from typing import Any, Dict, List, Optional

from ..objectives.config import ObjectiveConfig
from .config import DIGITS_OBJECTIVE_DEFAULTS, DataConfig, TrainingConfig

LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "piecewise_constant", "cosine_with_min_lr", "cosine_warmup_with_min_lr")


def _channels(text: str) -> tuple:
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        values = ()
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers such as '64,128', got {text!r}")
    return values


def _lr_schedulers() -> tuple:
    """diffusers' scheduler names (`diffusers.optimization.SchedulerType`), or a known list without diffusers."""
    try:
        from diffusers.optimization import TYPE_TO_SCHEDULER_FUNCTION

        return tuple(str(getattr(t, "value", t)) for t in TYPE_TO_SCHEDULER_FUNCTION)
    except ImportError:  # pragma: no cover
        return LR_SCHEDULERS


def _digits_defaults_help() -> Dict[str, str]:
    """The help text of the defaults the built-in digits change: `{"beta_neg": "256.0; 64.0 for ... digits"}`."""
    methods: Dict[str, Dict[float, List[str]]] = {}
    for method, options in DIGITS_OBJECTIVE_DEFAULTS.items():
        for option, value in options.items():
            methods.setdefault(option, {}).setdefault(value, []).append(method)
    return {option: "; ".join([str(getattr(ObjectiveConfig, option))] + [
        f"{value} for {' and '.join(names)} on the built-in digits" for value, names in by_value.items()])
        for option, by_value in methods.items()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train an introspective VAE (AS-IntroVAE, Soft-IntroVAE, IntroVAE or VAE) with Accelerate."
    )
    data = parser.add_argument_group("data")
    data.add_argument("--dataset_name", type=str, default=None,
                      help="A Hub dataset id, a local dataset path, or 'digits' (the default: scikit-learn's "
                           "handwritten digits, offline).")
    data.add_argument("--dataset_config_name", type=str, default=None)
    data.add_argument("--train_data_dir", type=str, default=None, help="A folder of images (datasets' imagefolder).")
    data.add_argument("--image_column", type=str, default=None, help="Default: the first image column.")
    data.add_argument("--class_column", type=str, default=None,
                      help="A column of class labels: train class-conditional models (e.g. 'label' for the digits).")
    data.add_argument("--cache_dir", type=str, default=None)
    data.add_argument("--resolution", type=int, default=16)
    data.add_argument("--num_channels", type=int, default=None, choices=(1, 3),
                      help="Image channels of the model. Default: 1 for digits, 3 otherwise.")
    data.add_argument("--center_crop", action=argparse.BooleanOptionalAction, default=True)
    data.add_argument("--random_flip", action=argparse.BooleanOptionalAction, default=False)
    data.add_argument("--max_train_samples", type=int, default=None)
    data.add_argument("--dataloader_num_workers", type=int, default=0)

    model = parser.add_argument_group("model")
    model.add_argument("--pretrained_model_name_or_path", type=str, default=None,
                       help="Start from a saved pipeline (a folder or a Hub id) instead of new networks; its "
                            "configuration replaces the model options.")
    model.add_argument("--latent_dim", type=int, default=32)
    model.add_argument("--block_out_channels", type=_channels, default=(32, 64),
                       help="Comma-separated channels per block, e.g. '64,128' (MNIST) or '64,128,256' (CIFAR-10).")

    objective = parser.add_argument_group("objective")
    ObjectiveConfig.add_arguments(objective, defaults=_digits_defaults_help())

    train = parser.add_argument_group("training")
    train.add_argument("--output_dir", type=str, default="as-introvae-digits")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--train_batch_size", type=int, default=64, help="Batch size per process.")
    train.add_argument("--gradient_accumulation_steps", type=int, default=1,
                       help="Batches per optimizer step (the effective batch is train_batch_size x this x "
                            "processes); exactly a bigger batch for VAE and Soft-IntroVAE, see train_step.")
    train.add_argument("--num_epochs", type=int, default=100)
    train.add_argument("--max_train_steps", type=int, default=None, help="Overrides --num_epochs when set.")
    train.add_argument("--learning_rate", type=float, default=2e-4, help="Both networks, unless overridden.")
    train.add_argument("--encoder_learning_rate", type=float, default=None)
    train.add_argument("--decoder_learning_rate", type=float, default=None)
    train.add_argument("--adam_beta1", type=float, default=0.9)
    train.add_argument("--adam_beta2", type=float, default=0.999)
    train.add_argument("--adam_epsilon", type=float, default=1e-8)
    train.add_argument("--adam_weight_decay", type=float, default=0.0)
    train.add_argument("--max_grad_norm", type=float, default=None,
                       help="Clip each network's gradient norm to this value (off by default, as in the reference).")
    train.add_argument("--lr_scheduler", type=str, default="constant",
                       help="A diffusers scheduler: constant, linear, cosine, constant_with_warmup, ...")
    train.add_argument("--lr_warmup_steps", type=int, default=0)
    train.add_argument("--mixed_precision", type=str, default=None, choices=("no", "fp16", "bf16"),
                       help="Default: the value in the Accelerate config.")
    train.add_argument("--use_ema", action=argparse.BooleanOptionalAction, default=True,
                       help="Keep an exponential moving average of the decoder and save it (default on).")
    train.add_argument("--ema_max_decay", "--ema_decay", dest="ema_max_decay", type=float, default=0.999,
                       help="The EMA decay (its maximum with --ema_warmup).")
    train.add_argument("--ema_warmup", action=argparse.BooleanOptionalAction, default=False,
                       help="diffusers' EMA warm-up: decay 1 - (1 + step / inv_gamma) ** -power, up to the maximum.")
    train.add_argument("--ema_inv_gamma", type=float, default=1.0)
    train.add_argument("--ema_power", type=float, default=3 / 4)
    train.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=None,
                       help="The channels-last memory format for the networks and batches. Default: on for the CPU "
                            "(measured 1.2x faster there, docs/results.md), off on other devices.")
    train.add_argument("--compile", action="store_true", help="torch.compile the encoder and decoder.")
    train.add_argument("--log_gradient_norms_steps", type=int, default=0,
                       help="Every N adversarial steps, measure the norm of the encoder's gradient from the adversarial "
                            "terms of its loss and from its VAE terms, and append them to OUTPUT_DIR/"
                            "gradient_norms.jsonl (0: never; costs two extra backward passes on those steps).")
    train.add_argument("--gradient_checkpointing", action="store_true",
                       help="diffusers' gradient checkpointing: each down and up block recomputes its activations in "
                            "the backward pass instead of keeping them (less memory, more time; the same weights).")

    ckpt = parser.add_argument_group("checkpoints")
    ckpt.add_argument("--checkpointing_steps", type=int, default=500)
    ckpt.add_argument("--checkpoints_total_limit", type=int, default=None)
    ckpt.add_argument("--resume_from_checkpoint", type=str, default=None, help="'latest' or a checkpoint folder.")
    ckpt.add_argument("--ddp_timeout", type=int, default=300,
                      help="Seconds a process waits for the others in a collective (gradient all-reduce, barrier) "
                           "before it stops with an error naming the rank that did not answer (default 300; the "
                           "backend's own default is 30 minutes). A rank that dies is noticed at once.")

    log = parser.add_argument_group("logging")
    log.add_argument("--logging_dir", type=str, default="logs", help="Relative to --output_dir.")
    log.add_argument("--report_to", type=str, default="tensorboard",
                     help="'tensorboard', 'wandb', 'all' or 'none'.")
    log.add_argument("--tracker_project_name", type=str, default="asintrovae")
    log.add_argument("--logging_steps", type=int, default=10,
                     help="Steps between reading the losses on the host (progress bar, trackers, NaN check).")
    log.add_argument("--save_images_steps", type=int, default=500)
    log.add_argument("--num_grid_images", type=int, default=64)

    hub = parser.add_argument_group("hub")
    hub.add_argument("--push_to_hub", action="store_true")
    hub.add_argument("--hub_model_id", type=str, default=None)
    hub.add_argument("--hub_token", type=str, default=None)
    hub.add_argument("--hub_private_repo", action="store_true")
    return parser


def option_names() -> List[str]:
    """Every option's name (the flags' destinations), in the order `--help` lists them."""
    return [action.dest for action in build_parser()._actions if action.dest != "help"]


def parse_args(argv: Optional[List[str]] = None) -> TrainingConfig:
    """
    Parse and check the options into a [`TrainingConfig`], every default resolved; an inconsistent combination is an
    error before any work starts.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    options = dict(vars(args))  # resolved here, then frozen in the config: the namespace stays as parsed
    if options["dataset_name"] is not None and options["train_data_dir"] is not None:
        parser.error("give either --dataset_name or --train_data_dir, not both")
    data = DataConfig(dataset_name=options["dataset_name"], train_data_dir=options["train_data_dir"])
    if options["num_channels"] is None:
        options["num_channels"] = 1 if data.is_digits else 3
    for name in ("encoder_learning_rate", "decoder_learning_rate"):
        if options[name] is None:
            options[name] = options["learning_rate"]
    _check_options(parser, options)
    try:
        name = args.objective or ObjectiveConfig.objective
        defaults = DIGITS_OBJECTIVE_DEFAULTS.get(name, {}) if data.is_digits else {}
        objective = ObjectiveConfig.from_namespace(args, defaults=defaults)
    except ValueError as err:
        parser.error(str(err))
    options["preset"] = args.preset or "recommended"
    return TrainingConfig.from_options(options, objective)


def _check_options(parser: argparse.ArgumentParser, options: Dict[str, Any]) -> None:
    for name in ("resolution", "train_batch_size", "latent_dim", "checkpointing_steps", "logging_steps",
                 "save_images_steps", "num_epochs", "gradient_accumulation_steps", "ddp_timeout"):
        if options[name] <= 0:
            parser.error(f"--{name} must be a positive integer, got {options[name]}")
    for name in ("max_train_steps", "max_train_samples", "checkpoints_total_limit"):
        if options[name] is not None and options[name] <= 0:
            parser.error(f"--{name} must be a positive integer, got {options[name]}")
    for name in ("lr_warmup_steps", "dataloader_num_workers", "log_gradient_norms_steps"):
        if options[name] < 0:
            parser.error(f"--{name} must be >= 0, got {options[name]}")
    for name in ("learning_rate", "encoder_learning_rate", "decoder_learning_rate"):
        value = options[name]
        if not (math.isfinite(value) and value > 0):
            parser.error(f"--{name} must be a positive number, got {value}")
    for name in ("adam_beta1", "adam_beta2"):
        if not 0 <= options[name] < 1:
            parser.error(f"--{name} must be in [0, 1), got {options[name]}")
    if not options["adam_epsilon"] > 0 or options["adam_weight_decay"] < 0:
        parser.error(f"--adam_epsilon must be > 0 and --adam_weight_decay >= 0, got {options['adam_epsilon']} and "
                     f"{options['adam_weight_decay']}")
    if options["max_grad_norm"] is not None and not options["max_grad_norm"] > 0:
        parser.error(f"--max_grad_norm must be a positive number, got {options['max_grad_norm']}")
    if not 0 <= options["ema_max_decay"] < 1:
        parser.error(f"--ema_max_decay must be in [0, 1), got {options['ema_max_decay']}")
    if not (options["ema_inv_gamma"] > 0 and options["ema_power"] > 0):
        parser.error(f"--ema_inv_gamma and --ema_power must be positive, got {options['ema_inv_gamma']} and "
                     f"{options['ema_power']}")
    schedulers = _lr_schedulers()
    if options["lr_scheduler"] not in schedulers:
        parser.error(f"--lr_scheduler must be one of {', '.join(schedulers)}; got {options['lr_scheduler']!r}")
    if options["num_grid_images"] < 2:
        parser.error(f"--num_grid_images must be at least 2 (samples, and real images above their reconstructions), "
                     f"got {options['num_grid_images']}")
    if options["report_to"] not in ("tensorboard", "wandb", "all", "none"):
        parser.error(f"--report_to must be one of tensorboard, wandb, all, none; got {options['report_to']!r}")
