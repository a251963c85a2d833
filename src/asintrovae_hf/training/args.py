"""Command-line options of `asintrovae-train`, named as in diffusers' `train_unconditional.py`, parsed into a
[`TrainingConfig`]; `--config FILE` (YAML or JSON, or a shipped configuration's name) sets them first
(`config_files.py`)."""

import argparse
import dataclasses
import math
import typing
from typing import Any, Dict, List, Optional

from ..data.sources import BUILTIN_SOURCES
from ..objectives.config import ObjectiveConfig
from .config import DataConfig, TrainingConfig
from .config_files import ConfigFileError, config_values, named_configs, read_config_file

LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "piecewise_constant", "cosine_with_min_lr", "cosine_warmup_with_min_lr")


def _lr_schedulers() -> tuple:
    """diffusers' scheduler names (`diffusers.optimization.SchedulerType`), or a known list without diffusers."""
    try:
        from diffusers.optimization import TYPE_TO_SCHEDULER_FUNCTION

        return tuple(str(getattr(t, "value", t)) for t in TYPE_TO_SCHEDULER_FUNCTION)
    except ImportError:  # pragma: no cover
        return LR_SCHEDULERS


def _builtin_defaults_help() -> Dict[str, str]:
    """The help text of the objective defaults the built-in datasets change:
    `{"beta_neg": "256.0; 64.0 for ... on the built-in digits"}`."""
    methods: Dict[str, Dict[tuple, List[str]]] = {}
    for source in BUILTIN_SOURCES.values():
        for method, options in reversed(list(source.objective_defaults.items())):  # the simplest method first
            for option, value in options.items():
                methods.setdefault(option, {}).setdefault((value, source.name), []).append(method)
    return {option: "; ".join([str(getattr(ObjectiveConfig, option))] + [
        f"{value} for {' and '.join(names)} on the built-in {data}" for (value, data), names in by_value.items()])
        for option, by_value in methods.items()}


def _add_flags(group, section: type, help_lists: Dict[str, str]) -> None:
    """A flag per field of `section` that has one ([`option`]): its name, default, type and help from the field."""
    for f in dataclasses.fields(section):
        if "flag" not in f.metadata:
            continue
        flag = dict(f.metadata["flag"])
        names = [f"--{f.name}", *flag.pop("aliases", ())]
        kind = next((t for t in typing.get_args(f.type) if t is not type(None)), f.type)  # Optional[X] -> X
        text = f.metadata["help"]
        kwargs = dict(dest=f.name, default=flag.pop("flag_default", f.default),
                      help=text.format(**help_lists) if text else None)
        if kind is bool:  # --flag / --no-flag, unless the field asks for a plain switch (`store_true`)
            kwargs["action"] = flag.pop("action", argparse.BooleanOptionalAction)
        else:
            kwargs["type"] = flag.pop("type", kind)
        group.add_argument(*names, **kwargs, **flag)


def build_parser() -> argparse.ArgumentParser:
    """The parser of `asintrovae-train`: `--config`, then a group of flags per [`TrainingConfig`] section."""
    parser = argparse.ArgumentParser(
        prog="asintrovae-train",
        description="Train an introspective VAE (AS-IntroVAE, Soft-IntroVAE, IntroVAE or VAE) with Accelerate."
    )
    parser.add_argument("--config", type=str, default=None, metavar="FILE_OR_NAME",
                        help="A YAML or JSON file of options, keys named as the flags (e.g. learning_rate: 2.0e-4), or "
                             "a shipped configuration: " + ", ".join(_named_configs_or_none()) + ". Flags given on "
                             "the command line override it. Every run writes its resolved configuration to "
                             "OUTPUT_DIR/config.yaml, which replays the run.")
    help_lists = {"lr_schedulers": ", ".join(_lr_schedulers()), "trackers": ", ".join(_trackers())}
    _add_flags(parser.add_argument_group("training"), TrainingConfig, help_lists)
    for f in dataclasses.fields(TrainingConfig):
        if f.type is ObjectiveConfig:
            ObjectiveConfig.add_arguments(parser.add_argument_group(f.name), defaults=_builtin_defaults_help())
        elif dataclasses.is_dataclass(f.type):
            _add_flags(parser.add_argument_group(f.name), f.type, help_lists)
    return parser


def option_names() -> List[str]:
    """Every option's name (the flags' destinations), in the order `--help` lists them; `--config` is not one."""
    return [action.dest for action in build_parser()._actions if action.dest not in ("help", "config")]


def _named_configs_or_none() -> List[str]:
    try:
        return list(named_configs())
    except (OSError, ModuleNotFoundError):  # pragma: no cover - a package without its data files
        return []


