"""The Hugging Face Hub: the model card of a trained pipeline, and its upload.

The card is filled from `model_cards/model_card_template.md`, shipped inside the package as
`asintrovae_hf/assets/model_card_template.md` (a link to it in the source tree, a copy in a built wheel). Network and login failures become a
[`HubError`] with a one-line message instead of a traceback from deep inside the HTTP stack.
"""

import glob
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from huggingface_hub import ModelCard, ModelCardData, RepoUrl, create_repo, upload_file, upload_folder
from huggingface_hub.utils import (
    DEFAULT_IGNORE_PATTERNS,
    HfHubHTTPError,
    HFValidationError,
    LocalTokenNotFoundError,
    OfflineModeIsEnabled,
    filter_repo_objects,
)

from .data.sources import card_source
from .errors import HubError, network_errors, one_line
from .objectives.registry import get_objective, objective_names

TEMPLATE_PATH = Path(__file__).resolve().parent / "assets" / "model_card_template.md"

# What `push_to_hub` leaves out of an output directory: checkpoints (complete or partial), tracker logs (the default
# `--logging_dir logs`, and TensorBoard event files wherever they are) and the grids saved during training,
# `samples-NNNNNN.png` / `reconstructions-NNNNNN.png` (the final `samples.png` and `reconstructions.png` are uploaded).
# `training_ignore_patterns` adds a non-default `--logging_dir`. The run's resolved `config.yaml` stays local too: it
# holds the local paths as given (`train_summary.json`, uploaded, holds the configuration with portable paths).
HUB_IGNORE_PATTERNS = ("checkpoint-*", "checkpoint-*/**", "logs", "logs/**", "*events.out.tfevents*",
                       "samples-*.png", "reconstructions-*.png", "config.yaml", ".asintrovae-train.lock",
                       "best", "best/**", ".best.*", ".best.*/**")

TAGS = ("asintrovae", "introvae", "vae", "unconditional-image-generation", "diffusers", "diffusers:AsIntroVAEPipeline")

PAPER_URL = "https://arxiv.org/abs/2206.13903"
PACKAGE_URL = "https://pypi.org/project/asintrovae-hf/"

_LOGIN_HINT = "log in with `hf auth login` (`huggingface-cli login` in older huggingface_hub) or pass --hub_token"


# ---- model card -------------------------------------------------------------------------------------------------


def _cell(value: Any, short_floats: bool = False) -> str:
    """A value as one Markdown table cell; floats as given, or to 6 significant digits."""
    if isinstance(value, float) and short_floats:
        text = f"{value:.6g}"
    elif isinstance(value, (list, tuple)):
        text = ", ".join(map(str, value))
    else:
        text = str(value)
    return " ".join(text.split()).replace("|", "\\|") or '""'


