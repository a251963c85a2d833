# Generated from the `asintrovae_hf.json_io`, `asintrovae_hf.models.loading`, `asintrovae_hf.models.blocks`, `asintrovae_hf.models.autoencoder_image` and `asintrovae_hf.models.autoencoder_vector` modules when this pipeline was saved; the package is the source, do not edit.
"""The one reader of every JSON file this package reads: checkpoint states, `model_index.json`, model configurations,
run records, score files.

Python's `json` module parses arrays and objects recursively, so a file nested a few thousand levels deep ends in a
`RecursionError` (a traceback, not a message), and it reads any size it is given. [`read_json`] and [`loads`] refuse,
before parsing, a file larger than `max_bytes`, anything that is not a regular file (a FIFO would block the read) and
text nested deeper than `max_depth`; every refusal is a [`JsonFileError`] (a `ValueError`) of one line that names the
file, what was expected and what was found.

This module is also bundled into every code file of a saved pipeline (`pipelines/remote_code.py`), so that a pipeline
loaded without the package reads its JSON files with the same limits: it imports only the standard library.
"""

import json
import os
import re
from typing import Any, Iterator, Optional, Tuple

MAX_BYTES = 16 * 1024 * 1024  # the largest JSON file the package writes is a run's records: a few hundred KiB
MAX_DEPTH = 32  # the deepest file the package writes (a training state, a model card's record) is 4 levels deep

# A JSON string (the only place where brackets do not nest), and the brackets outside strings.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKETS = re.compile(r"[\[\]{}]")


class JsonFileError(ValueError):
    """A JSON file that is too large, too deeply nested, not a regular file, or not valid JSON."""


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in `text` (brackets inside strings not counted); linear, no
    recursion."""
    depth = deepest = 0
    for match in _BRACKETS.finditer(_STRING.sub('""', text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def loads(text, where: str = "JSON text", max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH,
          expect: Optional[type] = None) -> Any:
    """
    `json.loads(text)` within the limits: `text` (str or bytes) of at most `max_bytes` bytes, nested at most
    `max_depth` deep, and of type `expect` when given (e.g. `dict`); otherwise a one-line [`JsonFileError`] starting
    with `where`.
    """
    size = len(text.encode("utf-8") if isinstance(text, str) else text)
    if size > max_bytes:
        raise JsonFileError(f"{where}: expected at most {max_bytes:,} bytes of JSON, got {size:,} bytes.")
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as err:
            raise JsonFileError(f"{where}: expected UTF-8 JSON text, got undecodable bytes ({err.reason} at byte "
                                f"{err.start}).") from None
    depth = nesting_depth(text)
    if depth > max_depth:
        raise JsonFileError(f"{where}: expected JSON nested at most {max_depth} levels deep, got {depth:,} levels; "
                            f"not parsed.")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError
        raise JsonFileError(f"{where}: expected valid JSON, got {type(err).__name__}: "
                            f"{' '.join(str(err).split())[:200]}.") from None
    if expect is not None and not isinstance(value, expect):
        raise JsonFileError(f"{where}: expected a JSON {_kind(expect)}, got a JSON {_kind(type(value))}.")
    return value


def read_json(path, what: Optional[str] = None, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH,
              expect: Optional[type] = None) -> Any:
    """
    Read the JSON file `path` through [`loads`]'s limits. It must be a regular file (a symlink to one is followed, as
    in the Hub cache); `what` names it in messages (default: the path). A missing file raises `FileNotFoundError`,
    as `open` does; every other refusal is a [`JsonFileError`].
    """
    path = os.fspath(path)
    where = what or path
    if os.path.exists(path) and not os.path.isfile(path):
        raise JsonFileError(f"{where}: expected a regular file, got a folder or a special file (FIFO, device or "
                            f"socket).")
    size = os.path.getsize(path)
    if size > max_bytes:
        raise JsonFileError(f"{where}: expected at most {max_bytes:,} bytes of JSON, got {size:,} bytes.")
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)  # the file may have grown since it was measured
    return loads(data, where, max_bytes, max_depth, expect)


def read_json_lines(path, what: Optional[str] = None, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH,
                    skip_invalid: bool = True) -> Iterator[Tuple[int, Any]]:
    """
    `(line number, value)` for each non-empty line of the JSON Lines file `path` (a file of at most `max_bytes`, each
    line within `max_depth`). With `skip_invalid`, a line that is not valid JSON (the torn last line of a killed
    writer) is skipped; a line nested too deep is always refused.
    """
    path = os.fspath(path)
    where = what or path
    if not os.path.isfile(path):
        raise JsonFileError(f"{where}: expected a regular file, got a folder or a special file.")
    size = os.path.getsize(path)
    if size > max_bytes:
        raise JsonFileError(f"{where}: expected at most {max_bytes:,} bytes of JSON lines, got {size:,} bytes.")
    with open(path, "rb") as f:
        lines = f.read(max_bytes + 1).splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield number, loads(line, f"{where} line {number}", max_bytes, max_depth)
        except JsonFileError as err:
            if not skip_invalid or "expected valid JSON" not in str(err):
                raise


def _kind(t: type) -> str:
    return {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean",
            type(None): "null"}.get(t, t.__name__)


"""
The loading policy of the networks: what a `config.json` or a weight file may ask for, and strict loading.

[`CheckedLoading`], a mixin before diffusers' `ModelMixin`, reads `config.json` through the package's JSON reader,
refuses symlinks, special files and oversized weight files in a local folder, and refuses weights that do not fill the
model exactly; [`_LoadsNamesOf0_2_0`] loads the conv models' weights saved by 0.2.0. The networks' configurations are
checked here too (types, sizes, the limits below) before anything is allocated.

This module is bundled into the models' file of every saved pipeline (`pipelines/remote_code.py`), after
`json_io.py`: it imports from this package only with single-line `from ..json_io import <names>` statements.
"""

import functools
import importlib
import inspect
import math
import os
from typing import Optional, Sequence

import torch
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import logging as diffusers_logging


_logger = diffusers_logging.get_logger(__name__)

# ---- what a configuration or a weight file may ask for, and strict loading ----------------------------------------
# A `config.json` or a weight file is data from somewhere else: its sizes are checked arithmetically before anything is
# allocated, and loading refuses weights that do not fill the model exactly (diffusers only warns and leaves the rest
# at random). The limits are far above any introspective VAE: Soft-IntroVAE's 256x256 and 1024x1024 configurations have
# under 3 x 10^7 parameters per network and at most 1.7 x 10^7 values in a feature map (`conv_model_size`).
MAX_PARAMETERS = 10**9
MAX_ACTIVATION_VALUES = 2**30  # values in the largest feature map of one image
MAX_LAYERS = 64  # entries of block_out_channels / hidden_dims
MAX_CONFIG_BYTES = 64 * 1024  # a config.json of these models is under 1 KiB
MAX_WEIGHT_BYTES = 8 * MAX_PARAMETERS  # declared tensor bytes of one weight file (float64 at the parameter limit)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def _brief(value, limit: int = 80) -> str:
    """`repr(value)`, cut to `limit` characters: messages quote what was given without growing with it."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _figure(n: int) -> str:
    """An integer for a message: `1,234,567`, or its order of magnitude when it is absurdly long."""
    if n < 10**15:
        return f"{n:,}"
    exponent = int(math.log10(n))  # not len(str(n)): Python limits the digits of such conversions
    exponent += 1 if 10 ** (exponent + 1) <= n else -1 if 10**exponent > n else 0
    return f"about 10^{exponent}"