def _trackers() -> tuple:
    """The trackers Accelerate supports (`accelerate.tracking.LOGGER_TYPE_TO_CLASS`)."""
    try:
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS
    except ImportError:  # pragma: no cover - training needs accelerate, which says so itself
        return ("tensorboard", "wandb")
    return tuple(LOGGER_TYPE_TO_CLASS)


# The package that brings each tracker, where its pip name differs from the tracker's.
_TRACKER_PACKAGES = {"comet_ml": "comet-ml"}


def report_to_error(report_to: str) -> Optional[str]:
    """
    Why `--report_to` cannot be used, to follow `--report_to ` (an unknown tracker, or one whose package is missing: Accelerate would drop it
    silently), or `None`.
    """
    if report_to in ("all", "none"):
        return None
    names = [name.strip() for name in report_to.split(",") if name.strip()]
    trackers = _trackers()
    unknown = [name for name in names if name not in trackers]
    if not names or unknown:
        return (f"must be 'all', 'none' or trackers of Accelerate ({', '.join(trackers)}), comma-separated; "
                f"got {report_to!r}")
    try:
        import accelerate.utils as accelerate_utils
    except ImportError:  # pragma: no cover
        return None
    for name in names:
        available = getattr(accelerate_utils, f"is_{name}_available", None)
        if available is not None and not available():
            package = _TRACKER_PACKAGES.get(name, name)
            return (f"{name!r} needs the {package!r} package, which is not installed: pip install {package} (or "
                    f"pass --report_to none)")
    return None


def _parse_step_rules(text: str) -> List[tuple]:
    """`'1:1000,0.1:2000,0.01'` -> `[(1.0, 1000), (0.1, 2000), (0.01, None)]`; `ValueError` for anything else."""
    parts = [part.strip() for part in text.split(",")]
    rules = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        factor_text, colon, steps_text = part.partition(":")
        if last == bool(colon):
            raise ValueError("a rule is FACTOR:STEPS, and the last one a FACTOR alone")
        factor = float(factor_text)
        steps = None if last else int(steps_text)
        if not (math.isfinite(factor) and factor >= 0) or (steps is not None and steps <= 0):
            raise ValueError("factors must be finite and >= 0, steps positive")
        if steps is not None and rules and steps <= rules[-1][1]:
            raise ValueError("the steps must increase")
        rules.append((factor, steps))
    return rules


def scaled_step_rules(text: str, factor: int) -> str:
    """`--lr_step_rules` with every step count multiplied by `factor` (a prepared scheduler steps once per process)."""
    return ",".join(f"{f!r}:{s * factor}" if s is not None else repr(f) for f, s in _parse_step_rules(text))


def scheduler_error(options: Dict[str, Any]) -> Optional[tuple]:
    """
    `(option, message)` when the scheduler and its options cannot be used together, else `None`; the scheduler is
    built on a throw-away optimizer, so whatever diffusers refuses is refused here, before any work.
    """
    name = options["lr_scheduler"]
    schedulers = _lr_schedulers()
    if name not in schedulers:
        return "lr_scheduler", f"must be one of {', '.join(schedulers)}; got {name!r}"
    owners = {"lr_num_cycles": "cosine_with_restarts", "lr_power": "polynomial", "lr_step_rules": "piecewise_constant"}
    for option, owner in owners.items():
        if options.get(option) is not None and name != owner:
            return option, (f"is an option of --lr_scheduler {owner}; expected it unset with --lr_scheduler {name}, "
                            f"got {options[option]!r}")
    if name in ("constant", "piecewise_constant") and options["lr_warmup_steps"]:
        return "lr_warmup_steps", (f"expected 0 with --lr_scheduler {name}, which has no warm-up, got "
                                   f"{options['lr_warmup_steps']} (constant_with_warmup warms up)")
    if name == "piecewise_constant":
        if options.get("lr_step_rules") is None:
            return "lr_step_rules", "is required by --lr_scheduler piecewise_constant, e.g. '1:1000,0.1:2000,0.01'"
        try:
            _parse_step_rules(options["lr_step_rules"])
        except ValueError as err:
            return "lr_step_rules", f"expected e.g. '1:1000,0.1:2000,0.01' ({err}), got {options['lr_step_rules']!r}"
    if options.get("lr_num_cycles") is not None and options["lr_num_cycles"] < 1:
        return "lr_num_cycles", f"must be a positive integer, got {options['lr_num_cycles']}"
    if options.get("lr_power") is not None and not (math.isfinite(options["lr_power"]) and options["lr_power"] > 0):
        return "lr_power", f"must be a positive number, got {options['lr_power']}"
    try:
        import torch
        from diffusers.optimization import get_scheduler
    except ImportError:  # pragma: no cover
        return None
    steps = options.get("max_train_steps") or 1000
    for option in ("encoder_learning_rate", "decoder_learning_rate"):
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=options[option])
        try:
            get_scheduler(name, optimizer, **scheduler_kwargs(options, steps, 1))
        except (ValueError, TypeError, ZeroDivisionError) as err:
            return "lr_scheduler", f"{name} cannot be used with these options: {' '.join(str(err).split())}"
    return None