def create_model_card(
    output_dir: str,
    repo_id: str,
    hyperparameters: Dict[str, Any],
    final_losses: Optional[Dict[str, Any]] = None,
    dataset_name: Optional[str] = None,
    sample_grid: Optional[str] = None,
    objective: str = "as-introvae",
    license: str = "apache-2.0",
    template_path: Optional[str] = None,
    model_classes: Tuple[str, str] = ("AsIntroVAEEncoder", "AsIntroVAEDecoder"),
    space_id: Optional[str] = None,
) -> ModelCard:
    r"""
    Write the model card (`README.md`) of a trained pipeline into `output_dir`.

    Args:
        output_dir (`str`): The pipeline's folder; created if missing.
        repo_id (`str`): The Hub id (or local name) the usage snippet loads.
        hyperparameters (`Dict[str, Any]`): Every training option, one table row each.
        final_losses (`Dict[str, Any]`, *optional*): The last logged loss terms.
        dataset_name (`str`, *optional*): `"digits"` (the default data), `"imagefolder"`, a Hub dataset id (listed in
            the card's metadata) or a local path (only its last component is shown).
        sample_grid (`str`, *optional*): A sample grid image, relative to `output_dir` (e.g. `"samples.png"`).
        objective (`str`, *optional*, defaults to `"as-introvae"`): The objective's name; a registered one
            (`asintrovae_hf.objectives.registry`) is described by its display name and description.
        license (`str`, *optional*, defaults to `"apache-2.0"`): The card's license.
        template_path (`str`, *optional*): A Jinja template; defaults to the packaged `model_card_template.md`.
        model_classes (`Tuple[str, str]`, *optional*): The encoder and decoder class names.
        space_id (`str`, *optional*): A Space that demoes the model (`asintrovae-push-space`): linked under the title.

    Returns:
        `huggingface_hub.ModelCard`: the card, also saved as `output_dir/README.md`.
    """
    tags = list(TAGS) + ([objective] if objective not in TAGS else [])
    source = card_source(dataset_name)
    # an objective that is not registered here (a plugin's, not imported) is named as it is
    objective_class = get_objective(objective) if objective in objective_names() else None
    card_data = ModelCardData(
        library_name="diffusers",
        license=license,
        tags=tags,
        pipeline_tag="unconditional-image-generation",
        datasets=[source.hub_id] if source.hub_id else None,
    )
    dataset_display, dataset_description = source.card_text()
    card = ModelCard.from_template(
        card_data,
        template_path=str(template_path or TEMPLATE_PATH),
        repo_id=repo_id,
        objective=objective,
        objective_name=objective_class.display_name if objective_class else objective,
        objective_description=(objective_class.description if objective_class
                               else f"An introspective VAE (`{objective}`)."),
        dataset_display=dataset_display,
        dataset_description=dataset_description,
        hyperparameters=[(name, _cell(value)) for name, value in hyperparameters.items()],
        final_losses=[(name, _cell(value, short_floats=True)) for name, value in (final_losses or {}).items()],
        sample_grid=sample_grid,
        package_url=PACKAGE_URL,
        paper_url=PAPER_URL,
        encoder_class=model_classes[0],
        decoder_class=model_classes[1],
        space_link=space_link(space_id) if space_id else None,
    )
    os.makedirs(output_dir, exist_ok=True)
    card.save(os.path.join(output_dir, "README.md"))
    return card


def space_link(space_id: str) -> str:
    """The model card's line that links the Space demoing the model."""
    return (f"**Try it in the browser:** [{space_id}](https://huggingface.co/spaces/{space_id}), a Gradio demo that "
            f"samples, reconstructs, interpolates, scores and explores the latent space.")


def link_space_in_card(repo_id: str, space_id: str, token: Optional[str] = None) -> bool:
    r"""
    Add the [`space_link`] line under the title of the model card (`README.md`) of the Hub repo `repo_id`, if it is
    not there yet. Returns whether the card changed.

    Raises:
        [`HubError`]: no network, offline mode, no or bad token, no such repo or card.
    """
    line = space_link(space_id)
    try:
        card = ModelCard.load(repo_id, token=token)
        if f"https://huggingface.co/spaces/{space_id})" in card.text:
            return False
        lines = card.text.split("\n")
        title = next((i for i, text in enumerate(lines) if text.startswith("# ")), None)
        at = 0 if title is None else title + 1
        card.text = "\n".join(lines[:at] + ["", line] + lines[at:])
        # `upload_file`, not `card.push_to_hub`: that first validates the metadata, and huggingface_hub 1.23 (the
        # floor) sends the check to https://huggingface.co whatever HF_ENDPOINT says, which fails behind a mirror or
        # on a private Hub. The metadata is unchanged here, and the Hub checks it on every commit anyway.
        upload_file(path_or_fileobj=str(card).encode("utf-8"), path_in_repo="README.md", repo_id=repo_id,
                    token=token, commit_message=f"Link the Space {space_id}")
    except network_errors() as err:
        raise _hub_error("update the model card of", repo_id, err) from None
    return True


# ---- upload -----------------------------------------------------------------------------------------------------


