"""
How [`AsIntroVAEPipeline`] loads and saves: diffusers' `from_pretrained`, `load_config`, `from_pipe` and
`save_pretrained`, with the plugin's classes for every component where the plugin is installed (no code from the folder
or repo runs), the component classes checked against `model_index.json` and the components' `config.json`, and the
pipeline's code saved with it (`remote_code.save_code`).

This module is also part of the code every saved pipeline ships (it is bundled into `pipeline_asintrovae.py`):
it must import only torch, diffusers, huggingface_hub and the standard library, and the modules bundled before it.
"""

import importlib
import os
from typing import Optional, Union

from diffusers.pipelines.pipeline_utils import DiffusionPipeline

from ..json_io import read_json
from .remote_code import MAX_INDEX_BYTES, save_code

# The model classes each component may have (`model_index.json` names one of them; anything else is refused).
COMPONENT_CLASSES = {
    "encoder": ("AsIntroVAEEncoder", "AsIntroVAEVectorEncoder"),
    "decoder": ("AsIntroVAEDecoder", "AsIntroVAEVectorDecoder"),
}
# Components a pipeline may lack (`model_index.json` then does not list them, as in every pipeline saved before them).
OPTIONAL_COMPONENT_CLASSES = {"latent_prior": ("GaussianMixtureLatentPrior",)}
# The module diffusers' loader imports the component classes from when the plugin is installed. It must also hold
# `ModelMixin` in its namespace: diffusers picks a component's loading method by the base classes it finds there.
PLUGIN_MODELS_MODULE = "asintrovae_hf.models"


def _plugin_models():
    """
    The `asintrovae_hf.models` module when the plugin is installed, else `None` (this file running as a Hub repo's
    remote code). Looked up with importlib: an import statement here would make diffusers' remote-code check demand
    the plugin on machines that load the repo without it.
    """
    try:
        return importlib.import_module(PLUGIN_MODELS_MODULE)
    except ImportError:
        return None


def _check_component_config(folder, name: str, class_name: str) -> None:
    """
    In a local folder (diffusers loads a Hub repo from its downloaded folder), refuse a `model_index.json` class
    that is not the class of the component's own `config.json`: the weights would load into the wrong network.
    """
    path = os.path.join(str(folder), name, "config.json")
    if not os.path.isfile(path) or os.path.getsize(path) > MAX_INDEX_BYTES:
        return  # diffusers reports the missing file itself
    try:
        saved = read_json(path, max_bytes=MAX_INDEX_BYTES, expect=dict).get("_class_name")
    except (ValueError, RecursionError, OSError):
        return  # the component's loader reports an unreadable config itself
    if saved != class_name:
        raise ValueError(f"{folder}: model_index.json names {class_name} for {name!r}, but {name}/config.json is a "
                         f"{str(saved)[:100]}; expected the same class in both.")


