"""The objective's options, in one place: [`ObjectiveConfig`], its named presets, its command-line flags and the
training schedule (plain-VAE warm-up, then the weight `c(i)`).

Every entry point (the training script, the toy benchmark, Python) builds its objective from an `ObjectiveConfig`;
the command-line flags are generated from the dataclass fields (name, type, default, choices, and the help text from
the class docstring), so a new option is written once.
"""

import argparse
import dataclasses
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, NamedTuple, Optional

from .registry import get_objective, objective_names

# The built-in objectives. What is registered (`registry.objective_names()`) is what the package accepts.
OBJECTIVES = ("as-introvae", "soft-introvae", "introvae", "vae")
REDUCTIONS = ("sum", "mean")
LOSS_TYPES = ("mse", "l1", "bce")
SCHEDULES = ("linear", "tanh")


def weight_schedule(step: int, total_steps: int, schedule: str = "tanh") -> float:
    """
    The AS-IntroVAE weight `c(i) = min(f(5 i / T), 1)`, with `f` the identity (`"linear"`, the paper) or `tanh`
    (`"tanh"`, the reference code). `c` moves the adversarial signal from the AS-Distance to the KL divergence.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}.")
    if total_steps <= 0:
        return 1.0
    t = 5.0 * step / total_steps
    return min(math.tanh(t) if schedule == "tanh" else t, 1.0)


class Phase(NamedTuple):
    """Where a training step stands: `vae` (a plain-VAE step) and the weight `c` the objective uses."""

    vae: bool
    c: float


@dataclass(frozen=True)
class ObjectiveConfig:
    r"""
    Hyper-parameters of the objectives.

    Args:
        objective (`str`, defaults to `"as-introvae"`): A registered objective: `as-introvae`, `soft-introvae`,
            `introvae`, `vae` or one registered with `register_objective`.
        beta_rec (`float`, defaults to 1.0): Weight of the reconstruction error.
        beta_kl (`float`, defaults to 1.0): Weight of the KL divergence of real data.
        beta_neg (`float`, defaults to 256.0): Weight of the adversarial (negative) terms.
        gamma_r (`float`, defaults to 1e-8): Weight of the reconstruction of reconstructed and fake data in the
            decoder loss.
        margin (`float`, defaults to 10.0): IntroVAE's hinge margin m.
        loss_type (`str`, defaults to `"mse"`): Reconstruction error: `mse`, `l1` or `bce`.
        num_vae_steps (`int`, defaults to 0): Plain-VAE warm-up steps before the adversarial phase; `c(i)` counts
            the adversarial steps only.
        schedule (`str`, defaults to `"linear"`): Schedule of `c(i)`: `linear` (paper) or `tanh` (reference code).
        squash (`bool`, defaults to `False`): AS-IntroVAE only: pass mu and logvar of reconstructed and fake data
            through tanh before the AS-Distance and the decoder step's KL terms (reference code; the paper does not).
            The defaults of `schedule` and `squash` are the paper's, which did best here (`docs/results.md`); the
            `reference` preset restores the reference code's.
        encoder_reduction (`str`, defaults to `"sum"`): AS-Distance reduction in the encoder step: `sum` (reference
            code) or `mean`.
        decoder_reduction (`str`, defaults to `"mean"`): AS-Distance reduction in the decoder step.
        dis_scale (`float`, defaults to 1.0): Factor on the AS-Distance in both steps.
        include_constant (`bool`, defaults to `False`): Include the kernel's (2 pi)^(-1/2) (the paper) or not (the
            reference code).
        detach_rec_target (`bool`, defaults to `True`): In the encoder step, compare the reconstruction of `rec`
            with `rec.detach()` (`docs/algorithm.md`, Eq. 15); `False` keeps `rec` attached, as the reference code does, so the
            encoder also gets gradient through `rec = G(z)` in that term.
    """

    objective: str = field(default="as-introvae", metadata={"choices": objective_names})
    beta_rec: float = 1.0
    beta_kl: float = 1.0
    beta_neg: float = 256.0
    gamma_r: float = 1e-8
    margin: float = 10.0
    loss_type: str = field(default="mse", metadata={"choices": LOSS_TYPES})
    num_vae_steps: int = 0
    schedule: str = field(default="linear", metadata={"choices": SCHEDULES})
    squash: bool = False
    encoder_reduction: str = field(default="sum", metadata={"choices": REDUCTIONS})
    decoder_reduction: str = field(default="mean", metadata={"choices": REDUCTIONS})
    dis_scale: float = 1.0
    include_constant: bool = False
    detach_rec_target: bool = True

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            choices = _choices(f)
            if choices is not None and value not in choices:
                raise ValueError(f"{f.name} must be one of {choices}, got {value!r}.")
            expected = {float: (int, float), int: (int,), bool: (bool,)}.get(f.type)
            if expected and (not isinstance(value, expected) or (f.type is not bool and isinstance(value, bool))):
                raise ValueError(f"{f.name} must be a {f.type.__name__}; got {value!r} ({type(value).__name__}).")
            if f.type is float:
                if not math.isfinite(value):
                    raise ValueError(f"{f.name} must be a finite number; got {value!r}.")
                object.__setattr__(self, f.name, float(value))  # frozen: the coercion is part of building it
        for name in ("beta_rec", "beta_kl", "beta_neg", "gamma_r", "margin", "dis_scale", "num_vae_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)!r}.")

    def to_dict(self) -> Dict:
        return asdict(self)

    @property
    def uses_c(self) -> bool:
        """Whether the objective weighs its terms with `c(i)` (only AS-IntroVAE of the built-in ones)."""
        return get_objective(self.objective).uses_c

    def phase(self, step: int, total_steps: int) -> Phase:
        """The phase of training step `step` of `total_steps`, as the objective schedules it
        ([`IntrospectiveObjective.phase`])."""
        return get_objective(self.objective)(self).phase(step, total_steps)

    # ---- presets ---------------------------------------------------------------------------------------------

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> "ObjectiveConfig":
        r"""
        A configuration from a named preset of the AS-IntroVAE switches ([`PRESETS`]), with `overrides` on top.

        Args:
            preset (`str`): `"reference"` (the authors' code) or `"recommended"` (this package's defaults, chosen on
                the measurements in `docs/results.md`).
            overrides: Any field of `ObjectiveConfig`.
        """
        if preset not in PRESETS:
            raise ValueError(f"Unknown objective preset {preset!r}; choose one of {', '.join(PRESETS)}.")
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"Unknown objective option(s) {unknown}; valid: {', '.join(option_names())}.")
        return cls(**{**PRESETS[preset], **overrides})

    # ---- command line ----------------------------------------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser, defaults: Optional[Dict] = None, exclude: Iterable[str] = ()) -> None:
        r"""
        Add a flag per field (`--beta_neg`, `--squash/--no-squash`, ...) and `--preset` to `parser`.

        Every flag defaults to `None` ("not given"), so [`from_namespace`] can tell the user's choices from the
        preset's values; the help shows the default that applies (`defaults` or the preset's).

        Args:
            parser (`argparse.ArgumentParser`): The parser (or an argument group).
            defaults (`Dict`, *optional*): Defaults to show in the help instead of the recommended preset's, e.g.
                per-dataset values.
            exclude (`Iterable[str]`, *optional*): Fields that get no flag (the caller sets them).
        """
        helps = _field_help(cls)
        shown = {**PRESETS["recommended"], **(defaults or {})}
        parser.add_argument("--preset", type=str, default=None, choices=tuple(PRESETS),
                            help="Objective preset: 'reference' (the authors' code) or 'recommended' (the default); "
                                 "flags below override it.")
        for f in dataclasses.fields(cls):
            if f.name in exclude:
                continue
            default_text = f"default: {shown.get(f.name, f.default)}"
            text = f"{helps.get(f.name, '')} ({default_text})".replace("%", "%%")
            if f.type is bool:
                parser.add_argument(f"--{f.name}", action=argparse.BooleanOptionalAction, default=None, help=text)
            else:
                parser.add_argument(f"--{f.name}", type=f.type, default=None, choices=_choices(f), help=text,
                                    metavar=None if "choices" in f.metadata else f.type.__name__.upper())

    @classmethod
    def from_namespace(cls, args: argparse.Namespace, defaults: Optional[Dict] = None) -> "ObjectiveConfig":
        r"""
        The configuration the parsed flags describe: the preset (`--preset`, `"recommended"` when not given), then
        `defaults` (e.g. per-dataset values), then every flag the user gave.
        """
        given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
                 if getattr(args, f.name, None) is not None}
        return cls.from_preset(getattr(args, "preset", None) or "recommended", **{**(defaults or {}), **given})


# The AS-IntroVAE switches of each preset; the betas depend on the data and are set per dataset.
PRESETS: Dict[str, Dict] = {
    "reference": dict(schedule="tanh", squash=True, encoder_reduction="sum", decoder_reduction="mean",
                      dis_scale=1.0, include_constant=False, detach_rec_target=False),
    "recommended": {f.name: f.default for f in dataclasses.fields(ObjectiveConfig)
                    if f.name in ("schedule", "squash", "encoder_reduction", "decoder_reduction", "dis_scale",
                                  "include_constant", "detach_rec_target")},
}


def _choices(f: dataclasses.Field) -> Optional[tuple]:
    """The field's choices now: the objectives are read from the registry when a config or a parser is built."""
    choices = f.metadata.get("choices")
    return tuple(choices() if callable(choices) else choices) if choices is not None else None


def option_names() -> Iterable[str]:
    return [f.name for f in dataclasses.fields(ObjectiveConfig)]


def _field_help(cls) -> Dict[str, str]:
    """`name -> text` from the `Args:` section of the class docstring (continuation lines joined)."""
    helps, current = {}, None
    for line in (cls.__doc__ or "").split("Args:", 1)[-1].splitlines():
        match = re.match(r"^\s{8}(\w+) \([^)]*\): (.*)$", line)
        if match:
            current = match.group(1)
            helps[current] = match.group(2).strip()
        elif current and line.strip():
            helps[current] += " " + line.strip()
    return helps
