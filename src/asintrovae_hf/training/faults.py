"""What a long training run meets besides bugs: preemption, a full disk, a lost rank, a second run in its folder.

- [`StopSignals`]: SIGTERM or SIGUSR1 (what schedulers send before they preempt a job) only sets a flag; the loop
  finishes the optimizer step it is in, every process agrees on the stop, a checkpoint is written and the run exits
  with [`PREEMPTED_EXIT_CODE`] and a line saying how to resume.
- [`RunLock`]: one run per output folder. The lock is an advisory `flock` on a file in the folder, which the kernel
  releases when its process ends however it ends, so a lock left by a killed run is recognised (it can be taken) and
  taken over; a live one is refused with its holder's process id and host, read from the file.
- [`describe_lost_ranks`]: after a collective fails (a peer died, or stayed silent for `--ddp_timeout` seconds), which
  ranks are gone, for the one-line error.
- [`writing`]: a failed write (full disk, quota, file size limit, read-only folder) becomes one line naming the folder,
  what was being written and the checkpoint that is intact.
"""

import contextlib
import errno
import json
import logging
import os
import signal
import socket
import threading
import time
from typing import Dict, List, Optional

from ..errors import UsageError, one_line
from ..json_io import JsonFileError, loads

logger = logging.getLogger(__name__)

# EX_TEMPFAIL of sysexits.h ("try again later"): a scheduler or wrapper script can tell a preempted run, to be resumed,
# from a finished one (0) and from a failed one (1).
PREEMPTED_EXIT_CODE = 75
STOP_SIGNALS = ("SIGTERM", "SIGUSR1")
LOCK_FILE = ".asintrovae-train.lock"
# A write that failed for lack of room or of permission, not because of the code: the run stops with one line.
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO)


class Preempted(Exception):
    """The run stopped on a signal after writing a checkpoint; `main` exits with `PREEMPTED_EXIT_CODE`."""

    def __init__(self, signal_name: str, step: int, checkpoint: str):
        super().__init__(f"Stopped by {signal_name} at step {step}; checkpoint {checkpoint!r} written.")
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint


class LostRankError(RuntimeError):
    """A collective failed because another process died or stopped answering; `main` exits at once."""


class OutputWriteError(RuntimeError):
    """Writing an output (checkpoint, pipeline, grid, log) failed for lack of space or permission."""


class StopSignals:
    """
    While installed, SIGTERM and SIGUSR1 set `received` (the signal's name) instead of ending the process; system
    calls they interrupt are restarted (`siginterrupt(False)`), so a read or a collective in progress is not broken
    by them. Installed only in the main thread (Python's rule); a no-op elsewhere.
    """

    def __init__(self):
        self.received: Optional[str] = None
        self._previous: Dict[int, object] = {}

    def _handler(self, signum, frame):
        if self.received is None:
            self.received = signal.Signals(signum).name
            logger.warning("Received %s: finishing this optimizer step, then writing a checkpoint and exiting.",
                           self.received)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for name in STOP_SIGNALS:
                signum = getattr(signal, name)
                self._previous[signum] = signal.signal(signum, self._handler)
                signal.siginterrupt(signum, False)
        return self

    def __exit__(self, exc_type, *exc) -> None:
        for signum, previous in self._previous.items():
            # after a stop the process is on its way out: a second SIGTERM (a launcher stopping the other ranks
            # once one has exited) must not kill it before it exits with PREEMPTED_EXIT_CODE
            signal.signal(signum, signal.SIG_IGN if exc_type is Preempted else previous)
        self._previous.clear()


class RunLock:
    """
    The output folder's lock, held by the run's main process from set-up to exit (`LOCK_FILE`, holding the holder's
    process id, host and start time as JSON). `acquire` raises a one-line [`UsageError`] naming the holder when a
    live run holds it.
    """

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.path = os.path.join(output_dir, LOCK_FILE)
        self._fd: Optional[int] = None

    def _holder(self, fd: int) -> Dict:
        try:
            data = loads(os.pread(fd, 4096, 0), self.path, max_bytes=4096, expect=dict)
        except (OSError, JsonFileError):
            return {}
        return data

    def acquire(self) -> Optional[Dict]:
        """Take the lock; returns the record of a stale lock it took over (a killed run's), else `None`."""
        import fcntl

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if not isinstance(err, BlockingIOError):  # a filesystem without locks (some FUSE mounts)
                    os.close(fd)
                    logger.warning("Cannot lock %s (%s): a second run in this folder would not be refused.",
                                   self.path, one_line(err, 200))
                    return None
                holder = self._holder(fd)
                os.close(fd)
                raise UsageError(
                    f"Another training run is using the output folder {self.output_dir!r}: process "
                    f"{holder.get('pid', '?')} on host {holder.get('host', '?')} (started "
                    f"{holder.get('started', '?')}) holds {LOCK_FILE}. Wait for it to end, stop it, or use another "
                    f"--output_dir."
                ) from None
            # the holder may have removed the file between our open and our lock: lock the file that is there
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        stale = self._holder(fd) or None
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
        except OSError as err:  # a full disk: the lock holds all the same, only its record of the holder is missing
            logger.warning("Cannot record this run in %s (%s); the folder is locked all the same.", self.path,
                           one_line(err, 200))
        if stale:
            logger.warning("Taking over the lock of %s left by process %s on host %s (started %s), which ended "
                           "without releasing it.", self.output_dir, stale.get("pid", "?"), stale.get("host", "?"),
                           stale.get("started", "?"))
        return stale

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.remove(self.path)  # while still locked: a run waiting on the old file notices the new inode
        os.close(self._fd)
        self._fd = None


