"""Issue 34: the faults a long training run meets, each made for real in real subprocesses: preemption (SIGTERM,
SIGUSR1), a dead or silent rank, two runs in one folder. Every outcome is printed (`pytest -s`): what was kept, what
was lost, how long the exit took, with which status. The full disk is in test_full_disk.py, the cut upload in
test_push_errors.py, the long steady run and two nodes in test_faults_long.py."""

import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from asintrovae_hf.training.faults import LOCK_FILE, PREEMPTED_EXIT_CODE
from asintrovae_hf.training.loop import main
from helpers import (
    TINY,
    TRAIN_SCRIPT,
    launch_ranks,
    pipeline_weights,
    process_alive,
    reset_accelerate,
    wait_for,
    worker_pids,
)

# Two ranks of batch 8 for 32 steps, a checkpoint every 4 (about 0.2 s a step on two shared cores): a signal sent
# within a second of checkpoint-4 lands mid-run even on a machine several times faster.
TWO_RANKS = TINY + ["--train_batch_size", "8", "--max_train_steps", "32", "--checkpointing_steps", "4",
                    "--save_images_steps", "1000"]
SEED = int(os.environ.get("ASINTROVAE_FAULT_SEED", time.time_ns() % 10_000))


def report(text: str) -> None:
    print(f"\n[issue 34] {text}")


def finish(proc, timeout=180) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise


def launched_run(out: Path, log: Path, *extra) -> int:
    proc = launch_ranks(TWO_RANKS + ["--output_dir", str(out), *extra], log)
    return finish(proc)


