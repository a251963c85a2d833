"""The side-by-side harness of `scripts/benchmark.py --section vs_reference`
(`asintrovae_hf.experiments.speed.vs_reference`): loops in threads take strict turns."""

import threading
import time

import pytest
import torch

from asintrovae_hf.experiments.speed import vs_reference


@pytest.fixture(scope="module")
def benchmark():
    return vs_reference


def test_two_loops_alternate_one_iteration_at_a_time(benchmark):
    turns = benchmark._Turns(["a", "b"])
    lanes = {name: benchmark._Lane(name, turns, torch.device("cpu")) for name in ("a", "b")}
    events, busy = [], threading.Lock()

    def loop(name, n):
        def run():
            events.append((name, "setup"))
            for i in lanes[name].wrap(range(n)):
                assert busy.acquire(blocking=False), "two loops computed at once"
                events.append((name, i))
                torch.mm(torch.randn(64, 64), torch.randn(64, 64))
                time.sleep(0.01)
                busy.release()
            events.append((name, "after the loop"))  # still holding the turn
        return run

    jobs = [lanes["a"].run(loop("a", 5), 1), lanes["b"].run(loop("b", 5), 1)]
    for job in jobs:
        job.join(timeout=60)
    assert not any(job.is_alive() for job in jobs) and all(lane.error is None for lane in lanes.values())
    iterations = [e for e in events if isinstance(e[1], int)]
    assert [name for name, _ in iterations] == ["a", "b"] * 5
    assert events[:2] == [("a", "setup"), ("a", 0)]  # b's set-up waits for a's turn to pass
    for lane in lanes.values():  # iteration 0 warms up, 1 measures FLOPs and memory, 2-4 are timed
        assert len(lane.times) == 3 and all(t >= 0.01 for t in lane.times)
        assert lane.flops == 2 * 64 ** 3 and lane.peak_bytes >= 64 * 64 * 4


def test_a_failing_loop_does_not_block_the_other(benchmark):
    turns = benchmark._Turns(["a", "b"])
    lanes = {name: benchmark._Lane(name, turns, torch.device("cpu")) for name in ("a", "b")}

    def failing():
        for i in lanes["a"].wrap(range(5)):
            if i == 2:
                raise RuntimeError("boom")

    def fine():
        for _ in lanes["b"].wrap(range(5)):
            pass

    jobs = [lanes["a"].run(failing, 1), lanes["b"].run(fine, 1)]
    for job in jobs:
        job.join(timeout=60)
    assert not any(job.is_alive() for job in jobs)
    assert isinstance(lanes["a"].error, RuntimeError) and lanes["b"].error is None and len(lanes["b"].times) == 3
