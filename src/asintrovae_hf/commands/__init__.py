"""
The commands installed with the package (`[project.scripts]` in `pyproject.toml`), one module each; every module
also runs as `python -m asintrovae_hf.commands.<name>`:

| command | module | what it does |
| --- | --- | --- |
| `asintrovae-train` | `train` | train a model (`accelerate launch -m asintrovae_hf.commands.train` for several processes) |
| `asintrovae-evaluate` | `evaluate` | FID, reconstruction and class metrics of a saved pipeline, as JSON |
| `asintrovae-sample` | `sample` | N images of a saved pipeline into a folder (image files or one array) or a grid |
| `asintrovae-toy2d` | `toy2d` | the 2D toy benchmark |
| `asintrovae-ood` | `ood` | out-of-distribution AUROCs of a saved pipeline |
| `asintrovae-demo` | `demo` | serve the Gradio demo of a saved pipeline |
| `asintrovae-convert` | `convert` | convert an authors' / official reference checkpoint into a pipeline |
| `asintrovae-push-space` | `push_space` | put the demo of a Hub model on the Hub as a Space |

`scripts/` in the repository keeps thin shims with the old names (`scripts/evaluate.py`, ...), which run these.
Nothing here is imported by `import asintrovae_hf`.
"""

COMMANDS = {
    "asintrovae-train": "train",
    "asintrovae-evaluate": "evaluate",
    "asintrovae-sample": "sample",
    "asintrovae-toy2d": "toy2d",
    "asintrovae-ood": "ood",
    "asintrovae-demo": "demo",
    "asintrovae-convert": "convert",
    "asintrovae-push-space": "push_space",
}