def assert_equal_weights(a: Path, b: Path) -> None:
    wa, wb = pipeline_weights(a), pipeline_weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=1e-6, msg=key)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted two-rank run the interrupted ones are compared with."""
    out = tmp_path_factory.mktemp("straight") / "run"
    code = launched_run(out, out.parent / "log.txt")
    assert code == 0, (out.parent / "log.txt").read_text()[-4000:]
    return out


def error_lines(text: str):
    return [line for line in text.splitlines() if re.match(r"^(\[rank\d\]: )?error: ", line)]


# ---- 1. preemption ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_at_a_random_step_of_two_ranks_checkpoints_exits_75_and_resumes_exactly(straight, tmp_path):
    rng = random.Random(SEED)
    targets = rng.choice([[0], [1], [0, 1]])  # a scheduler may signal one process or all of them
    delay = rng.uniform(0, 0.5)
    out, log = tmp_path / "run", tmp_path / "log.txt"
    proc = launch_ranks(TWO_RANKS + ["--output_dir", str(out)], log)
    pids = worker_pids(proc.pid, 2)
    assert wait_for(lambda: (out / "checkpoint-4").is_dir() or proc.poll() is not None, 180), log.read_text()[-3000:]
    time.sleep(delay)
    signalled = time.monotonic()
    for rank in targets:
        os.kill(pids[rank], signal.SIGTERM)
    assert wait_for(lambda: not any(process_alive(p) for p in pids.values()), 120)
    took = time.monotonic() - signalled
    finish(proc)
    text = log.read_text()
    lines = [line for line in text.splitlines() if "Preempted: Stopped by" in line]
    assert len(lines) == 1, text[-4000:]
    step = int(re.search(r"at step (\d+);", lines[0]).group(1))
    assert f"Exiting with status {PREEMPTED_EXIT_CODE}" in lines[0] and "--resume_from_checkpoint latest" in lines[0]
    assert text.count("exitcode  : 75") == 2, text[-3000:]  # both ranks, as the launcher reports them
    assert (out / f"checkpoint-{step}" / "training_state.json").is_file() and 4 <= step < 32
    # no traceback from the ranks (the launcher's own report of their status 75 has one: accelerate's)
    assert not (out / "model_index.json").exists() and not re.search(r"\[rank\d\]: Traceback", text)
    report(f"preemption (seed {SEED}): SIGTERM to rank(s) {targets} {delay:.2f} s after checkpoint-4; both ranks "
           f"finished step {step}, wrote checkpoint-{step} and exited with status 75 {took:.1f} s after the signal")

    resumed = launched_run(out, tmp_path / "resume.txt", "--resume_from_checkpoint", "latest")
    assert resumed == 0, (tmp_path / "resume.txt").read_text()[-4000:]
    assert f"Resumed from {out / f'checkpoint-{step}'} at step {step}" in (tmp_path / "resume.txt").read_text()
    assert_equal_weights(straight, out)  # nothing lost: the same final weights as the uninterrupted run
    report(f"preemption: resumed from checkpoint-{step}; final weights equal the uninterrupted run's (atol 1e-6)")


@pytest.mark.slow
def test_sigusr1_stops_a_single_process_run_with_a_checkpoint(tmp_path):
    out = tmp_path / "run"
    args = TINY + ["--max_train_steps", "400", "--checkpointing_steps", "4", "--save_images_steps", "1000",
                   "--output_dir", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, str(TRAIN_SCRIPT), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: (out / "checkpoint-4").is_dir() or proc.poll() is not None, 120)
    signalled = time.monotonic()
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=120)
    took = time.monotonic() - signalled
    assert proc.returncode == PREEMPTED_EXIT_CODE and "Traceback" not in err, err[-3000:]
    line = [line for line in err.splitlines() if line.startswith("Preempted: ")]
    assert len(line) == 1 and "SIGUSR1" in line[0], err[-3000:]
    step = int(re.search(r"at step (\d+);", line[0]).group(1))
    command = line[0].split("to continue, run ", 1)[1]
    assert command.startswith("python ") and command.endswith("--resume_from_checkpoint latest"), command
    assert (out / f"checkpoint-{step}").is_dir() and not (out / LOCK_FILE).exists()
    report(f"SIGUSR1, one process: stopped after step {step}, checkpoint-{step} written, exit 75 in {took:.1f} s")
    reset_accelerate()
    assert main(args[:-2] + ["--max_train_steps", str(step + 2), "--output_dir", str(out),
                             "--resume_from_checkpoint", "latest"]) == 0
    reset_accelerate()


# ---- 3. a dead rank, a silent rank --------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_rank_killed_mid_step_ends_the_other_at_once_and_the_run_resumes(straight, tmp_path):
    rng = random.Random(SEED + 1)
    out, log = tmp_path / "run", tmp_path / "log.txt"
    proc = launch_ranks(TWO_RANKS + ["--output_dir", str(out)], log)
    pids = worker_pids(proc.pid, 2)
    assert wait_for(lambda: (out / "checkpoint-4").is_dir() or proc.poll() is not None, 180), log.read_text()[-3000:]
    time.sleep(rng.uniform(0, 0.6))
    os.kill(pids[1], signal.SIGKILL)
    killed = time.monotonic()
    assert wait_for(lambda: not process_alive(pids[0]), 60), "rank 0 did not exit"
    took = time.monotonic() - killed
    finish(proc)
    text = log.read_text()
    lines = [line for line in error_lines(text) if "Lost contact" in line]
    assert len(lines) == 1, text[-4000:]
    assert f"rank 1 (process {pids[1]} on host {socket.gethostname()}) exited" in lines[0], lines[0]
    assert took < 30, took  # at once: the dead rank's connections close (--ddp_timeout is for silent ones)
    kept = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*") if p.name[11:].isdigit())
    report(f"dead rank: rank 1 SIGKILLed; rank 0 exited {took:.1f} s later with one line naming it; kept "
           f"checkpoints {kept}")

    resumed = launched_run(out, tmp_path / "resume.txt", "--resume_from_checkpoint", "latest")
    assert resumed == 0, (tmp_path / "resume.txt").read_text()[-4000:]
    assert_equal_weights(straight, out)
    report(f"dead rank: resumed from checkpoint-{kept[-1]}; final weights equal the uninterrupted run's")


@pytest.mark.slow
def test_a_silent_rank_ends_the_other_within_ddp_timeout(tmp_path):
    out, log = tmp_path / "run", tmp_path / "log.txt"
    proc = launch_ranks(TWO_RANKS + ["--output_dir", str(out), "--max_train_steps", "400", "--ddp_timeout", "5"],
                        log)
    pids = worker_pids(proc.pid, 2)
    try:
        assert wait_for(lambda: (out / "checkpoint-4").is_dir() or proc.poll() is not None, 180), \
            log.read_text()[-3000:]
        os.kill(pids[1], signal.SIGSTOP)  # alive but silent: a hung process, a frozen node
        stopped = time.monotonic()
        assert wait_for(lambda: not process_alive(pids[0]), 60), "rank 0 did not exit"
        took = time.monotonic() - stopped
    finally:
        os.kill(pids[1], signal.SIGCONT)
    finish(proc)
    lines = [line for line in error_lines(log.read_text()) if "Lost contact" in line and "rank 1 " in line]
    assert lines and "is stopped" in lines[0] and "--ddp_timeout 5 s" in lines[0], log.read_text()[-4000:]
    assert 4 < took < 25, took
    report(f"silent rank: rank 1 SIGSTOPped; rank 0 exited {took:.1f} s later (--ddp_timeout 5) naming it")


# ---- 4. two runs, one folder --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_second_run_in_the_folder_is_refused_and_a_killed_runs_lock_is_taken_over(tmp_path, capsys, caplog,
                                                                                    fresh_accelerate):
    out = tmp_path / "run"
    args = TINY + ["--max_train_steps", "4000", "--checkpointing_steps", "2", "--save_images_steps", "1000",
                   "--output_dir", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    first = subprocess.Popen([sys.executable, str(TRAIN_SCRIPT), *args], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: (out / "checkpoint-2").is_dir() or first.poll() is not None, 120)
        capsys.readouterr()
        started = time.monotonic()
        assert main(args[:-4] + ["--max_train_steps", "2", "--output_dir", str(out)]) == 1
        took = time.monotonic() - started
        err = capsys.readouterr().err
        lines = error_lines(err)
        assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
        assert f"process {first.pid} on host {socket.gethostname()}" in lines[0] and str(out) in lines[0], lines[0]
        report(f"two runs: the second refused in {took:.1f} s: {lines[0][:160]}...")
    finally:
        first.kill()  # SIGKILL: the lock file stays behind
        first.wait()
    assert (out / LOCK_FILE).exists()
    reset_accelerate()
    with caplog.at_level("WARNING"):
        # from checkpoint-2 (the killed run may have gone further): its later checkpoint-4, if any, is replaced
        assert main(args[:-4] + ["--max_train_steps", "4", "--checkpointing_steps", "2", "--output_dir", str(out),
                                 "--resume_from_checkpoint", "checkpoint-2"]) == 0
    assert f"left by process {first.pid} on host {socket.gethostname()}" in caplog.text
    assert not (out / LOCK_FILE).exists()  # released at the end
    report(f"two runs: the lock left by the killed process {first.pid} was taken over; the resume finished")