def supported_sample_sizes(block_out_channels: Sequence[int], max_size: int = 1024) -> list:
    """Image sizes the conv nets accept: multiples of `2 ** len(block_out_channels)` (one halving per block)."""
    factor = 2 ** len(block_out_channels)
    return list(range(factor, max_size + 1, factor))


class InvalidConfigError(ValueError):
    """A model configuration the networks cannot be built from (an argument of the wrong type or size)."""


def check_config(model: str, **values) -> None:
    """
    Raise an [`InvalidConfigError`] naming the model and the argument when a size is not a positive integer (a `config.json`
    edited by hand, `"latent_dim": "eight"`) or `block_out_channels` is not a non-empty list of them.
    """
    for name, value in values.items():
        items = value if name in ("block_out_channels", "hidden_dims") else [value]
        ok = isinstance(items, (list, tuple)) and (len(items) > 0 or name == "hidden_dims")
        ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in items)
        if not ok:
            kind = "a non-empty list of positive integers" if name == "block_out_channels" else (
                "a list of positive integers" if name == "hidden_dims" else "a positive integer")
            raise InvalidConfigError(f"{model}: {name} must be {kind}, got {_brief(value)} ({type(value).__name__}).")


def check_sample_size(sample_size: int, block_out_channels: Sequence[int]) -> None:
    """Raise an [`InvalidConfigError`] naming the valid sizes when `sample_size` does not fit `block_out_channels`."""
    factor = 2 ** len(block_out_channels)
    if not isinstance(sample_size, int) or sample_size < factor or sample_size % factor != 0:
        sizes = supported_sample_sizes(block_out_channels, max_size=max(256, 4 * factor))
        raise InvalidConfigError(
            f"sample_size={_brief(sample_size)} does not fit block_out_channels={_brief(tuple(block_out_channels))}: "
            f"each of the "
            f"{len(block_out_channels)} blocks halves the image, so the size must be a multiple of {factor} "
            f"(for example {', '.join(str(s) for s in sizes[:8])}, ...)."
        )


def check_model_size(model: str, layers: Sequence[int], sizes) -> None:
    """
    Raise an [`InvalidConfigError`] (one line, the figure and the limit) for a configuration beyond the limits
    above; `layers` is `block_out_channels` or `hidden_dims`, `sizes` a function returning `(parameters, largest
    feature map)`.
    """
    if len(layers) > MAX_LAYERS:
        raise InvalidConfigError(f"{model}: {len(layers)} entries in block_out_channels / hidden_dims; the limit "
                                 f"is {MAX_LAYERS}.")
    parameters, activation = sizes()
    if parameters > MAX_PARAMETERS:
        raise InvalidConfigError(f"{model}: this configuration has {_figure(parameters)} parameters; the limit is "
                                 f"{_figure(MAX_PARAMETERS)} (check latent_dim, sample_size, block_out_channels or "
                                 f"hidden_dims).")
    if activation > MAX_ACTIVATION_VALUES:
        raise InvalidConfigError(f"{model}: this configuration's largest feature map holds {_figure(activation)} "
                                 f"values per image; the limit is {_figure(MAX_ACTIVATION_VALUES)} (check sample_size "
                                 f"and block_out_channels).")


def _hub_cache_blobs(root: str) -> Optional[str]:
    """
    The `blobs/` folder of the Hub cache repo that `root` lies in (`.../models--owner--name/snapshots/<commit>/...`),
    or `None`. The cache's snapshots are made of symlinks into it, by design.
    """
    parts = os.path.abspath(root).split(os.sep)
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] == "snapshots":
            blobs = os.sep.join(parts[:i] + ["blobs"])
            return blobs if os.path.isdir(blobs) and not os.path.islink(blobs) else None
    return None


def _is_plain(path: str, folder: bool = False, blobs: Optional[str] = None) -> bool:
    """
    A real file (or folder): not a symlink, not a FIFO, device or socket (reading one of those can hang). In the Hub
    cache (`blobs`), a file may be the cache's own symlink to a regular file in its `blobs/` folder.
    """
    if blobs and not folder and os.path.islink(path):
        target = os.path.realpath(path)
        return os.path.dirname(target) == os.path.realpath(blobs) and os.path.isfile(target)
    return not os.path.islink(path) and (os.path.isdir(path) if folder else os.path.isfile(path))


def check_plain_tree(root: str, what: str) -> None:
    """Raise a `ValueError` naming the first symlink or special file under `root` (`root` itself included)."""
    blobs = _hub_cache_blobs(root)
    if not _is_plain(root, folder=True):
        raise ValueError(f"{what}: {root!r} must be a real folder, not a symlink or special file.")
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            if not _is_plain(path, folder=name in dirs, blobs=blobs):
                kind = "symlink" if os.path.islink(path) else "special file (FIFO, device or socket)"
                raise ValueError(f"{what}: {os.path.relpath(path, root)!r} in {root!r} is a {kind}; expected only "
                                 f"regular files and folders.")


def declared_tensor_bytes(path: str) -> Optional[int]:
    """
    The bytes of tensor data a weight file declares, read without loading a tensor: a safetensors header (shapes and
    dtypes), or the uncompressed sizes of the entries of a torch zip archive (what `torch.load` would inflate).
    `None` for another format.
    """
    if path.endswith(".safetensors"):
        return sum(math.prod(shape) * dtype.itemsize for shape, dtype in _header_entries(path).values())
    # zipfile and safetensors through importlib: the shipped copy of this file may import only the modules
    # test_shipped_modules_import_only_what_a_machine_without_the_plugin_has lists (both are on any diffusers machine)
    zipfile = importlib.import_module("zipfile")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return sum(info.file_size for info in archive.infolist())
    return None


_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn,
                       "F8_E5M2": torch.float8_e5m2, "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64}