def files_to_upload(output_dir: str, ignore_patterns: Optional[Sequence[str]] = None) -> List[str]:
    r"""
    The files [`push_to_hub`] uploads from `output_dir`, as `upload_folder` selects them.

    Args:
        output_dir (`str`): The folder.
        ignore_patterns (`Sequence[str]`, *optional*): Defaults to `HUB_IGNORE_PATTERNS`; `upload_folder`'s own
            defaults (`.git`, `.cache/huggingface`) are always added.

    Returns:
        `List[str]`: sorted paths relative to `output_dir`, with `/` separators.
    """
    folder = Path(output_dir).expanduser().resolve()
    files = sorted(p.relative_to(folder).as_posix() for p in folder.glob("**/*") if p.is_file())
    patterns = list(HUB_IGNORE_PATTERNS if ignore_patterns is None else ignore_patterns) + DEFAULT_IGNORE_PATTERNS
    return list(filter_repo_objects(files, ignore_patterns=patterns))


def training_ignore_patterns(output_dir: str, logging_dir: Optional[str] = None) -> List[str]:
    r"""
    `HUB_IGNORE_PATTERNS` plus the training's logging folder when it lies inside `output_dir`.

    Args:
        output_dir (`str`): The training's output folder (`--output_dir`).
        logging_dir (`str`, *optional*): `--logging_dir`, relative to `output_dir` (or absolute).

    Returns:
        `List[str]`: patterns for [`push_to_hub`]'s `ignore_patterns`.
    """
    patterns = list(HUB_IGNORE_PATTERNS)
    if logging_dir:
        root = os.path.abspath(output_dir)
        relative = os.path.relpath(os.path.abspath(os.path.join(root, logging_dir)), root)
        if relative != os.curdir and relative != os.pardir and not relative.startswith(os.pardir + os.sep):
            folder = glob.escape(Path(relative).as_posix())
            patterns += [folder, folder + "/**"]
    return patterns


def _hub_error(action: str, repo_id: str, err: BaseException) -> HubError:
    where = f"Could not {action} the Hub repo {repo_id!r}"
    if isinstance(err, OfflineModeIsEnabled):
        return HubError(f"{where}: offline mode is on (HF_HUB_OFFLINE=1). Unset HF_HUB_OFFLINE, check the network "
                        f"connection, and {_LOGIN_HINT}.")
    if isinstance(err, LocalTokenNotFoundError):
        return HubError(f"{where}: no Hugging Face token found; {_LOGIN_HINT}.")
    if isinstance(err, HFValidationError):
        return HubError(f"{where}: invalid repo id ({one_line(err, 200)}). Use 'name' or 'namespace/name'.")
    if isinstance(err, HfHubHTTPError):
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status in (401, 403):
            return HubError(f"{where}: the Hub refused the credentials (HTTP {status}); {_LOGIN_HINT} with a token "
                            f"that can write to {repo_id.split('/')[0]!r}.")
        return HubError(f"{where}: the Hub answered HTTP {status} ({one_line(err, 200)}). Check the repo id, the network "
                        f"connection, and {_LOGIN_HINT}.")
    return HubError(f"{where}: cannot reach the Hub ({type(err).__name__}: {one_line(err, 200)}). Check the network "
                    f"connection (and HF_ENDPOINT or proxy settings), and {_LOGIN_HINT}.")


def ensure_repo(repo_id: str, token: Optional[str] = None, private: bool = False) -> RepoUrl:
    r"""
    Create the model repo if it does not exist (`create_repo(..., exist_ok=True)`): run it before training to fail
    early without a network or a login. Its `.repo_id` is the full id, with the namespace the Hub filled in when
    `repo_id` was a bare name.

    Args:
        repo_id (`str`): `"name"` or `"namespace/name"`.
        token (`str`, *optional*): A write token; defaults to the saved login.
        private (`bool`, *optional*, defaults to `False`): Create the repo private.

    Returns:
        `huggingface_hub.RepoUrl`: the repo URL (a `str`), with `.repo_id`.

    Raises:
        [`HubError`]: no network, offline mode, no or bad token, or an invalid repo id.
    """
    try:
        url = create_repo(repo_id, exist_ok=True, private=private, token=token)
        return url if isinstance(url, RepoUrl) else RepoUrl(str(url))
    except network_errors() as err:
        raise _hub_error("create", repo_id, err) from None


