"""The shipped pipelines: each loads by name with `from_pretrained`, samples and reconstructs, and one metric of its
card is recomputed on the held-out split."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from asintrovae_hf import AsIntroVAEPipeline
from asintrovae_hf.evaluation.heldout import split_images
from asintrovae_hf.pipelines.remote_code import save_code
from asintrovae_hf.zoo import ENTRY_FILE, zoo_entry, zoo_names, zoo_path

EXPECTED = {"as-introvae-mnist-5k", "soft-introvae-mnist-5k", "as-introvae-digits", "soft-introvae-digits"}


def test_the_zoo_ships_as_introvae_and_soft_introvae_on_both_datasets():
    assert EXPECTED <= set(zoo_names())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_zoo_pipeline_loads_samples_and_matches_its_card(name):
    folder = zoo_path(name)
    size = sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(folder) for f in files)
    assert size <= 10 * 2**20, f"{name} is {size} bytes"
    entry = zoo_entry(name)
    pipe = AsIntroVAEPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    resolution = {"mnist-5k": 28, "digits": 16}[entry["dataset"]]
    samples = pipe(batch_size=4, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert samples.shape == (4, 1, resolution, resolution) and 0 <= samples.min() and samples.max() <= 1
    assert samples.std() > 0.05  # not a blank image
    # the card's held-out reconstruction error, recomputed
    images, _ = split_images(entry["dataset"], "test", resolution)
    recs = pipe.reconstruct(images, output_type="pt").images
    mse = (recs - images).pow(2).flatten(1).mean(1).mean().item()
    recheck = entry["recheck"]
    assert recheck["metric"] == "reconstruction_mse"
    assert mse == pytest.approx(recheck["value"], rel=recheck["rel_tolerance"])
    card = open(os.path.join(folder, "README.md")).read()
    assert "## Held-out evaluation" in card and entry["split"]["license"] in card and entry["command"] in card
    assert f"{entry['metrics']['reconstruction_mse']:.5f}" in card
    assert entry["method"].split(":")[0] in name


def test_unknown_zoo_name_lists_the_shipped_ones():
    with pytest.raises(ValueError, match=r"No shipped pipeline called 'nope'; the package ships: .*as-introvae-"):
        zoo_path("nope")


def test_zoo_entries_are_complete_records():
    for name in zoo_names():
        with open(os.path.join(zoo_path(name), ENTRY_FILE)) as f:
            entry = json.load(f)
        for key in ("dataset", "method", "seed", "command", "metrics", "split", "device", "code_version"):
            assert key in entry, (name, key)
        assert entry["split"]["num_heldout"] in (360, 1000)


def test_the_commands_take_a_zoo_name(tmp_path):
    from asintrovae_hf.commands.sample import main as sample_main
    from asintrovae_hf.zoo import resolve_pipeline

    assert resolve_pipeline("as-introvae-mnist-5k") == zoo_path("as-introvae-mnist-5k")
    assert resolve_pipeline("you/as-introvae-mnist-5k") == "you/as-introvae-mnist-5k"  # a Hub id stays one
    (tmp_path / "as-introvae-mnist-5k").mkdir()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:  # a local folder of that name wins over the zoo
        assert resolve_pipeline("as-introvae-mnist-5k") == "as-introvae-mnist-5k"
    finally:
        os.chdir(cwd)
    assert sample_main(["--pipeline", "as-introvae-mnist-5k", "--num_images", "4", "--grid",
                        str(tmp_path / "grid.png"), "--seed", "0"]) == 0
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_the_readme_quick_start_runs_without_training():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    quick_start = readme[readme.index("## Quick start"):]
    block = quick_start[quick_start.index("```python\n") + len("```python\n"):]
    block = block[: block.index("```")]
    assert "zoo_path(" in block
    namespace = {}
    exec(compile(block, "README quick start", "exec"), namespace)
    assert len(namespace["images"]) == 16 and namespace["images"][0].size == (28, 28)
    assert len(namespace["recs"]) == 16 and namespace["scores"].shape == (16,)
    assert namespace["zoo_names"]() == sorted(EXPECTED)


@pytest.mark.parametrize("name", zoo_names())
def test_zoo_code_files_are_todays_bundles(name, tmp_path):
    """The code a shipped pipeline carries is what `save_pretrained` writes today (`scripts/build_zoo.py --code_only`
    after a change to a bundled module), so loading it without the plugin runs the package's current code."""
    shipped = Path(zoo_path(name))
    copy = tmp_path / name
    shutil.copytree(shipped, copy)
    save_code(AsIntroVAEPipeline.from_pretrained(str(copy)), str(copy))
    code_files = sorted(p.relative_to(copy) for p in copy.rglob("*.py")) + [Path("model_index.json")]
    assert len(code_files) >= 4
    for relative in code_files:
        assert (copy / relative).read_bytes() == (shipped / relative).read_bytes(), (
            f"{name}/{relative} is stale: run python scripts/build_zoo.py --code_only")