def is_collective_failure(err: BaseException) -> bool:
    """Whether `err` is a failed collective (a peer's connection closed or reset, or a timeout waiting for it)."""
    import torch.distributed as dist

    if isinstance(err, getattr(dist, "DistError", ())):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(key in text for key in (
        "connection closed by peer", "connection reset", "connection refused", "broken pipe", "timed out",
        "timeout", "gloo", "nccl", "socket", "processgroup", "c10d"))


def _process_state(pid: int) -> str:
    """'running', 'stopped', or 'gone' (no such process, or a zombie) for a process on this host."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return "gone"
        except OSError:
            pass
        return "running"
    return {"Z": "gone", "X": "gone", "T": "stopped", "t": "stopped"}.get(state, "running")


def describe_lost_ranks(ranks: List[Dict], me: int) -> str:
    """
    Which of the other ranks (`ranks[i] = {"pid", "host"}`, gathered at set-up) are gone: those on this host are
    looked up; a rank on another host is named as not answering.
    """
    host = socket.gethostname()
    gone, stopped, silent = [], [], []
    for rank, info in enumerate(ranks):
        if rank == me:
            continue
        label = f"rank {rank} (process {info['pid']} on host {info['host']})"
        if info["host"] != host:
            silent.append(label)
            continue
        state = _process_state(info["pid"])
        (gone if state == "gone" else stopped if state == "stopped" else silent).append(label)
    parts = []
    if gone:
        parts.append(", ".join(gone) + " exited")
    if stopped:
        parts.append(", ".join(stopped) + " is stopped (SIGSTOP)")
    if silent and not (gone or stopped):
        parts.append(", ".join(silent) + " did not answer")
    return "; ".join(parts) or "another rank did not answer"


def is_disk_error(err: BaseException) -> bool:
    """
    Whether a failed write is the disk's doing (no space, quota, file size limit, read-only, permission): an `OSError`
    with one of `DISK_ERRNOS`, or the same failure as torch's zip writer (a `RuntimeError`: "file write failed") and
    safetensors (a `SafetensorError` quoting the OS error) report it.
    """
    if isinstance(err, OSError):
        return err.errno in DISK_ERRNOS
    text = str(err)
    return any(key in text for key in ("file write failed", "No space left", "StorageFull", "File too large",
                                       "FileTooLarge", "Disk quota", "QuotaExceeded", "Read-only file system",
                                       "ReadOnlyFilesystem"))


@contextlib.contextmanager
def writing(what: str, folder: str, last_checkpoint: Optional[str]):
    """Turn a failed write of `what` in `folder` into one [`OutputWriteError`] line (full disk, quota, file size limit,
    permission), naming the checkpoint a resume starts from."""
    try:
        yield
    except Exception as err:
        if not is_disk_error(err):
            raise
        if last_checkpoint is None:  # before the resume: the newest complete checkpoint in the folder
            from .checkpointing import list_checkpoints

            last_checkpoint = (list_checkpoints(folder) or [None])[-1]
        kept = (f"The last checkpoint {last_checkpoint!r} is intact; free space (or fix the permissions) and resume "
                f"with --resume_from_checkpoint latest." if last_checkpoint else
                "No checkpoint was written yet; free space (or fix the permissions) and start again.")
        raise OutputWriteError(f"Cannot write {what} in {folder!r}: {describe_disk_error(err, folder)} "
                               f"{kept}") from None


def describe_disk_error(err: BaseException, folder: str) -> str:
    """The error on one line, with the free space of `folder`'s filesystem when the message does not say "space"."""
    import shutil

    text = one_line(err, 300).rstrip(".") + "."
    if "space" not in text.lower():
        with contextlib.suppress(OSError):
            text += f" {shutil.disk_usage(folder).free:,} bytes are free on that filesystem."
    return text


@contextlib.contextmanager
def quiet_writer_threads():
    """
    While training, a background writer thread (TensorBoard's event writer) that dies of a full disk logs one line
    instead of a traceback; the main thread reports the failure when it next writes a log. Other thread errors are
    left to the previous hook.
    """
    previous = threading.excepthook

    def hook(args):
        if args.exc_value is not None and is_disk_error(args.exc_value):
            logger.warning("The %s thread stopped: %s", getattr(args.thread, "name", "writer"),
                           one_line(args.exc_value, 300))
        else:
            previous(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous
