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

from ..json_io import JsonFileError, read_json

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