def _header_entries(path: str) -> dict:
    """`{key: (shape, dtype)}` from a safetensors header, read with `safe_open` (no tensor is loaded); a dtype this
    table does not know counts as 8-byte integers (refused where the model wants floating point)."""
    safe_open = importlib.import_module("safetensors").safe_open
    entries = {}
    with safe_open(path, framework="pt") as f:
        for key in f.keys():
            tensor = f.get_slice(key)
            entries[key] = (tuple(tensor.get_shape()), _SAFETENSORS_DTYPES.get(tensor.get_dtype(), torch.int64))
    return entries


def check_weight_file(path: str, what: str = "weight file") -> None:
    """Refuse a weight file whose declared tensors exceed `MAX_WEIGHT_BYTES`, or a torch archive declaring more data
    than the file holds (compressed entries: torch.save never compresses, an inflating archive is a bomb)."""
    try:
        declared = declared_tensor_bytes(path)
    except Exception as err:  # safetensors and zipfile raise their own types for a damaged header
        raise ValueError(f"{what} {path!r} cannot be loaded: its header is unreadable ({type(err).__name__}: "
                         f"{_brief(' '.join(str(err).split()), 200)}).") from None
    if declared is None:
        return
    size = os.path.getsize(path)
    if declared > MAX_WEIGHT_BYTES or (not path.endswith(".safetensors") and declared > size):
        raise ValueError(f"{what} {path!r} declares {_figure(declared)} bytes of tensor data in a file of "
                         f"{_figure(size)} bytes; expected at most {_figure(min(MAX_WEIGHT_BYTES, size))} "
                         f"(refusing to inflate it).")


def _check_weights(model_cls, model, loaded: dict, files: Sequence[str]) -> None:
    """
    The loaded tensors (or their safetensors header entries), `{key: (shape, dtype, file)}`, against the model's state
    dict: the same keys, the same shapes, and floating-point data where the model has floating-point tensors (integer
    counters stay integers). `files` are the weight files, named for a missing key.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(loaded))
    unexpected = sorted(set(loaded) - set(expected))
    name = model_cls.__name__
    more = lambda keys: f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""  # noqa: E731
    if missing:
        where = files[0] + (f" (and {len(files) - 1} other shards)" if len(files) > 1 else "") if files else name
        raise ValueError(f"{where}: the weights lack {_brief(missing[0])}{more(missing)}, which {name} needs; expected "
                         f"exactly the model's {len(expected)} tensors (weights and BatchNorm buffers).")
    if unexpected:
        file = loaded[unexpected[0]][2]
        raise ValueError(f"{file}: unexpected tensor {_brief(unexpected[0])}{more(unexpected)}, which {name} does not "
                         f"have; expected exactly the model's {len(expected)} tensors.")
    for key, target in expected.items():
        shape, dtype, file = loaded[key]
        if tuple(shape) != tuple(target.shape):
            raise ValueError(f"{file}: {key!r} has shape {_brief(tuple(shape))}; {name} expects "
                             f"{tuple(target.shape)}.")
        floating = dtype.is_floating_point
        if floating != target.dtype.is_floating_point or dtype == torch.bool:
            raise ValueError(f"{file}: {key!r} holds {dtype}; {name} expects "
                             f"{'floating-point' if target.dtype.is_floating_point else 'integer'} values "
                             f"({target.dtype}).")


# ---- the parameter names of 0.2.0 ----------------------------------------------------------------------------------
# Until 0.2.0 each conv model kept its layers in one `nn.Sequential`, `conv`; a pipeline saved then names its weights
# so. They load under today's names, before `CheckedLoading` checks them (`_fix_state_dict_keys_on_load` is where
# diffusers renames a model's old weight names). With `n = len(block_out_channels)`:
#
#   encoder `conv.0.*` (5x5 conv) -> `conv_in.*`;  `conv.1.*` (BatchNorm) -> `norm_in.*`;
#           `conv.{4 + 2 j}.*` (residual block j, j < n) -> `down_blocks.{j}.resnet.*`
#   decoder `conv.{2 k}.*` (residual block k, k <= n) -> `up_blocks.{k}.resnet.*`;  `conv.{2 n + 1}.*` -> `conv_out.*`
#
# (the odd entries were the parameter-free AvgPool / Upsample / LeakyReLU layers). A name outside this table, or one
# whose new name the weights also hold, is left as it is, and refused as unexpected.


def _rename_0_2_0_weights(model, state_dict: dict, prefix: str = "") -> dict:
    """Rename, in place and in order, the keys of `state_dict` (under `prefix`) that `model` named so in 0.2.0."""
    old_prefixes = model._prefixes_of_0_2_0()
    renamed = {}
    for key in list(state_dict):
        head = ".".join(key[len(prefix):].split(".")[:2]) + "."
        if key.startswith(prefix) and head in old_prefixes:
            new = prefix + old_prefixes[head] + key[len(prefix) + len(head):]
            renamed[key] = new if new not in state_dict else key
    for key in list(state_dict):
        value = state_dict.pop(key)
        state_dict[renamed.get(key, key)] = value
    return state_dict


def _load_state_dict_pre_hook(model, state_dict, prefix, *args) -> None:
    """`model.load_state_dict(...)` of weights with 0.2.0's names (a torch load-state-dict pre-hook)."""
    _rename_0_2_0_weights(model, state_dict, prefix)


class _LoadsNamesOf0_2_0:
    """For the conv models: weights saved with 0.2.0's names (the table above) load under today's, in diffusers'
    `from_pretrained` (one weight file: `_fix_state_dict_keys_on_load`; shards: [`CheckedLoading`]) and in
    `load_state_dict`. The class names its old prefixes in `_prefixes_of_0_2_0`."""

    def _register_0_2_0_names(self) -> None:
        self._register_load_state_dict_pre_hook(_load_state_dict_pre_hook, with_module=True)

    def _prefixes_of_0_2_0(self) -> dict:
        raise NotImplementedError

    def _fix_state_dict_keys_on_load(self, state_dict):
        state_dict = super()._fix_state_dict_keys_on_load(state_dict) or state_dict
        return _rename_0_2_0_weights(self, state_dict)