class AsIntroVAELoadingMixin:
    """The loading and saving of [`AsIntroVAEPipeline`] (a mixin before diffusers' `DiffusionPipeline`)."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike], **kwargs):
        r"""
        Load a saved pipeline from a folder or a Hub repo id, with diffusers' `DiffusionPipeline.from_pretrained`.

        Every argument is diffusers': `dtype` (a dtype, or a dict per component with a `"default"`), `device_map`,
        `variant`, `use_safetensors`, `low_cpu_mem_usage`, the Hub arguments (`revision`, `token`, `cache_dir`,
        `local_files_only`, `force_download`, ...), and components to use instead of loading them (`decoder=...`).
        With the plugin installed, each component is built from this package's classes (the class
        `model_index.json` names must be one a component may have) and no code from the folder or repo runs;
        `trust_remote_code` is ignored. Without the plugin, load a repo with
        `DiffusionPipeline.from_pretrained(repo_id, trust_remote_code=True)`.

        Examples:
            ```py
            >>> pipe = AsIntroVAEPipeline.from_pretrained("you/as-introvae-digits", dtype=torch.bfloat16)
            ```
        """
        if _plugin_models() is not None:
            # the plugin's classes are used, so the repo's code is never needed: never let diffusers import it
            kwargs.pop("trust_remote_code", None)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def _dict_from_json_file(cls, json_file: Union[str, os.PathLike], *args, **kwargs):
        """
        Read `model_index.json` as diffusers does, then, when the plugin is installed, name this class instead of
        the saved pipeline file. diffusers reads the index here both before downloading a repo and before loading
        it; with the file's name it would import the repo's code (and ask for `trust_remote_code`).
        """
        if not os.path.isfile(json_file):  # follows the Hub cache's symlinks; a FIFO would block the read
            raise ValueError(f"{json_file}: expected a regular file, got a special file (FIFO, device or socket).")
        if os.path.getsize(json_file) > MAX_INDEX_BYTES:
            raise ValueError(f"{json_file}: expected at most {MAX_INDEX_BYTES} bytes, got "
                             f"{os.path.getsize(json_file)} bytes.")
        try:  # the package's JSON reader (size and nesting limits) where it is installed
            index = read_json(json_file, max_bytes=MAX_INDEX_BYTES, expect=dict)
        except (ValueError, RecursionError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
            raise ValueError(f"{json_file} is not a readable JSON object: {type(err).__name__}: "
                             f"{str(err)[:300]}") from None
        if _plugin_models() is not None and os.path.basename(str(json_file)) == cls.config_name:
            index["_class_name"] = cls.__name__
        return index

    @classmethod
    def load_config(cls, pretrained_model_name_or_path, *args, **kwargs):
        """
        diffusers' `load_config`; for `model_index.json` with the plugin installed, each component entry names its
        class in this package (checked against the classes that component may have) instead of the saved code file.
        """
        loaded = super().load_config(pretrained_model_name_or_path, *args, **kwargs)
        index = loaded[0] if isinstance(loaded, tuple) else loaded
        if _plugin_models() is not None and index.get("_class_name") == cls.__name__:
            for name, allowed in COMPONENT_CLASSES.items():
                entry = index.get(name)
                if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and entry[1] in allowed):
                    raise ValueError(
                        f"{pretrained_model_name_or_path}: model_index.json entry {name!r} is {str(entry)[:200]}; "
                        f"expected [module, class] with the class one of {', '.join(allowed)}."
                    )
                _check_component_config(pretrained_model_name_or_path, name, entry[1])
                index[name] = [PLUGIN_MODELS_MODULE, entry[1]]
            for name, allowed in OPTIONAL_COMPONENT_CLASSES.items():
                entry = index.get(name)
                if entry is None or (isinstance(entry, (list, tuple)) and list(entry) == [None, None]):
                    continue  # the pipeline has none (every pipeline saved before the component existed)
                if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and entry[1] in allowed):
                    raise ValueError(
                        f"{pretrained_model_name_or_path}: model_index.json entry {name!r} is {str(entry)[:200]}; "
                        f"expected [module, class] with the class one of {', '.join(allowed)}, or no entry."
                    )
                _check_component_config(pretrained_model_name_or_path, name, entry[1])
                index[name] = [PLUGIN_MODELS_MODULE, entry[1]]
        return loaded

    @classmethod
    def from_pipe(cls, pipeline: DiffusionPipeline, **kwargs):
        r"""
        A new pipeline sharing the components of `pipeline` (no copy), with diffusers' `from_pipe` and its
        arguments (`dtype`, `encoder=` or `decoder=` to replace one, ...).
        """
        # diffusers takes a component over only when its exact class is in the signature's type hints, which the
        # pipeline's file cannot import (it is also the code of saved pipelines): hand the components over explicitly.
        for name in (*COMPONENT_CLASSES, *OPTIONAL_COMPONENT_CLASSES):
            if name not in kwargs and getattr(pipeline, name, None) is not None:
                kwargs[name] = getattr(pipeline, name)
        return super().from_pipe(pipeline, **kwargs)

    def save_pretrained(
        self,
        save_directory: Union[str, os.PathLike],
        safe_serialization: bool = True,
        variant: Optional[str] = None,
        max_shard_size: Optional[Union[int, str]] = None,
        push_to_hub: bool = False,
        **kwargs,
    ):
        r"""
        Save the pipeline as diffusers does (safetensors weights and configs per component, `model_index.json`),
        plus its code in the layout of custom Hub pipelines (`remote_code.save_code`): the pipeline's modules bundled
        into `pipeline_asintrovae.py` and the models' modules into one file in each component folder, generated from
        the installed package at save time (copied as loaded, for a pipeline loaded as remote code, which already is
        those bundles). `model_index.json` names them, so the saved folder or repo also loads with
        `DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` where `asintrovae_hf` is not installed.

        Args:
            save_directory (`str` or `os.PathLike`): The folder.
            safe_serialization, variant, max_shard_size: As in diffusers.
            push_to_hub (`bool`, *optional*, defaults to `False`): Upload the folder afterwards; `repo_id`,
                `token`, `private`, `commit_message` and `create_pr` are taken from `kwargs` as in diffusers.
        """
        super().save_pretrained(save_directory, safe_serialization=safe_serialization, variant=variant,
                                max_shard_size=max_shard_size, push_to_hub=False)
        save_code(self, save_directory)
        if push_to_hub:
            from huggingface_hub import create_repo

            token = kwargs.pop("token", None)
            repo_id = kwargs.pop("repo_id", os.path.basename(os.path.normpath(save_directory)))
            repo_id = create_repo(repo_id, exist_ok=True, private=kwargs.pop("private", None), token=token).repo_id
            self._upload_folder(save_directory, repo_id, token=token, commit_message=kwargs.pop("commit_message", None),
                                create_pr=kwargs.pop("create_pr", False))
