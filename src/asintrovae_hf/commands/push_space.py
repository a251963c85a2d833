"""Put the Gradio demo of a pipeline on the Hub as a Space, and link the Space from the model card.

    asintrovae-push-space --pipeline you/as-introvae-digits --space_id you/as-introvae-digits-demo

Writes the Space's files (`app.py`, which loads the model by its Hub id and serves `asintrovae_hf.demo.build_demo`;
`requirements.txt`; a `README.md` whose front matter says `sdk: gradio`, `sdk_version`, `app_file` and
`models: [pipeline]`), creates the Space repo (`create_repo(..., repo_type="space")`) and uploads them
(`upload_folder`), then adds a link to the Space under the title of the model's card (`--no_card_link` to skip).
`--output_dir` keeps the files; `--dry_run` writes them without uploading.
"""

import argparse
import os
import sys
import tempfile
from typing import List, Optional

APP = '''"""The Gradio demo of {pipeline} (written by asintrovae-hf's `asintrovae-push-space` command)."""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from asintrovae_hf import AsIntroVAEPipeline  # noqa: E402
from asintrovae_hf.demo import build_demo  # noqa: E402

MODEL_ID = {pipeline!r}

pipe = AsIntroVAEPipeline.from_pretrained(MODEL_ID)
demo = build_demo(pipe, title=MODEL_ID)

if __name__ == "__main__":
    demo.launch()  # a Space sets GRADIO_SERVER_NAME and GRADIO_SERVER_PORT
'''

README = """---
{front_matter}
---

# {title}

The [asintrovae-hf](https://pypi.org/project/asintrovae-hf/) demo of the model
[{pipeline}](https://huggingface.co/{pipeline}): sample from the prior (seed, temperature, and class for a
class-conditional model), reconstruct an uploaded or drawn image, interpolate between two images, score an image
(negative ELBO, bits per dimension, and its percentile among the training data's scores when they are saved with
the model), and explore the main directions of the latent space. Run it locally with
`asintrovae-demo --pipeline {pipeline}`.
"""


def package_requirement() -> str:
    """`asintrovae-hf[demo]` at least at the installed version."""
    try:
        from importlib.metadata import version

        return f"asintrovae-hf[demo]>={version('asintrovae-hf')}"
    except Exception:  # not installed as a distribution
        return "asintrovae-hf[demo]"


def gradio_version() -> str:
    from importlib.metadata import version

    return version("gradio")


def write_space(folder: str, pipeline: str, space_id: str, requirement: Optional[str] = None,
                sdk_version: Optional[str] = None) -> List[str]:
    """Write `app.py`, `requirements.txt` and `README.md` of the Space into `folder`; returns their names."""
    from huggingface_hub import SpaceCardData

    os.makedirs(folder, exist_ok=True)
    name = space_id.split("/")[-1]
    data = SpaceCardData(title=name[:30], sdk="gradio", sdk_version=sdk_version or gradio_version(),
                         app_file="app.py", models=[pipeline], license="apache-2.0", pinned=False)
    data.emoji, data.colorFrom, data.colorTo = "🔁", "indigo", "gray"
    files = {
        "app.py": APP.format(pipeline=pipeline),
        "requirements.txt": (requirement or package_requirement()) + "\n",
        "README.md": README.format(front_matter=data.to_yaml(), title=name, pipeline=pipeline),
    }
    for filename, text in files.items():
        with open(os.path.join(folder, filename), "w", encoding="utf-8") as f:
            f.write(text)
    return sorted(files)


def push_space(pipeline: str, space_id: str, token: Optional[str] = None, private: bool = False,
               requirement: Optional[str] = None, output_dir: Optional[str] = None, link_card: bool = True,
               dry_run: bool = False) -> str:
    """Write the Space's files, create the Space and upload them; link it from the model card. Returns its URL."""
    from huggingface_hub import create_repo, upload_folder

    from asintrovae_hf.errors import network_errors
    from asintrovae_hf.hub import _hub_error, link_space_in_card

    with tempfile.TemporaryDirectory() as tmp:
        folder = output_dir or tmp
        write_space(folder, pipeline, space_id, requirement=requirement)
        if dry_run:
            return folder
        try:
            url = create_repo(space_id, repo_type="space", space_sdk="gradio", exist_ok=True, private=private,
                              token=token)
            space_id = url.repo_id  # the namespace the Hub filled in
            upload_folder(repo_id=space_id, repo_type="space", folder_path=folder, token=token,
                          commit_message=f"The demo of {pipeline}")
        except network_errors() as err:
            raise _hub_error("upload the Space to", space_id, err) from None
    if link_card:
        link_space_in_card(pipeline, space_id, token=token)
    return str(url)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="asintrovae-push-space", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", required=True, help="The model's Hub id (the Space loads it from the Hub).")
    parser.add_argument("--space_id", required=True, help="The Space, 'name' or 'namespace/name'.")
    parser.add_argument("--hub_token", default=None, help="A write token (default: the saved login).")
    parser.add_argument("--private", action="store_true", help="Create the Space private.")
    parser.add_argument("--requirement", default=None,
                        help="The Space's requirements.txt line for this package (default: asintrovae-hf[demo] at "
                             "least at the installed version; e.g. a git+https URL).")
    parser.add_argument("--output_dir", default=None, help="Also keep the Space's files in this folder.")
    parser.add_argument("--no_card_link", action="store_true", help="Leave the model card as it is.")
    parser.add_argument("--dry_run", action="store_true", help="Write the files (to --output_dir) only.")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dry_run and not args.output_dir:
        print("error: --dry_run needs --output_dir", file=sys.stderr)
        return 1
    from asintrovae_hf.errors import HubError

    try:
        url = push_space(args.pipeline, args.space_id, token=args.hub_token, private=args.private,
                         requirement=args.requirement, output_dir=args.output_dir, link_card=not args.no_card_link,
                         dry_run=args.dry_run)
    except HubError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(("wrote the Space's files to " if args.dry_run else "pushed the Space: ") + url, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
