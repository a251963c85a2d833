"""Configuration files of `asintrovae-train --config`: YAML or JSON, keys named as the flags, checked key by key.

A file is a mapping `{flag name: value}` (`learning_rate: 2.0e-4`, `block_out_channels: [64, 128]`,
`use_ema: false`), the flat view [`TrainingConfig.options`] gives; flags given on the command line override it. A
name without a path and suffix (`--config mnist`) is one of the configurations shipped in the package
(`asintrovae_hf/configs/*.yaml`, [`named_configs`]). Every run writes its resolved configuration to
`OUTPUT_DIR/config.yaml` (and into `train_summary.json`, which `--config` also reads), and feeding it back replays
the run. A key that is not an option, a value of the wrong type or out of range is refused in one line that names
the file, the key, what was expected and what was given.
"""

import argparse
import difflib
import json
import os
from typing import Any, Dict, Optional, Tuple

from .. import json_io

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
# A configuration is a flat mapping of a hundred options at most: a larger file is not one (and is not parsed).
MAX_CONFIG_BYTES = 1 << 20
# Options a file cannot set: the file itself.
_NOT_IN_FILES = ("help", "config")


class ConfigFileError(ValueError):
    """A configuration file that cannot be read or holds a key or value that is refused (one line)."""


def _configs_dir():
    from importlib.resources import files

    return files("asintrovae_hf") / "configs"


def named_configs() -> Dict[str, str]:
    """`{name: first comment line}` of the configurations shipped in the package."""
    out = {}
    for entry in sorted(_configs_dir().iterdir(), key=lambda e: e.name.rsplit(".", 1)[0]):
        if entry.name.endswith(".yaml"):
            first = entry.read_text(encoding="utf-8").splitlines()[0] if entry.is_file() else ""
            out[entry.name[:-len(".yaml")]] = first.lstrip("# ").strip()
    return out


def read_config_file(spec: str) -> Tuple[Dict[str, Any], str]:
    """
    The mapping in the file (or shipped configuration) `spec` names, and the label errors use for it (the path, or
    `config 'mnist'`). A `train_summary.json` gives its `config` entry.
    """
    is_name = os.sep not in spec and "/" not in spec and not spec.lower().endswith(CONFIG_SUFFIXES)
    if is_name and not os.path.isfile(spec):
        names = named_configs()
        if spec not in names:
            raise ConfigFileError(f"--config {spec!r}: expected a .yaml, .yml or .json file or a shipped configuration "
                                  f"({', '.join(names)}); got neither.")
        label = f"config {spec!r} ({_configs_dir() / (spec + '.yaml')})"
        text, suffix = (_configs_dir() / f"{spec}.yaml").read_text(encoding="utf-8"), ".yaml"
    else:
        label = spec
        try:
            if os.path.isfile(spec) and os.path.getsize(spec) > MAX_CONFIG_BYTES:
                raise ConfigFileError(f"--config {spec!r}: expected at most {MAX_CONFIG_BYTES:,} bytes, got "
                                      f"{os.path.getsize(spec):,} bytes.")
            with open(spec, encoding="utf-8") as f:
                text = f.read(MAX_CONFIG_BYTES + 1)
        except OSError as err:
            raise ConfigFileError(f"--config {spec!r} cannot be read: {err.strerror or err}.") from None
        suffix = os.path.splitext(spec)[1].lower()
    try:
        if suffix == ".json":
            data = json_io.loads(text, label)
        else:
            import yaml

            data = yaml.safe_load(text)
    except ImportError:
        raise ConfigFileError(f"{label}: reading YAML needs PyYAML: pip install pyyaml (or write the file as "
                              f".json).") from None
    except Exception as err:  # yaml.YAMLError, json.JSONDecodeError
        raise ConfigFileError(f"{label}: not valid {'JSON' if suffix == '.json' else 'YAML'}: "
                              f"{' '.join(str(err).split())}") from None
    if data is None:
        data = {}
    if isinstance(data, dict) and "global_step" in data and isinstance(data.get("config"), dict):
        data = data["config"]  # a train_summary.json: its resolved configuration
    if not isinstance(data, dict):
        raise ConfigFileError(f"{label}: expected a mapping of option names to values, got {type(data).__name__}.")
    return data, label