class CheckedLoading:
    """
    Strict `from_pretrained` for this package's models (a mixin before `ModelMixin`). Every argument goes to diffusers
    unchanged; on top:

    - `config.json` must be a regular file of at most `MAX_CONFIG_BYTES` holding a JSON object;
    - a local folder must hold only regular files and folders (no symlink, FIFO, device or socket), and its weight
      files must declare sizes within the limits, read from their headers before any tensor is loaded;
    - the weights must fill the model exactly: no missing or unexpected key (BatchNorm buffers included), the
      model's shapes, and floating-point values for floating-point tensors. diffusers only warns about these and
      leaves the rest of the model at random.

    Each refusal is a `ValueError` of one line naming the file and the key; a configuration the networks cannot be
    built from is an [`InvalidConfigError`] naming its `config.json`.
    """

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        path = args[0] if args else kwargs.get("pretrained_model_name_or_path")
        if isinstance(path, (str, os.PathLike)) and os.path.isdir(path):
            _check_local_folder(cls.__name__, os.fspath(path), kwargs.get("subfolder"))
        try:
            return super().from_pretrained(*args, **kwargs)
        except InvalidConfigError as err:
            where = os.path.join(str(path), kwargs.get("subfolder") or "", "config.json")
            raise InvalidConfigError(f"{where} cannot be used: {err}") from None

    @functools.wraps(ModelMixin.save_pretrained)  # diffusers' pipeline passes `variant` etc. by this signature
    def save_pretrained(self, save_directory, *args, **kwargs):
        """diffusers' own, after removing a symlink or special file where it writes `config.json` or the weights:
        they are replaced, never written through (a link pointing outside the folder stays untouched)."""
        if os.path.isdir(save_directory):
            for name in os.listdir(save_directory):
                path = os.path.join(save_directory, name)
                ours = name == self.config_name or name.startswith("diffusion_pytorch_model")
                if ours and (os.path.islink(path) or not (os.path.isfile(path) or os.path.isdir(path))):
                    os.remove(path)
        return super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def _dict_from_json_file(cls, json_file, *args, **kwargs):
        if not os.path.isfile(json_file):  # follows the Hub cache's symlinks; refuses FIFOs and devices
            raise ValueError(f"{cls.__name__}: {json_file}: expected a regular config file, got a special file "
                             f"(FIFO, device or socket).")
        size = os.path.getsize(json_file)
        if size > MAX_CONFIG_BYTES:
            raise ValueError(f"{cls.__name__}: {json_file}: expected a config of at most {_figure(MAX_CONFIG_BYTES)} "
                             f"bytes, got {_figure(size)} bytes.")
        try:
            config = read_json(json_file, f"{cls.__name__}: {json_file}", max_bytes=MAX_CONFIG_BYTES)
        except JsonFileError as err:
            raise ValueError(str(err)) from None  # diffusers reports a ValueError of a config as it is
        if not isinstance(config, dict):
            raise ValueError(f"{cls.__name__}: {json_file}: expected a JSON object of options, got a JSON "
                             f"{type(config).__name__}.")
        return config

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        """diffusers' own, with one bounded warning for options this class does not take (diffusers' warning quotes
        them whole: megabytes for a hostile config); they are ignored, as diffusers does."""
        expected = set(inspect.signature(cls.__init__).parameters) - {"self"}
        unknown = [k for k in config_dict if k not in expected and not str(k).startswith("_") and k not in kwargs
                   and k != "quantization_config"]
        if unknown:
            _logger.warning("%s ignores %d unknown config option(s): %s", cls.__name__, len(unknown),
                            _brief(sorted(map(str, unknown))[:5], 200))
            config_dict = {k: v for k, v in config_dict.items() if k not in unknown}
        return super().extract_init_dict(config_dict, **kwargs)

    @classmethod
    def _load_pretrained_model(cls, model, state_dict, resolved_model_file, *args, **kwargs):
        # diffusers' step between reading the weights and putting them into the model (`state_dict` when one file
        # was read, `None` for shards, read here from their headers)
        files = [os.fspath(f) for f in resolved_model_file if isinstance(f, (str, os.PathLike))]
        if isinstance(model, _LoadsNamesOf0_2_0):
            state_dict, args, kwargs = _rename_0_2_0_on_load(model, state_dict, files, args, kwargs)
        loaded = None
        if state_dict is not None:
            file = files[0] if files else cls.__name__
            loaded = {k: (tuple(v.shape), v.dtype, file) for k, v in state_dict.items()}
        elif files and all(f.endswith(".safetensors") for f in files):
            loaded = {k: (*entry, f) for f in files for k, entry in _header_entries(f).items()}
        if loaded is not None:
            _check_weights(cls, model, loaded, files)
        return super()._load_pretrained_model(model, state_dict, resolved_model_file, *args, **kwargs)


def _rename_0_2_0_on_load(model, state_dict, files, args, kwargs):
    """
    The 0.2.0 names renamed in `_load_pretrained_model`'s arguments. diffusers renames a single file's keys itself
    (`_fix_state_dict_keys_on_load`), not those of shards: shards holding an old name are read here into one state
    dict (already checked against `MAX_WEIGHT_BYTES`), which diffusers then loads as it loads a single file.
    """
    shards = state_dict is None and files and all(f.endswith(".safetensors") for f in files)
    if shards:
        old = model._prefixes_of_0_2_0()
        names = [k for f in files for k in _header_entries(f)]
        if not any(".".join(k.split(".")[:2]) + "." in old for k in names):
            return state_dict, args, kwargs
        load_file = importlib.import_module("safetensors.torch").load_file
        state_dict = {k: v for f in files for k, v in load_file(f).items()}
    if state_dict is None:
        return state_dict, args, kwargs
    _rename_0_2_0_weights(model, state_dict)  # a single file: already done by diffusers, nothing left to rename
    if "loaded_keys" in kwargs:
        kwargs = {**kwargs, "loaded_keys": list(state_dict)}
    elif len(args) >= 2:  # (pretrained_model_name_or_path, loaded_keys, ...)
        args = (args[0], list(state_dict), *args[2:])
    return state_dict, args, kwargs


def _check_local_folder(name: str, path: str, subfolder: Optional[str]) -> None:
    folder = os.path.join(path, subfolder) if subfolder else path
    if not os.path.exists(folder):
        return  # diffusers says what is missing
    check_plain_tree(folder, f"{name}.from_pretrained")
    index = os.path.join(path, "model_index.json")
    if subfolder and (os.path.lexists(index) and not _is_plain(index, blobs=_hub_cache_blobs(path))):
        raise ValueError(f"{name}.from_pretrained: {index!r} is a symlink or special file; expected a regular file.")
    for root, _, files in os.walk(folder):
        for file in files:
            if file.endswith(WEIGHT_SUFFIXES):
                check_weight_file(os.path.join(root, file))


"""
The building blocks of the conv networks: the residual block (optionally class-conditional), the down and up blocks,
the class embedding, the output activations and gradient checkpointing that keeps BatchNorm statistics exact.

Bundled, after `loading.py`, into the models' code file of every saved pipeline (`pipelines/remote_code.py`).
"""

import contextlib
from typing import Callable, Optional

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn


OUTPUT_ACTIVATIONS = (None, "sigmoid", "tanh")


