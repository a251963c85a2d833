"""The code files of a saved pipeline, in the layout diffusers documents for custom pipelines on the Hub.

`save_code` writes `pipeline_asintrovae.py` at the folder's root and the models' code in each component folder
(the optional `latent_prior` included, when the pipeline has one), and points `model_index.json` at them, so that
`DiffusionPipeline.from_pretrained(folder_or_repo, trust_remote_code=True)` loads the pipeline where `asintrovae_hf`
is not installed. diffusers' loader fetches a relative import as another file of the repo and requires every
imported package, so a shipped file must import only torch, numpy, PIL, diffusers, huggingface_hub and the standard
library: each code file is therefore one bundle, package modules concatenated with their imports of each other
dropped (`BUNDLE_MODULES` for the pipeline, `MODEL_BUNDLE_MODULES` for the encoder and decoder). Both bundles hold
`json_io`, the package's one JSON reader.

This module is also part of that bundle (a pipeline loaded as remote code saves itself with it).
"""

import importlib
import inspect
import json
import os
import re
import sys

from ..json_io import read_json

# The code files of a saved pipeline (model_index.json refers to them by these module names).
PIPELINE_MODULE = "pipeline_asintrovae"
COMPONENT_MODULES = {"encoder": "modeling_asintrovae_encoder", "decoder": "modeling_asintrovae_decoder"}
# Optional components: their code is written (and `model_index.json` names it) only when the pipeline has one.
OPTIONAL_COMPONENT_MODULES = {"latent_prior": "modeling_asintrovae_latent_prior"}

PACKAGE = "asintrovae_hf"
# The package modules concatenated, in this order, into the saved `pipeline_asintrovae.py`; a module may import
# from the ones before it, with single-line `from <module> import <names>` statements (dropped in the bundle).
BUNDLE_MODULES = (
    "asintrovae_hf.objectives.elbo",
    "asintrovae_hf.json_io",
    "asintrovae_hf.pipelines.latents_and_labels",
    "asintrovae_hf.pipelines.image_processor",
    "asintrovae_hf.pipelines.remote_code",
    "asintrovae_hf.pipelines.loading",
    "asintrovae_hf.pipelines.pipeline_asintrovae",
)
# The same for the encoder's and the decoder's code file (each holds every model class: `model_index.json` names one).
MODEL_BUNDLE_MODULES = (
    "asintrovae_hf.json_io",
    "asintrovae_hf.models.loading",
    "asintrovae_hf.models.blocks",
    "asintrovae_hf.models.autoencoder_image",
    "asintrovae_hf.models.autoencoder_vector",
)
MAX_INDEX_BYTES = 64 * 1024  # a model_index.json of this pipeline is under 1 KiB
# What a shipped file may import besides the standard library: what a machine without this package has.
ALLOWED_PACKAGES = frozenset({"diffusers", "huggingface_hub", "numpy", "PIL", "torch"})
# Python 3.9 has no list of its standard library: the modules the shipped files use stand for it there.
STANDARD_LIBRARY = getattr(sys, "stdlib_module_names", frozenset(
    {"contextlib", "dataclasses", "functools", "importlib", "inspect", "json", "math", "os", "re", "sys", "typing"}))
GENERATED = "# Generated from the `"

# Import statements as diffusers' remote-code loader reads them (its regexes match a line's start), widened to
# `import a as b` and `import a, b`.
_FROM_LINE = re.compile(r"^(\s*)from\s+(\S+)\s+import\b(.*)$")
_IMPORT_LINE = re.compile(r"^\s*import\s+(.+)$")
# The names a module defines at its top level (imports aside), which one module of a bundle must not redefine.
_DEFINITION = re.compile(r"^(?:(?:async\s+)?def\s+(\w+)|class\s+(\w+)|(\w+)\s*(?::[^=]*)?=(?!=))", re.MULTILINE)


def _header(module_names) -> str:
    names = [f"`{name}`" for name in module_names]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return (f"# Generated from the {listed} module{'s' * (len(names) > 1)} when this pipeline was saved; the package "
            f"is the source, do not edit.\n")


def _absolute(target: str, module_name: str) -> str:
    """`target` of `from <target> import` in `module_name`, made absolute."""
    if not target.startswith("."):
        return target
    level = len(target) - len(target.lstrip("."))
    base = module_name.split(".")[:-level]
    return ".".join(base + ([target[level:]] if target[level:] else []))


