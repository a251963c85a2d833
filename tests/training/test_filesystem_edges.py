"""Symlinks and special files: refused in what is loaded (checkpoints, pipeline and model folders), in one line and
without hanging on a pipe; replaced, never followed, when a pipeline's code files are saved."""

import functools
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from asintrovae_hf import AsIntroVAEEncoder, AsIntroVAEPipeline
from asintrovae_hf.training.checkpointing import TrainingState, check_checkpoint_files
from asintrovae_hf.errors import CheckpointError
from asintrovae_hf.training.loop import main, train
from asintrovae_hf.training.args import parse_args
from helpers import TINY as BASE, reset_accelerate, tiny_image_pipeline

TINY = BASE + ["--save_images_steps", "1000"]
pytestmark = pytest.mark.usefixtures("fresh_accelerate")


def within(seconds, function, *args):
    """`function(*args)` in a thread, failing the test (instead of hanging it) if it has not returned in time."""
    outcome = {}

    def run():
        try:
            outcome["value"] = function(*args)
        except BaseException as err:  # noqa: BLE001 - handed to the test
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    name = getattr(function, "__name__", function)
    assert not thread.is_alive(), f"{name} still blocked after {seconds} s (reading a FIFO?)"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "run"
    reset_accelerate()
    train(parse_args(TINY + ["--output_dir", str(out), "--max_train_steps", "1", "--checkpointing_steps", "1"]))
    reset_accelerate()
    return out


def copy_run(trained, tmp_path) -> Path:
    shutil.copytree(trained, tmp_path / "run", symlinks=True)
    return tmp_path / "run"