def _check_class_options(model: str, num_class_embeds, class_embed_dim, block_out_channels) -> Optional[int]:
    """The class embedding size of a class-conditional model (`None` for an unconditional one)."""
    if num_class_embeds is None:
        return None
    check_config(model, num_class_embeds=num_class_embeds)
    if class_embed_dim is not None:
        check_config(model, class_embed_dim=class_embed_dim)
    return class_embed_dim or 4 * block_out_channels[0]


def _class_embedding(model, batch_size: int, class_labels) -> Optional[torch.Tensor]:
    conditioning = getattr(model, "class_conditioning", None)
    if conditioning is None:
        if class_labels is not None:
            raise ValueError(f"{type(model).__name__} is not class-conditional (num_class_embeds is None); got "
                             f"class_labels.")
        return None
    return conditioning(type(model).__name__, batch_size, class_labels)


def _check_output_activation(output_activation: Optional[str]) -> None:
    if output_activation not in OUTPUT_ACTIVATIONS:
        raise InvalidConfigError(f"output_activation must be one of {OUTPUT_ACTIVATIONS}, got {output_activation!r}.")


def _apply_output_activation(x: torch.Tensor, output_activation: Optional[str]) -> torch.Tensor:
    if output_activation == "sigmoid":
        return torch.sigmoid(x)
    if output_activation == "tanh":
        return torch.tanh(x)
    return x


# Nearest 2x upsampling followed by a 3x3 convolution (padding 1) is a stride-2 transposed convolution with a 4x4
# kernel: output row 2i sees input rows i-1 (kernel row 0) and i (rows 1 and 2), output row 2i+1 sees rows i (kernel
# rows 0 and 1) and i+1 (row 2); the same for columns. Tap k of the 4x4 kernel sums the 3x3 kernel's rows marked in
# `_UPSAMPLE_TAPS[k]`. Four taps per output instead of nine, and the upsampled map is never convolved.
_UPSAMPLE_TAPS = ((0.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 0.0))


