"""The trained pipelines that ship with the package: load one by name, before training anything.

    from asintrovae_hf import AsIntroVAEPipeline
    from asintrovae_hf.zoo import zoo_path

    pipe = AsIntroVAEPipeline.from_pretrained(zoo_path("as-introvae-mnist-5k"))

Each entry is a folder in the Hub layout (`save_pretrained`'s, with the code diffusers needs to load it without the
plugin), with a model card (`README.md`: data and split, the command that trained it, its held-out metrics with
intervals, the data's license, how to push it) and `zoo_entry.json`, the numbers the card states, which
`tests/test_zoo.py` recomputes. `scripts/build_zoo.py` makes them from the runs of `results/`.
"""

import os
from typing import Dict, List

ZOO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "zoo_pipelines")
ENTRY_FILE = "zoo_entry.json"


def zoo_names() -> List[str]:
    """The names of the shipped pipelines."""
    if not os.path.isdir(ZOO_DIR):
        return []
    return sorted(name for name in os.listdir(ZOO_DIR) if os.path.isfile(os.path.join(ZOO_DIR, name, ENTRY_FILE)))


def zoo_path(name: str) -> str:
    r"""
    The folder of a shipped pipeline, for `AsIntroVAEPipeline.from_pretrained` (or `DiffusionPipeline.from_pretrained`
    with `trust_remote_code=True`, or `push_to_hub`).

    Raises:
        `ValueError`: an unknown name; the message lists the shipped ones.
    """
    names = zoo_names()
    if name not in names:
        raise ValueError(f"No shipped pipeline called {name!r}; the package ships: {', '.join(names) or 'none'}.")
    return os.path.join(ZOO_DIR, name)


def zoo_entry(name: str) -> Dict:
    """What a shipped pipeline's card states: dataset, method, seed, command, held-out metrics and their intervals."""
    from .json_io import read_json

    return read_json(os.path.join(zoo_path(name), ENTRY_FILE), expect=dict)


def resolve_pipeline(name_or_path: str) -> str:
    r"""
    What `--pipeline` names: a shipped pipeline's folder when it is a zoo name (and no such local folder exists),
    else `name_or_path` itself (a folder or a Hub id).
    """
    if not os.path.exists(name_or_path) and name_or_path in zoo_names():
        return zoo_path(name_or_path)
    return name_or_path