def push_to_hub(
    output_dir: str,
    repo_id: str,
    token: Optional[str] = None,
    private: bool = False,
    commit_message: str = "Upload AS-IntroVAE pipeline",
    ignore_patterns: Optional[Sequence[str]] = None,
) -> str:
    r"""
    Upload a trained pipeline's folder (weights, configs, model card, grids) to a model repo, without checkpoints or
    logs: exactly [`files_to_upload`]`(output_dir, ignore_patterns)`.

    Args:
        output_dir (`str`): The folder `save_pretrained` and [`create_model_card`] wrote.
        repo_id (`str`): `"name"` or `"namespace/name"`; the repo is created if missing.
        token (`str`, *optional*): A write token; defaults to the saved login.
        private (`bool`, *optional*, defaults to `False`): Create the repo private.
        commit_message (`str`, *optional*): The commit message.
        ignore_patterns (`Sequence[str]`, *optional*): Defaults to `HUB_IGNORE_PATTERNS`.

    Returns:
        `str`: the repo URL.

    Raises:
        `FileNotFoundError`: `output_dir` does not exist.
        [`HubError`]: no network, offline mode, no or bad token, or an invalid repo id.
    """
    if not os.path.isdir(output_dir):
        raise FileNotFoundError(f"Cannot upload {output_dir!r} to the Hub: no such directory.")
    url = ensure_repo(repo_id, token=token, private=private)
    repo_id = url.repo_id  # the namespace filled in by the Hub
    patterns = list(HUB_IGNORE_PATTERNS if ignore_patterns is None else ignore_patterns)
    try:  # a fresh list: upload_folder appends its own defaults to the list it is given
        upload_folder(repo_id=repo_id, folder_path=output_dir, commit_message=commit_message, token=token,
                      ignore_patterns=patterns)
    except network_errors() as err:
        raise _hub_error("upload to", repo_id, err) from None
    except ValueError as err:  # huggingface_hub's own check of the card: "Invalid metadata in README.md. ..."
        raise HubError(f"Could not upload to the Hub repo {repo_id!r}: the Hub refused the model card "
                       f"(README.md): {one_line(err, 300)}. Fix its metadata block, then retry the upload.") from None
    except OSError as err:  # a file of the folder that cannot be read
        raise HubError(f"Could not upload to the Hub repo {repo_id!r}: {type(err).__name__}: "
                       f"{one_line(err, 300)}.") from None
    return url


def retry_command(output_dir: str, repo_id: str, private: bool = False, logging_dir: Optional[str] = None) -> str:
    """The shell command that uploads a trained output folder again, and nothing else (see [`main`])."""
    words = ["python", "-m", "asintrovae_hf.hub", "--output_dir", output_dir, "--hub_model_id", repo_id]
    words += ["--logging_dir", logging_dir] if logging_dir else []
    words += ["--hub_private_repo"] if private else []
    return " ".join(shlex.quote(str(word)) for word in words)


def main(argv: Optional[List[str]] = None) -> int:
    """
    `python -m asintrovae_hf.hub --output_dir DIR --hub_model_id NAME`: upload a trained output folder (the pipeline,
    card and grids, without checkpoints or logs), e.g. after the upload at the end of a training run failed. Errors
    are one line and exit status 1.
    """
    import argparse

    parser = argparse.ArgumentParser(description="Upload a trained pipeline's folder to the Hugging Face Hub "
                                                 "(without checkpoints or logs).")
    parser.add_argument("--output_dir", required=True, help="The training's --output_dir.")
    parser.add_argument("--hub_model_id", required=True, help="'name' or 'namespace/name'.")
    parser.add_argument("--hub_token", default=None, help="Default: the saved login.")
    parser.add_argument("--hub_private_repo", action="store_true")
    parser.add_argument("--logging_dir", default="logs", help="The training's --logging_dir (left out).")
    args = parser.parse_args(argv)
    try:
        url = push_to_hub(args.output_dir, args.hub_model_id, token=args.hub_token, private=args.hub_private_repo,
                          ignore_patterns=training_ignore_patterns(args.output_dir, args.logging_dir))
    except (HubError, FileNotFoundError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 1
    print(f"uploaded {args.output_dir} to {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