def upsample_conv3x3(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`conv2d(interpolate(x, scale_factor=2, mode="nearest"), weight, padding=1)` for a `Cout x Cin x 3 x 3` weight,
    computed as one transposed convolution (the same values up to float rounding, 2.25x fewer multiply-adds)."""
    taps = weight.new_tensor(_UPSAMPLE_TAPS)
    kernel = torch.einsum("ah,bw,oihw->ioab", taps, taps, weight)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        kernel = kernel.contiguous(memory_format=torch.channels_last)
    return F.conv_transpose2d(x, kernel, stride=2, padding=1)


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


class ResidualBlock(nn.Module):
    """
    Two 3x3 conv + BatchNorm layers with a LeakyReLU between them and a (projected) skip connection. With
    `embedding_dim`, a class embedding enters as a per-channel bias after the first conv (diffusers' class-conditional
    `ResnetBlock2D` adds its time-and-class embedding the same way).
    """

    def __init__(self, in_channels: int, out_channels: int, embedding_dim: Optional[int] = None):
        super().__init__()
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False) if in_channels != out_channels else None
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(out_channels)
        self.act = nn.LeakyReLU(0.2)
        self.emb_proj = nn.Linear(embedding_dim, out_channels) if embedding_dim else None

    def forward(self, x: torch.Tensor, emb: Optional[torch.Tensor] = None, upsample: bool = False) -> torch.Tensor:
        """With `upsample=True`, the block applied to `x` upsampled 2x (nearest), without convolving the larger map:
        the first conv is [`upsample_conv3x3`], and the 1x1 projection commutes with the upsampling."""
        if upsample:
            identity = _upsample(x if self.skip is None else self.skip(x))
            h = upsample_conv3x3(x, self.conv1.weight)
        else:
            identity = x if self.skip is None else self.skip(x)
            h = self.conv1(x)
        if emb is not None:
            h = h + self.emb_proj(F.silu(emb))[:, :, None, None]
        h = self.act(self.norm1(h))
        h = self.norm2(self.conv2(h))
        return self.act(h + identity)


class DownEncoderBlock(nn.Module):
    """One step of [`AsIntroVAEEncoder`]: 2x average pooling, then a [`ResidualBlock`] taking the class embedding."""

    def __init__(self, in_channels: int, out_channels: int, embedding_dim: Optional[int] = None):
        super().__init__()
        self.downsample = nn.AvgPool2d(2)
        self.resnet = ResidualBlock(in_channels, out_channels, embedding_dim)

    def forward(self, x: torch.Tensor, emb: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.resnet(self.downsample(x), emb)


class UpDecoderBlock(nn.Module):
    """
    One step of [`AsIntroVAEDecoder`]: with `add_upsample`, 2x nearest upsampling, then a [`ResidualBlock`] taking the
    class embedding.

    In training mode (with `fuse_upsample`, the default) the upsampling and the residual block's first conv run as one
    transposed convolution on the small map (`ResidualBlock.forward(upsample=True)`, [`upsample_conv3x3`]): the same
    values up to float rounding (decoder outputs within 2e-7 in float32, `tests/models/test_fast_paths.py`), 1.85-2.3x
    faster forward and backward for the large blocks, a training pass of the 28x28 model about 15 % faster. In eval
    mode (sampling) the block upsamples then convolves, as 0.2.0 did: samples stay bit for bit those of earlier
    versions and independent of the thread count (oneDNN's transposed convolution is not, for some shapes).
    """

    fuse_upsample = True

    def __init__(self, in_channels: int, out_channels: int, embedding_dim: Optional[int] = None,
                 add_upsample: bool = True):
        super().__init__()
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest") if add_upsample else None
        self.resnet = ResidualBlock(in_channels, out_channels, embedding_dim)

    def forward(self, x: torch.Tensor, emb: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.upsample is None:
            return self.resnet(x, emb)
        if self.training and self.fuse_upsample:
            return self.resnet(x, emb, upsample=True)
        return self.resnet(self.upsample(x), emb)


class _KeepBatchNormStatistics:
    """
    Restores the BatchNorm running statistics of `module` on exit. Gradient checkpointing runs each block's forward a
    second time during the backward pass; in training mode BatchNorm would update its running statistics twice.
    """

    def __init__(self, module: nn.Module):
        self.norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def __enter__(self):
        self.saved = [[b.clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
                      for m in self.norms]

    def __exit__(self, *exc):
        with torch.no_grad():
            for norm, saved in zip(self.norms, self.saved):
                buffers = [b for b in (norm.running_mean, norm.running_var, norm.num_batches_tracked) if b is not None]
                for buffer, value in zip(buffers, saved):
                    buffer.copy_(value)
        return False


def checkpoint_keeping_batchnorm_statistics(module: nn.Module, *inputs):
    """
    `torch.utils.checkpoint.checkpoint(module, *inputs)` (non-reentrant, as diffusers' default) whose recomputation
    leaves BatchNorm running statistics as the first forward left them, so a checkpointed training step changes the
    model exactly as a plain one does.
    """
    contexts = lambda: (contextlib.nullcontext(), _KeepBatchNormStatistics(module))  # noqa: E731
    return torch.utils.checkpoint.checkpoint(module.__call__, *inputs, use_reentrant=False, context_fn=contexts)


class _GradientCheckpointing:
    """diffusers' gradient checkpointing for the conv models: `enable_gradient_checkpointing()` makes each down or up
    block recompute its activations in the backward pass instead of keeping them (less memory, more time)."""

    _supports_gradient_checkpointing = True

    def enable_gradient_checkpointing(self, gradient_checkpointing_func: Optional[Callable] = None) -> None:
        """As diffusers' `ModelMixin.enable_gradient_checkpointing`; the default function keeps the BatchNorm running
        statistics exact ([`checkpoint_keeping_batchnorm_statistics`]) where diffusers' would update them twice."""
        super().enable_gradient_checkpointing(gradient_checkpointing_func or checkpoint_keeping_batchnorm_statistics)


class ClassConditioning(nn.Module):
    """The class embedding of a class-conditional model (`num_class_embeds` classes, as diffusers' UNet names it)."""

    def __init__(self, num_class_embeds: int, embedding_dim: int):
        super().__init__()
        self.num_class_embeds = num_class_embeds
        self.embedding = nn.Embedding(num_class_embeds, embedding_dim)

    def forward(self, owner: str, batch_size: int, class_labels: Optional[torch.Tensor]) -> torch.Tensor:
        """The embeddings of `class_labels`, checked: `batch_size` integers in `[0, num_class_embeds)`."""
        if class_labels is None:
            raise ValueError(f"{owner} is class-conditional ({self.num_class_embeds} classes): pass class_labels, "
                             f"a tensor of {batch_size} integers in [0, {self.num_class_embeds}).")
        labels = torch.as_tensor(class_labels, device=self.embedding.weight.device).long().reshape(-1)
        out_of_range = labels.numel() > 0 and (labels.min() < 0 or labels.max() >= self.num_class_embeds)
        if labels.shape[0] != batch_size or out_of_range:
            raise ValueError(f"{owner}: class_labels must be {batch_size} integers in [0, {self.num_class_embeds}); "
                             f"got {labels.tolist()[:8]}{'...' if labels.numel() > 8 else ''}.")
        return self.embedding(labels)


def _residual_block_parameters(c_in: int, c_out: int, embedding_dim: Optional[int]) -> int:
    """[`ResidualBlock`]: two 3x3 convs without bias, two BatchNorms, a 1x1 skip when the widths differ, and the
    class embedding's projection."""
    n = 9 * c_in * c_out + 9 * c_out * c_out + 4 * c_out + (c_in * c_out if c_in != c_out else 0)
    return n + (embedding_dim * c_out + c_out if embedding_dim else 0)



"""The conv encoder and decoder of images, [`AsIntroVAEEncoder`] and [`AsIntroVAEDecoder`].

`encoder.encode(x)` returns an [`AutoencoderKLOutput`] whose `latent_dist` is a diffusers
[`DiagonalGaussianDistribution`] over `B x Z` latents; `decoder.decode(z)` returns a [`DecoderOutput`]. How they load
(strict weights, 0.2.0's names) is `loading.py`; this module, bundled after it and `blocks.py`, is also part of the
models' code file of every saved pipeline (`pipelines/remote_code.py`).
"""

from typing import Optional, Sequence, Tuple, Union

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn



def conv_model_size(kind: str, channels: int, sample_size: int, latent_dim: int, block_out_channels: Sequence[int],
                    embedding_dim: Optional[int] = None, num_class_embeds: Optional[int] = None) -> Tuple[int, int]:
    """
    `(parameters, largest feature map)` of an [`AsIntroVAEEncoder`] (`kind="encoder"`, `channels` = `in_channels`) or
    [`AsIntroVAEDecoder`] (`"decoder"`, `out_channels`), counted from the configuration alone, layer by layer as the
    constructors build them (a test compares the count with the built models').
    """
    c, s = list(block_out_channels), sample_size
    n, f = len(c), sample_size >> len(block_out_channels)
    blocks = sum(_residual_block_parameters(a, b, embedding_dim) for a, b in zip(c[:-1], c[1:]))
    embedding = num_class_embeds * embedding_dim if num_class_embeds else 0
    if kind == "encoder":
        params = 25 * channels * c[0] + 2 * c[0] + blocks + _residual_block_parameters(c[-1], c[-1], embedding_dim)
        params += c[-1] * f * f * 2 * latent_dim + 2 * latent_dim + embedding
        maps = [channels * s * s, c[0] * s * s] + [c[j + 1] * (s >> (j + 1)) ** 2 for j in range(n - 1)]
        return params, max(maps + [c[-1] * f * f, 2 * latent_dim])
    widths = [c[-1]] + c[::-1] + [c[0]]  # the blocks' input and output widths: n + 1 blocks
    params = latent_dim * c[-1] * f * f + c[-1] * f * f + embedding + 25 * c[0] * channels + channels
    params += sum(_residual_block_parameters(a, b, embedding_dim) for a, b in zip(widths[:-1], widths[1:]))
    maps = [c[-1] * f * f, channels * s * s] + [c[n - 1 - k] * (f << (k + 1)) ** 2 for k in range(n)]
    return params, max(maps + [latent_dim])


class AsIntroVAEEncoder(CheckedLoading, _GradientCheckpointing, _LoadsNamesOf0_2_0, ModelMixin, ConfigMixin):
    r"""
    Residual conv encoder mapping images to a diagonal Gaussian posterior `q(z | x)`.

    Layout: 5x5 conv, BatchNorm, LeakyReLU(0.2); one [`DownEncoderBlock`] (AvgPool, residual block) per entry of
    `block_out_channels`; a linear layer to `2 * latent_dim` (mean and log-variance).

    Parameters:
        in_channels (`int`, *optional*, defaults to 3): Number of image channels.
        sample_size (`int`, *optional*, defaults to 32): Image height and width; a multiple of
            `2 ** len(block_out_channels)`.
        latent_dim (`int`, *optional*, defaults to 128): Size `Z` of the latent vector.
        block_out_channels (`Tuple[int]`, *optional*, defaults to `(64, 128, 256)`): Channels per block.
        num_class_embeds (`int`, *optional*): Make the model class-conditional, `q(z | x, y)`, with this many classes;
            `forward`/`encode` then take `class_labels`.
        class_embed_dim (`int`, *optional*): Size of the class embedding; defaults to `4 * block_out_channels[0]`.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        sample_size: int = 32,
        latent_dim: int = 128,
        block_out_channels: Tuple[int, ...] = (64, 128, 256),
        num_class_embeds: Optional[int] = None,
        class_embed_dim: Optional[int] = None,
    ):
        super().__init__()
        check_config(type(self).__name__, in_channels=in_channels, sample_size=sample_size, latent_dim=latent_dim,
                     block_out_channels=block_out_channels)
        embed_dim = _check_class_options(type(self).__name__, num_class_embeds, class_embed_dim, block_out_channels)
        check_model_size(type(self).__name__, block_out_channels, lambda: conv_model_size(
            "encoder", in_channels, sample_size, latent_dim, block_out_channels, embed_dim, num_class_embeds))
        check_sample_size(sample_size, block_out_channels)
        channels = list(block_out_channels)
        self.conv_in = nn.Conv2d(in_channels, channels[0], 5, padding=2, bias=False)
        self.norm_in = nn.BatchNorm2d(channels[0])
        self.act = nn.LeakyReLU(0.2)
        widths = channels + channels[-1:]  # each block's input and output width
        self.down_blocks = nn.ModuleList(
            DownEncoderBlock(c_in, c_out, embed_dim) for c_in, c_out in zip(widths[:-1], widths[1:])
        )
        self.gradient_checkpointing = False
        final_size = sample_size // 2 ** len(channels)
        self.fc = nn.Linear(channels[-1] * final_size * final_size, 2 * latent_dim)
        if num_class_embeds:
            self.class_conditioning = ClassConditioning(num_class_embeds, embed_dim)
        self._register_0_2_0_names()

    def _prefixes_of_0_2_0(self) -> dict:
        old = {"conv.0.": "conv_in.", "conv.1.": "norm_in."}
        old.update({f"conv.{4 + 2 * j}.": f"down_blocks.{j}.resnet." for j in range(len(self.down_blocks))})
        return old

    def _check_input(self, x: torch.Tensor) -> None:
        c, s = self.config.in_channels, self.config.sample_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (c, s, s):
            raise ValueError(
                f"{type(self).__name__} expects images of shape (batch, {c}, {s}, {s}) (channels, height, width), "
                f"got a tensor of shape {tuple(x.shape)}."
            )

    def _moments(self, x: torch.Tensor, class_labels: Optional[torch.Tensor]) -> torch.Tensor:
        self._check_input(x)
        emb = _class_embedding(self, x.shape[0], class_labels)
        h = self.act(self.norm_in(self.conv_in(x)))
        for down_block in self.down_blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                h = self._gradient_checkpointing_func(down_block, h, emb)
            else:
                h = down_block(h, emb)
        return self.fc(h.flatten(1))

    def encode(
        self, x: torch.Tensor, class_labels: Optional[torch.Tensor] = None, return_dict: bool = True
    ) -> Union[AutoencoderKLOutput, Tuple]:
        """
        Encode a batch of images into a posterior distribution.

        Args:
            x (`torch.Tensor`): Images of shape `(batch, in_channels, sample_size, sample_size)`.
            class_labels (`torch.Tensor`, *optional*): `batch` integer labels, for a class-conditional model.
            return_dict (`bool`, *optional*, defaults to `True`): Return an [`AutoencoderKLOutput`] or a tuple.
        """
        posterior = DiagonalGaussianDistribution(self._moments(x, class_labels))
        if not return_dict:
            return (posterior,)
        return AutoencoderKLOutput(latent_dist=posterior)

    def forward(
        self, x: torch.Tensor, class_labels: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return `(mu, logvar)`, each `B x Z` (the form the training objectives use)."""
        return self._moments(x, class_labels).chunk(2, dim=1)


class AsIntroVAEDecoder(CheckedLoading, _GradientCheckpointing, _LoadsNamesOf0_2_0, ModelMixin, ConfigMixin):
    r"""
    Residual conv decoder mapping latents to images, the mirror of [`AsIntroVAEEncoder`].

    Layout: a linear layer and ReLU to a `block_out_channels[-1] x s x s` map; `len(block_out_channels) + 1`
    [`UpDecoderBlock`]s, the first a residual block alone, each other 2x nearest-neighbour upsampling then a residual
    block (widths `reversed(block_out_channels)`, then `block_out_channels[0]` again); a 5x5 conv to `out_channels`.

    Parameters:
        out_channels (`int`, *optional*, defaults to 3): Number of image channels.
        sample_size (`int`, *optional*, defaults to 32): Image height and width.
        latent_dim (`int`, *optional*, defaults to 128): Size `Z` of the latent vector.
        block_out_channels (`Tuple[int]`, *optional*, defaults to `(64, 128, 256)`): Channels per block, as for
            the encoder.
        output_activation (`str`, *optional*): `None` (raw output, for the `mse`/`l1` losses), `"sigmoid"` (for
            the `bce` loss) or `"tanh"`.
        num_class_embeds (`int`, *optional*): Make the model class-conditional, `p(x | z, y)`, with this many classes;
            `forward`/`decode` then take `class_labels`.
        class_embed_dim (`int`, *optional*): Size of the class embedding; defaults to `4 * block_out_channels[0]`.
    """

    @register_to_config
    def __init__(
        self,
        out_channels: int = 3,
        sample_size: int = 32,
        latent_dim: int = 128,
        block_out_channels: Tuple[int, ...] = (64, 128, 256),
        output_activation: Optional[str] = None,
        num_class_embeds: Optional[int] = None,
        class_embed_dim: Optional[int] = None,
    ):
        super().__init__()
        check_config(type(self).__name__, out_channels=out_channels, sample_size=sample_size, latent_dim=latent_dim,
                     block_out_channels=block_out_channels)
        embed_dim = _check_class_options(type(self).__name__, num_class_embeds, class_embed_dim, block_out_channels)
        check_model_size(type(self).__name__, block_out_channels, lambda: conv_model_size(
            "decoder", out_channels, sample_size, latent_dim, block_out_channels, embed_dim, num_class_embeds))
        check_sample_size(sample_size, block_out_channels)
        _check_output_activation(output_activation)
        channels = list(block_out_channels)
        self.initial_size = sample_size // 2 ** len(channels)
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, channels[-1] * self.initial_size * self.initial_size), nn.ReLU()
        )
        widths = channels[-1:] + channels[::-1] + channels[:1]  # each block's input and output width
        self.up_blocks = nn.ModuleList(
            UpDecoderBlock(c_in, c_out, embed_dim, add_upsample=k > 0)
            for k, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:]))
        )
        self.conv_out = nn.Conv2d(channels[0], out_channels, 5, padding=2)
        self.gradient_checkpointing = False
        if num_class_embeds:
            self.class_conditioning = ClassConditioning(num_class_embeds, embed_dim)
        self._register_0_2_0_names()

    def _prefixes_of_0_2_0(self) -> dict:
        old = {f"conv.{2 * k}.": f"up_blocks.{k}.resnet." for k in range(len(self.up_blocks))}
        old[f"conv.{2 * len(self.up_blocks) - 1}."] = "conv_out."
        return old

    def _check_input(self, z: torch.Tensor) -> None:
        if z.ndim != 2 or z.shape[1] != self.config.latent_dim:
            raise ValueError(
                f"{type(self).__name__} expects latents of shape (batch, {self.config.latent_dim}), "
                f"got a tensor of shape {tuple(z.shape)}."
            )

    def decode(
        self, z: torch.Tensor, class_labels: Optional[torch.Tensor] = None, return_dict: bool = True
    ) -> Union[DecoderOutput, Tuple]:
        """
        Decode a batch of latents into images.

        Args:
            z (`torch.Tensor`): Latents of shape `(batch, latent_dim)`.
            class_labels (`torch.Tensor`, *optional*): `batch` integer labels, for a class-conditional model.
            return_dict (`bool`, *optional*, defaults to `True`): Return a [`DecoderOutput`] or a tuple.
        """
        sample = self(z, class_labels)
        if not return_dict:
            return (sample,)
        return DecoderOutput(sample=sample)

    def forward(self, z: torch.Tensor, class_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        self._check_input(z)
        emb = _class_embedding(self, z.shape[0], class_labels)
        c = self.config.block_out_channels[-1]
        h = self.fc(z).view(z.shape[0], c, self.initial_size, self.initial_size)
        for up_block in self.up_blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                h = self._gradient_checkpointing_func(up_block, h, emb)
            else:
                h = up_block(h, emb)
        return _apply_output_activation(self.conv_out(h), self.config.output_activation)

    @property
    def fuse_upsample(self) -> bool:
        """Whether the up blocks run their upsampling and first conv as one transposed convolution in training mode
        ([`UpDecoderBlock`]; `True` by default). Setting it sets every block's."""
        return all(block.fuse_upsample for block in self.up_blocks)

    @fuse_upsample.setter
    def fuse_upsample(self, value: bool) -> None:
        for block in self.up_blocks:
            block.fuse_upsample = bool(value)


"""The MLP encoder and decoder of vectors (the 2D toy data, tabular data), with the API of the image models.

Bundled, last, into the models' code file of every saved pipeline (`pipelines/remote_code.py`).
"""

from typing import Optional, Sequence, Tuple, Union

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn



def mlp_size(in_features: int, hidden_dims: Sequence[int], out_features: int) -> Tuple[int, int]:
    """`(parameters, widest layer)` of the MLP of a vector model."""
    dims = [in_features, *hidden_dims, out_features]
    return sum(a * b + b for a, b in zip(dims[:-1], dims[1:])), max(dims)



def _mlp(in_features: int, hidden_dims: Sequence[int], out_features: int) -> nn.Sequential:
    layers = []
    for width in hidden_dims:
        layers += [nn.Linear(in_features, width), nn.ReLU()]
        in_features = width
    layers.append(nn.Linear(in_features, out_features))
    return nn.Sequential(*layers)


class AsIntroVAEVectorEncoder(CheckedLoading, ModelMixin, ConfigMixin):
    r"""
    MLP encoder for vectors (2D toy data, tabular data), with the API of [`AsIntroVAEEncoder`].

    Parameters:
        in_features (`int`, *optional*, defaults to 2): Size `D` of a data vector.
        latent_dim (`int`, *optional*, defaults to 2): Size `Z` of the latent vector.
        hidden_dims (`Tuple[int]`, *optional*, defaults to `(256, 256, 256)`): Widths of the ReLU hidden layers.
    """

    @register_to_config
    def __init__(self, in_features: int = 2, latent_dim: int = 2, hidden_dims: Tuple[int, ...] = (256, 256, 256)):
        super().__init__()
        check_config(type(self).__name__, in_features=in_features, latent_dim=latent_dim, hidden_dims=hidden_dims)
        check_model_size(type(self).__name__, hidden_dims, lambda: mlp_size(in_features, hidden_dims, 2 * latent_dim))
        self.net = _mlp(in_features, hidden_dims, 2 * latent_dim)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.config.in_features:
            raise ValueError(
                f"{type(self).__name__} expects vectors of shape (batch, {self.config.in_features}), "
                f"got a tensor of shape {tuple(x.shape)}."
            )

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> Union[AutoencoderKLOutput, Tuple]:
        """Encode `(batch, in_features)` vectors into a posterior distribution over `(batch, latent_dim)`."""
        self._check_input(x)
        posterior = DiagonalGaussianDistribution(self.net(x))
        if not return_dict:
            return (posterior,)
        return AutoencoderKLOutput(latent_dist=posterior)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return `(mu, logvar)`, each `B x Z`."""
        self._check_input(x)
        return self.net(x).chunk(2, dim=1)


class AsIntroVAEVectorDecoder(CheckedLoading, ModelMixin, ConfigMixin):
    r"""
    MLP decoder for vectors, with the API of [`AsIntroVAEDecoder`].

    Parameters:
        out_features (`int`, *optional*, defaults to 2): Size `D` of a data vector.
        latent_dim (`int`, *optional*, defaults to 2): Size `Z` of the latent vector.
        hidden_dims (`Tuple[int]`, *optional*, defaults to `(256, 256, 256)`): Widths of the ReLU hidden layers.
        output_activation (`str`, *optional*): `None`, `"sigmoid"` or `"tanh"`.
    """

    @register_to_config
    def __init__(
        self,
        out_features: int = 2,
        latent_dim: int = 2,
        hidden_dims: Tuple[int, ...] = (256, 256, 256),
        output_activation: Optional[str] = None,
    ):
        super().__init__()
        check_config(type(self).__name__, out_features=out_features, latent_dim=latent_dim, hidden_dims=hidden_dims)
        _check_output_activation(output_activation)
        check_model_size(type(self).__name__, hidden_dims, lambda: mlp_size(latent_dim, hidden_dims, out_features))
        self.net = _mlp(latent_dim, hidden_dims, out_features)

    def decode(self, z: torch.Tensor, return_dict: bool = True) -> Union[DecoderOutput, Tuple]:
        """Decode `(batch, latent_dim)` latents into `(batch, out_features)` vectors."""
        sample = self(z)
        if not return_dict:
            return (sample,)
        return DecoderOutput(sample=sample)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.config.latent_dim:
            raise ValueError(
                f"{type(self).__name__} expects latents of shape (batch, {self.config.latent_dim}), "
                f"got a tensor of shape {tuple(z.shape)}."
            )
        return _apply_output_activation(self.net(z), self.config.output_activation)