def _drop_bundled_imports(source: str, module_name: str, earlier) -> str:
    """
    `source` without its imports of the modules bundled before it; any other import of the package (or a relative
    one), and one that is not a single top-level line importing plain names, is refused.
    """
    kept = []
    for number, line in enumerate(source.splitlines(keepends=True), 1):
        match = _FROM_LINE.match(line.rstrip("\n"))
        if match and (match[2].startswith(".") or match[2].split(".")[0] == PACKAGE):
            target, names = _absolute(match[2], module_name), match[3].split("#")[0]
            if target not in earlier:
                raise RuntimeError(f"{module_name} cannot be bundled into a saved pipeline's code: line {number} "
                                   f"imports {target}, which is not one of the modules bundled before it "
                                   f"({', '.join(earlier) or 'none'}).")
            if match[1] or "(" in names or names.rstrip().endswith("\\") or " as " in names or ";" in names:
                raise RuntimeError(f"{module_name} cannot be bundled into a saved pipeline's code: line {number} "
                                   f"({line.strip()!r}) must be one top-level line `from {match[2]} import "
                                   f"<names>` without parentheses, continuation or `as`.")
            continue  # the names are defined earlier in the bundle
        kept.append(line)
    return "".join(kept)


def check_imports(source: str, what: str) -> None:
    """Refuse `source` if it imports anything but the standard library and `ALLOWED_PACKAGES`."""
    imports = []
    for line in source.splitlines():
        match = _FROM_LINE.match(line)
        if match:
            imports.append(match[2])
            continue
        match = _IMPORT_LINE.match(line)
        if match:
            imports.extend(part.split()[0] for part in match[1].split(",") if part.split())
    bad = sorted({name for name in imports
                  if name.startswith(".") or name.split(".")[0] not in ALLOWED_PACKAGES | STANDARD_LIBRARY})
    if bad:
        raise RuntimeError(f"{what} cannot be saved as a pipeline's remote code: it imports {', '.join(bad)} (a "
                           f"machine without {PACKAGE} has only the standard library and "
                           f"{', '.join(sorted(ALLOWED_PACKAGES))}).")


def bundle_source(module_names=BUNDLE_MODULES) -> str:
    """
    The saved `pipeline_asintrovae.py`: the one-line header, then the sources of `module_names`, in order, each
    without its lines importing the modules before it, joined by two newlines.
    """
    sources, defined = [], {}
    for i, name in enumerate(module_names):
        source = inspect.getsource(importlib.import_module(name))
        sources.append(_drop_bundled_imports(source, name, module_names[:i]))
        for match in _DEFINITION.finditer(source):
            symbol = next(group for group in match.groups() if group)
            if defined.setdefault(symbol, name) != name:  # one namespace in the bundle: a later one would win
                raise RuntimeError(f"{name} cannot be bundled into a saved pipeline's code: it defines {symbol}, "
                                   f"which {defined[symbol]} defines too.")
    text = _header(module_names) + "\n\n".join(sources)
    check_imports(text, "the bundle of " + ", ".join(module_names))
    return text


def module_source(module) -> str:
    """
    A module's source as a shipped file: after the one-line header, or as it is when it is itself a generated file
    (a pipeline loaded as remote code, saved again).
    """
    source = inspect.getsource(module)
    if not source.startswith(GENERATED):
        source = _header([module.__name__]) + source
    check_imports(source, module.__name__)
    return source


def code_of(cls) -> str:
    """
    The shipped code file of the class `cls`: the bundle its module belongs to, else its module alone (a module
    that is itself a generated file, of a pipeline loaded as remote code, is copied as it is).
    """
    module = sys.modules[cls.__module__]
    for bundle in (BUNDLE_MODULES, MODEL_BUNDLE_MODULES):
        if module.__name__ in bundle:
            return bundle_source(bundle)
    return module_source(module)


def write_source(text: str, path: str) -> None:
    """Write `text` to `path` atomically, never through a link or special file already at `path`."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # Written next to `path` and renamed over it: a symlink (or FIFO) already at `path` is replaced, never followed,
    # so a save cannot write outside its folder (or block on a pipe).
    temporary = f"{path}.{os.getpid()}.tmp"
    if os.path.lexists(temporary):  # left by a save of this process id that was killed
        os.remove(temporary)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(temporary, path)
    except BaseException:
        if os.path.lexists(temporary):
            os.remove(temporary)
        raise


def save_code(pipeline, save_directory) -> None:
    """Write the code files of `pipeline` saved in `save_directory` and point its `model_index.json` at them."""
    index_path = os.path.join(save_directory, "model_index.json")
    index = read_json(index_path, max_bytes=MAX_INDEX_BYTES, expect=dict)
    write_source(code_of(type(pipeline)), os.path.join(save_directory, PIPELINE_MODULE + ".py"))
    index["_class_name"] = [PIPELINE_MODULE, type(pipeline).__name__]
    for name, module_name in {**COMPONENT_MODULES, **OPTIONAL_COMPONENT_MODULES}.items():
        component = getattr(pipeline, name, None)
        if component is None:
            # an optional component the pipeline does not have: no code and no entry (diffusers writes `[null,
            # null]`), so that model_index.json is what it was before the component existed
            index.pop(name, None)
            continue
        component = getattr(component, "_orig_mod", component)  # torch.compile wrapper
        write_source(code_of(type(component)), os.path.join(save_directory, name, module_name + ".py"))
        index[name] = [module_name, type(component).__name__]
    with open(index_path, "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)
        f.write("\n")