def resume_line(out, capsys):
    capsys.readouterr()
    code = within(120, main, TINY + ["--output_dir", str(out), "--max_train_steps", "2",
                                     "--resume_from_checkpoint", "latest"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


# ---- checkpoints --------------------------------------------------------------------------------------------------


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_a_symlinked_subfolder_of_a_checkpoint_is_refused(trained, tmp_path, capsys):
    """The walk did not enter a symlinked folder, so a pickle placed behind one was never checked."""
    out = copy_run(trained, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    shutil.move(out / "checkpoint-1" / "encoder", elsewhere)
    marker = tmp_path / "marker"
    torch.save(Payload(marker), elsewhere / "payload.pkl")
    os.symlink(elsewhere, out / "checkpoint-1" / "encoder")
    line = resume_line(out, capsys)
    assert "'encoder'" in line and "symlink" in line and "checkpoint-1" in line, line
    assert not marker.exists()


@pytest.mark.parametrize("name", ["optimizer.bin", "training_state.json", "decoder/config.json",
                                  "decoder/diffusion_pytorch_model.safetensors"])
def test_a_fifo_in_a_checkpoint_is_refused_without_hanging(trained, tmp_path, capsys, name):
    out = copy_run(trained, tmp_path)
    path = out / "checkpoint-1" / name
    path.unlink()
    os.mkfifo(path)
    line = resume_line(out, capsys)
    assert "checkpoint-1" in line and os.path.basename(name) in line, line
    assert "special file" in line or "symlink or special file" in line, line


def test_a_symlinked_file_in_a_checkpoint_is_refused(trained, tmp_path):
    out = copy_run(trained, tmp_path)
    target = tmp_path / "optimizer-elsewhere.bin"
    shutil.move(out / "checkpoint-1" / "optimizer.bin", target)
    os.symlink(target, out / "checkpoint-1" / "optimizer.bin")
    with pytest.raises(CheckpointError, match=r"'optimizer\.bin' in .* is a symlink; expected only regular files"):
        check_checkpoint_files(str(out / "checkpoint-1"))
    with pytest.raises(CheckpointError, match="training_state.json is a symlink or special file"):
        state = out / "checkpoint-1" / "training_state.json"
        shutil.move(state, tmp_path / "state.json")
        os.symlink(tmp_path / "state.json", state)
        TrainingState.load(str(out / "checkpoint-1"))


# ---- pipeline and model folders -----------------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path):
    tiny_image_pipeline(size=8).save_pretrained(tmp_path / "pipe")
    return tmp_path / "pipe"


def test_a_symlinked_component_folder_is_refused(saved, tmp_path):
    shutil.move(saved / "encoder", tmp_path / "encoder-elsewhere")
    os.symlink(tmp_path / "encoder-elsewhere", saved / "encoder")
    assert AsIntroVAEEncoder.from_pretrained(tmp_path / "encoder-elsewhere") is not None  # the control: it is intact
    with pytest.raises(ValueError, match=r"must be a real folder, not a symlink"):
        AsIntroVAEEncoder.from_pretrained(saved, subfolder="encoder")
    with pytest.raises(ValueError, match=r"must be a real folder, not a symlink"):
        AsIntroVAEPipeline.from_pretrained(saved)


@pytest.mark.parametrize("name", ["config.json", "diffusion_pytorch_model.safetensors"])
def test_symlinked_and_special_files_in_a_model_folder_are_refused(saved, tmp_path, name):
    target = tmp_path / ("elsewhere-" + name)
    shutil.copy(saved / "encoder" / name, target)
    (saved / "encoder" / name).unlink()
    os.symlink(target, saved / "encoder" / name)
    with pytest.raises(ValueError) as info:
        AsIntroVAEEncoder.from_pretrained(saved, subfolder="encoder")
    assert f"'{name}' in" in str(info.value) and "is a symlink" in str(info.value) and "\n" not in str(info.value)
    (saved / "encoder" / name).unlink()
    os.mkfifo(saved / "encoder" / name)
    with pytest.raises(ValueError, match=rf"'{name}' in .* is a special file \(FIFO, device or socket\)"):
        within(60, functools.partial(AsIntroVAEEncoder.from_pretrained, saved, subfolder="encoder"))


def test_a_special_model_index_is_refused_by_the_component_loader(saved):
    (saved / "model_index.json").unlink()
    os.mkfifo(saved / "model_index.json")
    with pytest.raises(ValueError, match=r"model_index\.json' is a symlink or special file"):
        within(60, functools.partial(AsIntroVAEEncoder.from_pretrained, saved, subfolder="encoder"))


def test_a_fifo_config_from_a_resolved_path_is_refused(tmp_path):
    os.mkfifo(tmp_path / "config.json")
    with pytest.raises(ValueError, match=r"expected a regular config file, got a special file"):
        within(60, AsIntroVAEEncoder._dict_from_json_file, str(tmp_path / "config.json"))


# ---- saving -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pipeline_asintrovae.py", "encoder/modeling_asintrovae_encoder.py"])
def test_saving_replaces_a_symlinked_code_file_instead_of_writing_through_it(tmp_path, name):
    outside = tmp_path / "outside.py"
    outside.write_text("# a file outside the pipeline folder\n")
    folder = tmp_path / "pipe"
    (folder / os.path.dirname(name)).mkdir(parents=True, exist_ok=True)
    os.symlink(outside, folder / name)
    tiny_image_pipeline(size=8).save_pretrained(folder)
    assert outside.read_text() == "# a file outside the pipeline folder\n"
    assert not os.path.islink(folder / name) and "Generated from the" in (folder / name).read_text()
    assert not [p for p in folder.rglob("*.tmp")]


@pytest.mark.parametrize("name", ["encoder/config.json", "decoder/diffusion_pytorch_model.safetensors"])
def test_saving_replaces_a_symlinked_config_or_weight_file(tmp_path, name):
    outside = tmp_path / "outside"
    outside.write_text("outside the pipeline folder\n")
    folder = tmp_path / "pipe"
    (folder / os.path.dirname(name)).mkdir(parents=True)
    os.symlink(outside, folder / name)
    tiny_image_pipeline(size=8).save_pretrained(folder)
    assert outside.read_text() == "outside the pipeline folder\n" and not os.path.islink(folder / name)
    assert AsIntroVAEPipeline.from_pretrained(folder) is not None


def test_saving_replaces_a_fifo_code_file_without_blocking(tmp_path):
    folder = tmp_path / "pipe"
    folder.mkdir()
    os.mkfifo(folder / "pipeline_asintrovae.py")
    within(120, tiny_image_pipeline(size=8).save_pretrained, folder)
    assert (folder / "pipeline_asintrovae.py").is_file()
    assert AsIntroVAEPipeline.from_pretrained(folder) is not None


def test_the_saved_code_still_loads_without_the_plugin(tmp_path):
    """The replaced files are the same code: the remote-code load still works (a fresh interpreter)."""
    folder = tmp_path / "pipe"
    folder.mkdir()
    os.symlink(tmp_path / "missing-target.py", folder / "pipeline_asintrovae.py")  # a dangling link, replaced too
    tiny_image_pipeline(size=8).save_pretrained(folder)
    code = ("import sys; from helpers import NO_PLUGIN; exec(NO_PLUGIN)\n"
            "from diffusers import DiffusionPipeline\n"
            f"pipe = DiffusionPipeline.from_pretrained({str(folder)!r}, trust_remote_code=True)\n"
            "print(type(pipe).__module__)")
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"),
               PYTHONPATH=str(Path(__file__).parents[1]))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "asintrovae_hf" not in result.stdout, result.stderr[-3000:]


def test_the_hub_caches_own_symlinks_load_and_others_are_refused(saved, tmp_path):
    """A Hub cache snapshot is made of symlinks into the repo's blobs/ folder: those load; a link elsewhere does not."""
    repo = tmp_path / "hub" / "models--acme--x"
    snapshot = repo / "snapshots" / ("0" * 40)
    (repo / "blobs").mkdir(parents=True)
    for path in sorted(p for p in saved.rglob("*") if p.is_file()):
        relative = path.relative_to(saved)
        blob = repo / "blobs" / str(relative).replace("/", "_")
        shutil.copy(path, blob)
        (snapshot / relative).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, (snapshot / relative).parent), snapshot / relative)
    assert AsIntroVAEEncoder.from_pretrained(snapshot, subfolder="encoder") is not None
    assert AsIntroVAEPipeline.from_pretrained(snapshot) is not None
    outside = tmp_path / "outside.json"
    shutil.copy(saved / "encoder" / "config.json", outside)
    (snapshot / "encoder" / "config.json").unlink()
    os.symlink(outside, snapshot / "encoder" / "config.json")
    with pytest.raises(ValueError, match=r"'config\.json' in .* is a symlink; expected only regular files"):
        AsIntroVAEEncoder.from_pretrained(snapshot, subfolder="encoder")
