"""map_stacks: stacks on forked worker processes (Linux) or threads, results, progress, errors, memory."""

import multiprocessing
import os
import threading
import time

import pytest
import torch

from taskscout import parallel
from taskscout.parallel import forks_workers, map_stacks, recorded_worker_memory

needs_fork = pytest.mark.skipif(not forks_workers(), reason="stacks run on threads on this platform")


def square_sum(chunk, report):
    if report is not None:
        report(len(chunk))
    return sum(i * i for i in chunk), os.getpid(), torch.get_num_threads()


@pytest.fixture(params=["processes", "threads"])
def mode(request, monkeypatch):
    if request.param == "processes" and not forks_workers():
        pytest.skip("no fork() here (not Linux): stacks run on threads only")
    if request.param == "threads":
        monkeypatch.setattr(parallel, "forks_workers", lambda: False)
    return request.param


def test_results_come_back_in_order_with_progress(mode):
    chunks = [[1, 2], [3], [4, 5, 6], [7]]
    done: list[int] = []
    threads = torch.get_num_threads()
    out = map_stacks(square_sum, chunks, 2, progress=done.append)
    assert [r[0] for r in out] == [5, 9, 77, 49]
    assert sum(done) == 7  # every chunk's report reached the caller
    assert all(r[2] == 1 for r in out)  # one intra-op thread per stack
    assert torch.get_num_threads() == threads  # and that does not leak into the caller
    pids = {r[1] for r in out}
    if mode == "processes":
        assert os.getpid() not in pids and len(pids) == 4  # a process forked per stack
    else:
        assert pids == {os.getpid()}
    assert not multiprocessing.active_children()


def test_one_worker_runs_here_and_report_is_none_without_progress():
    seen = []

    def fn(chunk, report):
        seen.append(report)
        return os.getpid()

    assert map_stacks(fn, [[0], [1]], 1) == [os.getpid()] * 2
    assert seen == [None, None]


def test_an_error_in_a_stack_is_raised_with_its_traceback_and_stops_the_others(mode):
    started = time.perf_counter()
    cancel = threading.Event()

    def fn(chunk, report):
        if chunk == [0]:
            time.sleep(0.2)
            raise ValueError("stack 0 failed")
        while not cancel.is_set() and time.perf_counter() - started < 30:  # threads watch `cancel`
            time.sleep(0.01)
        return chunk

    with pytest.raises(ValueError, match="stack 0 failed") as info:
        map_stacks(fn, [[0], [1]], 2, cancel=cancel)
    assert time.perf_counter() - started < 10  # the other stack did not run its 30 s
    assert cancel.is_set()
    if mode == "processes":
        assert any("In the worker process of stack 0" in n and "ValueError" in n for n in info.value.__notes__)
    assert not multiprocessing.active_children()


class Unrebuildable(Exception):
    def __init__(self, a, b):  # pickles, but cannot be rebuilt from its args
        super().__init__(f"{a}/{b}")


@needs_fork
def test_an_exception_that_cannot_cross_processes_arrives_as_text():
    def fn(chunk, report):
        raise Unrebuildable(1, 2)

    with pytest.raises(RuntimeError, match="could not be sent back") as info:
        map_stacks(fn, [[0], [1]], 2)
    assert "Unrebuildable: 1/2" in str(info.value)


@needs_fork
def test_a_worker_that_dies_is_reported():
    def fn(chunk, report):
        if chunk == [1]:
            os._exit(3)
        return chunk

    with pytest.raises(RuntimeError, match=r"stack 1 ended without a result \(exit code 3\)"):
        map_stacks(fn, [[0], [1]], 2)
    assert not multiprocessing.active_children()


@needs_fork
def test_worker_memory_counts_what_each_worker_added():
    def fn(chunk, report):
        block = torch.ones(chunk[0] * 2**20 // 4)  # chunk[0] MiB, written, so resident
        return float(block[-1])

    with recorded_worker_memory() as added:
        map_stacks(fn, [[64], [8]], 2)
    assert len(added) == 2
    big, small = sorted(added, reverse=True)
    assert 64 * 2**20 <= big < 120 * 2**20  # the 64 MiB block, and not the parent's memory again
    assert small < big - 40 * 2**20
    with recorded_worker_memory() as none:
        map_stacks(fn, [[8]], 1)  # ran here: no worker
    assert none == []


@needs_fork
def test_a_worker_can_print(capfd):
    # The worker writes through stream objects of its own (see `_fresh_streams`), to the same
    # file descriptors as the caller's.
    import sys

    def fn(chunk, report):
        print(f"stack {chunk[0]} says hello", file=sys.stderr)
        print(f"stack {chunk[0]} prints")
        return chunk[0]

    assert map_stacks(fn, [[0], [1]], 2) == [0, 1]
    out, err = capfd.readouterr()
    assert "stack 0 says hello" in err and "stack 1 says hello" in err
    assert "stack 0 prints" in out and "stack 1 prints" in out


@needs_fork
def test_workers_die_with_a_killed_caller(tmp_path):
    # A caller killed outright (SIGKILL: no clean-up runs) leaves no worker training on.
    import signal
    import subprocess
    import sys

    script = tmp_path / "caller.py"
    pids = tmp_path / "pids"
    script.write_text(
        "import os, sys, time\n"
        "from taskscout.parallel import map_stacks\n"
        "def fn(chunk, report):\n"
        f"    with open({str(pids)!r}, 'a') as fh:\n"
        "        fh.write(f'{os.getpid()}\\n')\n"
        "    time.sleep(60)\n"
        "map_stacks(fn, [[0], [1]], 2)\n"
    )
    caller = subprocess.Popen([sys.executable, str(script)], cwd=os.getcwd())
    try:
        deadline = time.time() + 30
        while time.time() < deadline and (not pids.exists() or len(pids.read_text().split()) < 2):
            time.sleep(0.05)
        workers = [int(p) for p in pids.read_text().split()]
        assert len(workers) == 2
    finally:
        caller.send_signal(signal.SIGKILL)
        caller.wait()
    deadline = time.time() + 10
    alive = workers
    while alive and time.time() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _running(p)]
    assert alive == []


def _running(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False