def _option_actions(parser: argparse.ArgumentParser) -> Dict[str, argparse.Action]:
    """Every name a file may use for an option: its destination and its long flags without dashes."""
    actions = {}
    for action in parser._actions:
        if action.dest in _NOT_IN_FILES:
            continue
        actions[action.dest] = action
        for flag in action.option_strings:
            if flag.startswith("--") and not flag.startswith("--no-"):
                actions.setdefault(flag[2:], action)
    return actions


def _describe(value: Any) -> str:
    return f"{value!r} ({'null' if value is None else type(value).__name__})"


def _convert(action: argparse.Action, value: Any) -> Any:
    """The value an option takes from a file; raises `ValueError("expected ...")`."""
    if value is None:
        if action.default is None:
            return None
        raise ValueError("expected a value, got null")
    if action.nargs == 0:  # --flag / --no-flag and store_true options
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {_describe(value)}")
        return value
    kind = action.type
    if kind is float:
        if isinstance(value, str):  # YAML reads `2e-4` (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"expected a number, got {_describe(value)}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a number, got {_describe(value)}")
        value = float(value)
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {_describe(value)}")
    elif kind is None or kind is str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {_describe(value)}")
    else:  # a converter such as the comma-separated channel lists: a list, a single value or the flag's text
        if isinstance(value, (list, tuple)):
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise ValueError(f"expected a list of integers, got {_describe(value)}")
            text = ",".join(map(str, value))
        elif isinstance(value, int) and not isinstance(value, bool):
            text = str(value)
        elif isinstance(value, str):
            text = value
        else:
            raise ValueError(f"expected a list of integers, got {_describe(value)}")
        try:
            value = kind(text)
        except (argparse.ArgumentTypeError, ValueError) as err:
            raise ValueError(str(err)) from None
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"expected one of {', '.join(map(str, action.choices))}; got {_describe(value)}")
    return value


def config_values(parser: argparse.ArgumentParser, data: Dict[str, Any], label: str) -> Dict[str, Any]:
    """`{destination: value}` of a file's mapping, each key and value checked against the parser's options."""
    actions = _option_actions(parser)
    values = {}
    for key, value in data.items():
        if not isinstance(key, str) or key not in actions:
            close = difflib.get_close_matches(str(key), list(actions), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            if key == "config":
                raise ConfigFileError(f"{label}: key 'config': a configuration file cannot name another; expected "
                                      f"the options themselves.")
            raise ConfigFileError(f"{label}: unknown key {key!r}: expected an option of asintrovae-train --help"
                                  f"{hint}.")
        action = actions[key]
        if action.dest in values:
            raise ConfigFileError(f"{label}: key {key!r}: {action.dest!r} is given twice.")
        try:
            values[action.dest] = _convert(action, value)
        except ValueError as err:
            raise ConfigFileError(f"{label}: key {key!r}: {err}.") from None
    return values


def resolved_config(options: Dict[str, Any]) -> Dict[str, Any]:
    """The options as values a file holds (tuples as lists), the Hub token left out."""
    out = {}
    for key, value in options.items():
        if key == "hub_token":
            continue
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def write_config(options: Dict[str, Any], path: str, header: Optional[str] = None) -> None:
    """Write `options` as YAML (JSON where the path ends in .json), so that `--config path` reads them back."""
    data = resolved_config(options)
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            if path.endswith(".json"):
                json.dump(data, f, indent=2)
                f.write("\n")
            else:
                import yaml

                if header:
                    f.write("".join(f"# {line}\n" for line in header.splitlines()))
                yaml.safe_dump(data, f, sort_keys=False, default_flow_style=None)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):  # a write cut short (a full disk): no partial file is left behind
            os.remove(tmp)
        raise
