"""Issue 34, item 2: a disk that fills while the run writes a checkpoint, the final pipeline, a sample grid or its
logs. The disk is real: a small tmpfs mounted for the test and filled to the last byte (root with mount rights), or
else a file size limit of a few bytes (`RLIMIT_FSIZE`: a write past it fails with EFBIG). The run is a real subprocess
that resumes from a checkpoint, so that the first thing it writes is the one under test. Then: one line naming the
folder and what failed, the previous checkpoint intact, and once space is freed the same command finishes."""

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asintrovae_hf import AsIntroVAEPipeline
from asintrovae_hf.training.args import parse_args
from asintrovae_hf.training.checkpointing import TrainingState
from asintrovae_hf.training.loop import main, train
from helpers import TINY, TRAIN_SCRIPT, reset_accelerate

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fresh_accelerate")]

# scenario -> (options of the resumed run, what the error line says failed)
SCENARIOS = {
    "checkpoint": (["--max_train_steps", "4", "--checkpointing_steps", "1"], "Cannot write checkpoint"),
    "final pipeline": (["--max_train_steps", "2"], "Cannot write the final pipeline"),
    "sample grid": (["--max_train_steps", "3", "--save_images_steps", "1"], "Cannot write the sample grids of step 3"),
    "logs": (["--max_train_steps", "3", "--report_to", "tensorboard"], "Cannot write the tracker logs"),
}
# Python's start-up writes a few bytes (tempfile's probe); every file under test is larger.
RLIMIT_BYTES = 16
BASE = [a for a in TINY if a not in ("--report_to", "none")] + ["--checkpointing_steps", "1000",
                                                                  "--save_images_steps", "1000"]


def _can_mount(folder: Path) -> bool:
    if os.environ.get("ASINTROVAE_FULL_DISK") == "rlimit" or sys.platform != "linux":
        return False
    folder.mkdir(parents=True, exist_ok=True)
    try:
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], capture_output=True)
    except OSError:  # no mount command
        return False
    return result.returncode == 0


class Disk:
    """A folder on a filesystem that can be filled (`fill`) and freed (`free`)."""

    def __init__(self, root: Path):
        self.root = root
        self.mounted = _can_mount(root)
        root.mkdir(parents=True, exist_ok=True)
        self.kind = ("a 4 MiB tmpfs filled to the last byte" if self.mounted
                     else f"RLIMIT_FSIZE {RLIMIT_BYTES} bytes (EFBIG)")
        self.full = False

    def fill(self):
        self.full = True
        if not self.mounted:
            return
        fd = os.open(self.root / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            for size in (1 << 20, 4096, 1):  # unbuffered: every byte the disk takes stays taken
                while True:
                    try:
                        os.write(fd, b"\0" * size)
                    except OSError:
                        break
        finally:
            os.close(fd)

    def free(self):
        self.full = False
        if self.mounted:
            (self.root / "filler").unlink()

    def preexec(self):
        if self.full and not self.mounted:
            def limit():
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit raises EFBIG instead
                resource.setrlimit(resource.RLIMIT_FSIZE, (RLIMIT_BYTES, resource.RLIM_INFINITY))
            return limit
        return None

    def close(self):
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.root)], check=False)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    out = tmp_path_factory.mktemp("disk") / "run"
    reset_accelerate()
    train(parse_args(TINY + ["--output_dir", str(out), "--max_train_steps", "2", "--checkpointing_steps", "1",
                             "--save_images_steps", "1000"]))
    reset_accelerate()
    return out


@pytest.fixture
def disk(tmp_path):
    d = Disk(tmp_path / "disk")
    yield d
    d.close()


def tree(folder: Path):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_full_disk_keeps_the_checkpoint_and_the_run_resumes_once_space_is_freed(scenario, checkpoints, disk,
                                                                                  capsys):
    options, what = SCENARIOS[scenario]
    out = disk.root / "run"
    out.mkdir()
    for name in ("checkpoint-1", "checkpoint-2"):
        shutil.copytree(checkpoints / name, out / name)
    before = tree(out / "checkpoint-2")
    args = BASE + ["--report_to", "none"] + options + ["--output_dir", str(out), "--resume_from_checkpoint", "latest"]
    disk.fill()
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(TRAIN_SCRIPT), *args], env=env, capture_output=True, text=True,
                            timeout=300, preexec_fn=disk.preexec())
    took = time.monotonic() - started
    err = result.stderr
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert result.returncode == 1 and len(lines) == 1 and "Traceback" not in err, err[-4000:]
    line = lines[0]
    assert what in line and str(out) in line and "checkpoint-2' is intact" in line, line
    assert "No space left on device" in line or "File too large" in line or "file write failed" in line, line
    assert tree(out / "checkpoint-2") == before  # the previous checkpoint, byte for byte
    assert not list(out.glob("checkpoint-*.partial")) and not (out / "checkpoint-3").exists()
    outcome = (f"\n[issue 34] full disk ({disk.kind}), {scenario}: exit 1 after {took:.1f} s (start-up included); "
               f"checkpoint-2 intact; {line}")

    disk.free()
    capsys.readouterr()
    reset_accelerate()
    assert main(args) == 0, capsys.readouterr().err[-3000:]
    steps = int(options[1])
    assert TrainingState.load(out / f"checkpoint-{steps}").global_step == steps
    assert AsIntroVAEPipeline.from_pretrained(out).decoder.config.sample_size == 8
    print(f"{outcome}\n[issue 34] full disk, {scenario}: space freed, the same command finished at step {steps}")
