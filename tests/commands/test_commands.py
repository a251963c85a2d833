"""The installed commands (`[project.scripts]`, `asintrovae_hf/commands/`): every one has its module and `--help`;
`asintrovae-sample` writes N images into a folder (files or one array) or a grid, the same for any batch size."""

import re
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from asintrovae_hf.commands import COMMANDS
from asintrovae_hf.commands import sample as sample_command
from helpers import ROOT, tiny_image_pipeline

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


def test_every_installed_command_is_a_module_with_help(capsys):
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {name: f"asintrovae_hf.commands.{module}:main" for name, module in COMMANDS.items()}
    import importlib

    for name, module in COMMANDS.items():
        main = importlib.import_module(f"asintrovae_hf.commands.{module}").main
        with pytest.raises(SystemExit) as exit_info:
            main(["--help"])
        assert exit_info.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: {name} "), name


def test_the_readme_uses_the_installed_commands():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"\b(asintrovae-[a-z0-9-]+)\b", readme)
    assert {"asintrovae-train", "asintrovae-evaluate", "asintrovae-sample"} <= set(commands)
    unknown = {c for c in commands if c.startswith("asintrovae-") and c not in COMMANDS and c != "asintrovae-hf"}
    assert not unknown, unknown
    blocks = "\n".join(re.findall(r"```bash\n(.*?)```", readme, flags=re.S))
    # the training, sampling and evaluation examples run the installed commands, not the repository's scripts
    for old in ("scripts/train_as_introvae.py", "scripts/evaluate.py", "scripts/ood.py", "scripts/demo.py",
                "scripts/push_space.py", "scripts/convert_reference_checkpoint.py", "scripts/toy2d.py"):
        assert old not in blocks, old


@pytest.fixture
def saved_pipeline(tmp_path):
    path = tmp_path / "pipe"
    tiny_image_pipeline(channels=1, size=8, latent_dim=4, block_out_channels=(8,)).save_pretrained(path)
    return path


def test_sample_writes_files_arrays_and_grids_independent_of_the_batch_size(saved_pipeline, tmp_path, capsys):
    base = ["--pipeline", str(saved_pipeline), "--device", "cpu", "--seed", "5"]
    assert sample_command.main(base + ["--num_images", "10", "--output_dir", str(tmp_path / "png"), "--batch_size",
                                       "3", "--grid", str(tmp_path / "grid.png"), "--cols", "5"]) == 0
    files = sorted((tmp_path / "png").iterdir())
    assert [f.name for f in files] == [f"{i:06d}.png" for i in range(10)]
    assert Image.open(files[0]).size == (8, 8) and Image.open(files[0]).mode == "L"
    assert Image.open(tmp_path / "grid.png").size[0] > Image.open(tmp_path / "grid.png").size[1]
    assert sample_command.main(base + ["--num_images", "10", "--output_dir", str(tmp_path / "npy"), "--output_type",
                                       "npy", "--batch_size", "7"]) == 0
    array = np.load(tmp_path / "npy" / "samples.npy")
    assert array.shape == (10, 8, 8, 1) and array.dtype == np.float32 and 0 <= array.min() <= array.max() <= 1
    # the same images, whatever the batch size: the PNGs are the array rounded
    assert np.array_equal(np.asarray(Image.open(files[3])), (array[3, ..., 0] * 255).round().astype(np.uint8))
    assert sample_command.main(base + ["--num_images", "4", "--output_dir", str(tmp_path / "pt"), "--output_type",
                                       "pt"]) == 0
    tensor = torch.load(tmp_path / "pt" / "samples.pt", weights_only=True)
    assert tensor.shape == (4, 1, 8, 8)
    torch.testing.assert_close(tensor.permute(0, 2, 3, 1).numpy(), array[:4], rtol=0, atol=0)  # a prefix
    capsys.readouterr()


def test_sample_refuses_bad_requests_in_one_line(saved_pipeline, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        sample_command.main(["--pipeline", str(saved_pipeline)])
    assert exit_info.value.code == 2 and "give --output_dir" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sample_command.main(["--pipeline", str(saved_pipeline), "--grid", "g.png", "--num_images", "0"])
    assert "expected a positive integer, got '0'" in capsys.readouterr().err
    assert sample_command.main(["--pipeline", str(saved_pipeline), "--grid", str(tmp_path / "g.png"),
                                "--class_labels", "1", "--device", "cpu"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "is not class-conditional" in errors[0]
    assert sample_command.main(["--pipeline", str(tmp_path / "missing"), "--grid", str(tmp_path / "g.png")]) == 1
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("error: ")] and "Traceback" not in err


def test_sample_needs_only_the_base_install_and_train_names_its_extra(saved_pipeline, tmp_path):
    """With the `[train]` and `[eval]` packages hidden: `asintrovae-sample` still works, `asintrovae-train` says in
    one line which extra to install."""
    import subprocess

    code = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):  # a base install: no extras
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("accelerate", "datasets", "sklearn", "scipy", "gradio"):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, Block())
import importlib.util
importlib.util.find_spec = lambda name, *a, _real=importlib.util.find_spec: (
    None if name.split(".")[0] in ("accelerate", "datasets", "sklearn", "scipy", "gradio") else _real(name, *a))
from asintrovae_hf.commands import sample, train
assert sample.main(["--pipeline", sys.argv[1], "--num_images", "3", "--output_dir", sys.argv[2]]) == 0
assert train.main(["--max_train_steps", "1"]) == 1
"""
    out = subprocess.run([sys.executable, "-c", code, str(saved_pipeline), str(tmp_path / "s")], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(list((tmp_path / "s").iterdir())) == 3
    assert "error: Training needs accelerate, datasets" in out.stderr
    assert "pip install 'asintrovae-hf[train]'" in out.stderr