def scheduler_kwargs(options: Dict[str, Any], max_train_steps: int, num_processes: int) -> Dict[str, Any]:
    """The keyword arguments of diffusers' `get_scheduler` (a prepared scheduler steps once per process)."""
    kwargs = dict(num_warmup_steps=options["lr_warmup_steps"] * num_processes,
                  num_training_steps=max_train_steps * num_processes)
    if options.get("lr_num_cycles") is not None:
        kwargs["num_cycles"] = options["lr_num_cycles"]
    if options.get("lr_power") is not None:
        kwargs["power"] = options["lr_power"]
    if options.get("lr_step_rules") is not None:
        kwargs["step_rules"] = scaled_step_rules(options["lr_step_rules"], num_processes)
    return kwargs


def _given_on_command_line(argv: Optional[List[str]]) -> set:
    """The options the command line itself gives (a parser whose defaults are all left out)."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def parse_args(argv: Optional[List[str]] = None) -> TrainingConfig:
    """
    Parse and check the options into a [`TrainingConfig`], every default resolved; an inconsistent combination is an
    error before any work starts. With `--config`, the file's values come first and the command line overrides them;
    a refused value from the file names the file and the key.
    """
    parser = build_parser()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    spec = pre.parse_known_args(argv)[0].config
    from_file, label = set(), None
    if spec is not None:
        try:
            data, label = read_config_file(spec)
            values = config_values(parser, data, label)
        except ConfigFileError as err:
            parser.exit(2, f"{parser.prog}: error: {err}\n")
        given = _given_on_command_line(argv)
        for source, other in (("dataset_name", "train_data_dir"), ("train_data_dir", "dataset_name")):
            if source in given and other in values:  # the command line's data replaces the file's
                values[other] = None
        parser.set_defaults(**values)
        from_file = set(values) - given

    def fail(name: str, message: str, *related: str) -> None:
        """Exit with the refusal of option `name`; naming the file and the key when the value came from the file
        (or, for a combination, when one of the `related` options did)."""
        if name in from_file:
            parser.exit(2, f"{parser.prog}: error: {label}: key {name!r}: {message}\n")
        for key in related:
            if key in from_file:
                parser.exit(2, f"{parser.prog}: error: {label}: key {key!r}: --{name} {message}\n")
        parser.error(f"--{name} {message}")

    args = parser.parse_args(argv)
    options = dict(vars(args))  # resolved here, then frozen in the config: the namespace stays as parsed
    options.pop("config")
    if options["dataset_name"] is not None and options["train_data_dir"] is not None:
        parser.error("give either --dataset_name or --train_data_dir, not both")
    source = DataConfig(dataset_name=options["dataset_name"], train_data_dir=options["train_data_dir"]).source
    if options["num_channels"] is None:
        options["num_channels"] = source.num_channels
    if options["resolution"] is None:
        options["resolution"] = source.default_resolution
    for name in ("encoder_learning_rate", "decoder_learning_rate"):
        if options[name] is None:
            options[name] = options["learning_rate"]
    _check_options(fail, options)
    if not options["pretrained_model_name_or_path"] and {"resolution", "block_out_channels"} & from_file:
        # from a file, refused here, naming it (from the command line the set-up refuses it, before any data)
        from ..models.loading import check_sample_size

        try:
            check_sample_size(options["resolution"], options["block_out_channels"])
        except ValueError as err:
            fail("resolution", f"{options['resolution']} cannot be used: {err}", "block_out_channels")
    try:
        defaults = source.objective_defaults.get(args.objective or ObjectiveConfig.objective, {})
        objective = ObjectiveConfig.from_namespace(args, defaults=defaults)
    except ValueError as err:
        field = str(err).split(" ", 1)[0]
        if field in from_file:
            fail(field, str(err).split(" ", 1)[1])
        parser.error(str(err))
    options["preset"] = args.preset or "recommended"
    return TrainingConfig.from_options(options, objective)


def _check_options(fail, options: Dict[str, Any]) -> None:
    """Range checks; `fail(option, message)` reports the first one that fails (and exits)."""
    for name in ("resolution", "train_batch_size", "latent_dim", "checkpointing_steps", "logging_steps",
                 "save_images_steps", "num_epochs", "gradient_accumulation_steps", "ddp_timeout"):
        if options[name] <= 0:
            fail(name, f"must be a positive integer, got {options[name]}")
    for name in ("max_train_steps", "max_train_samples", "checkpoints_total_limit"):
        if options[name] is not None and options[name] <= 0:
            fail(name, f"must be a positive integer, got {options[name]}")
    for name in ("lr_warmup_steps", "dataloader_num_workers", "log_gradient_norms_steps"):
        if options[name] < 0:
            fail(name, f"must be >= 0, got {options[name]}")
    for name in ("learning_rate", "encoder_learning_rate", "decoder_learning_rate"):
        value = options[name]
        if not (math.isfinite(value) and value > 0):
            fail(name, f"must be a positive number, got {value}")
    for name in ("adam_beta1", "adam_beta2"):
        if not 0 <= options[name] < 1:
            fail(name, f"must be in [0, 1), got {options[name]}")
    if not options["adam_epsilon"] > 0:
        fail("adam_epsilon", f"must be > 0, got {options['adam_epsilon']}")
    if not options["adam_weight_decay"] >= 0:
        fail("adam_weight_decay", f"must be >= 0, got {options['adam_weight_decay']}")
    if options["max_grad_norm"] is not None and not options["max_grad_norm"] > 0:
        fail("max_grad_norm", f"must be a positive number, got {options['max_grad_norm']}")
    if not 0 <= options["ema_max_decay"] < 1:
        fail("ema_max_decay", f"must be in [0, 1), got {options['ema_max_decay']}")
    for name in ("ema_inv_gamma", "ema_power"):
        if not options[name] > 0:
            fail(name, f"must be positive, got {options[name]}")
    bad_scheduler = scheduler_error(options)
    if bad_scheduler:
        fail(*bad_scheduler, "lr_scheduler", "lr_warmup_steps", "learning_rate")
    if options["num_grid_images"] < 2:
        fail("num_grid_images", f"must be at least 2 (samples, and real images above their reconstructions), "
                                f"got {options['num_grid_images']}")
    bad_tracker = report_to_error(options["report_to"])
    if bad_tracker:
        fail("report_to", bad_tracker)
    bad_validation = validation_error(options)
    if bad_validation:
        name, detail = bad_validation
        fail(name, *((detail,) if isinstance(detail, str) else detail))


def validation_error(options: Dict[str, Any]) -> Optional[tuple]:
    """
    `(option, message)` or `(option, (message, *related options))` when the validation options cannot be used
    together, else `None`.
    """
    steps, split, folder = options["validation_steps"], options["validation_split"], options["validation_data_dir"]
    source = DataConfig(dataset_name=options["dataset_name"], train_data_dir=options["train_data_dir"]).source
    builtin, data = source.heldout_split is not None, source.flag
    if steps < 0:
        return "validation_steps", f"must be >= 0, got {steps}"
    if options["num_validation_images"] <= 0:
        return "num_validation_images", f"must be a positive integer, got {options['num_validation_images']}"
    if split is not None and not (math.isfinite(split) and 0 < split < 1):
        return "validation_split", f"expected a fraction in (0, 1), got {split}"
    if split is not None and folder is not None:
        return "validation_split", (f"and --validation_data_dir are two sources of validation images; expected one, "
                                    f"got both ({split} and {folder!r})", "validation_data_dir")
    for name, value in (("validation_split", split), ("validation_data_dir", folder)):
        if value is not None and builtin:
            return name, (f"expected unset with the built-in {data}, which validates on its fixed 'test' split; "
                          f"got {value!r}", "dataset_name", "train_data_dir")
        if value is not None and not steps:
            return name, (f"needs --validation_steps N > 0 (expected validation to be on), got --validation_steps "
                          f"{steps}", "validation_steps")
    if steps and not builtin and split is None and folder is None:
        return "validation_steps", (f"needs held-out images with {data}: expected --validation_split FRACTION or "
                                    f"--validation_data_dir DIR, got neither", "dataset_name", "train_data_dir")
    metric = options["keep_best_by"]
    if metric is not None and not steps:
        return "keep_best_by", (f"needs --validation_steps N > 0 (expected validation to be on), got "
                                f"--validation_steps {steps}", "validation_steps")
    if metric == "fd" and not builtin:
        return "keep_best_by", (f"fd needs a built-in dataset (digits or mnist-5k, whose classifier measures samples); "
                                f"expected reconstruction_mse or neg_elbo with {data}", "dataset_name",
                                "train_data_dir")
    return None

