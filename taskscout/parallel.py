"""Running several stacks at once on CPU: one forked worker process per stack.

A stack's step is hundreds of small torch operations, and each one's Python side holds the GIL.
Two stacks on two threads of one process therefore wait on each other: on the 2-core machine
this was built on, two 32-model stacks on threads took 2.7-2.8 s where the same two stacks in two
processes took 2.2-2.4 s, the time of one stack alone. So on Linux each stack runs in a process
forked for it: it inherits everything the parent holds (the data on the device, the plans, the
function to run, patched modules in tests) without copying or pickling, sets one intra-op thread,
and sends back only its result, pickled, over a pipe. Where `fork` is not available or is unsafe
with torch (macOS, Windows), stacks run on threads instead, with one intra-op thread each. Either
way a stack's result is the same bit for bit: it runs the same single-threaded kernels.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_ready
from typing import TypeVar

import torch

__all__ = ["Report", "forks_workers", "map_stacks", "recorded_worker_memory"]

_R = TypeVar("_R")
Report = Callable[[int], None] | None  # what a stack calls as its models finish (None: nobody listens)

_POLL_S = 0.2  # the caller waits in slices this long, so Ctrl-C reaches it while stacks run
_recorders: list[list[int]] = []  # open `recorded_worker_memory` blocks


@contextmanager
def recorded_worker_memory() -> Iterator[list[int]]:
    """Within the block, the memory each worker process of `map_stacks` added: its peak resident
    memory less its resident memory when it started, in bytes, in the order the workers finished.
    A forked worker's resident memory includes the pages it shares with its parent, which the
    parent's own figure already counts; this is what the worker added. Not counted: copies of
    the parent's pages that the worker writes to (its resident count does not change when a
    shared page is copied); on the trainer's path a worker writes to tensors of its own only.
    Empty when the stacks ran on threads."""
    record: list[int] = []
    _recorders.append(record)
    try:
        yield record
    finally:
        _recorders.remove(record)


def forks_workers() -> bool:
    """Whether `map_stacks` runs stacks in forked processes here (Linux) rather than on threads."""
    return sys.platform == "linux" and "fork" in multiprocessing.get_all_start_methods()


def map_stacks(fn: Callable[[list[int], Report], _R], chunks: list[list[int]], workers: int, *,
               progress: Callable[[int], None] | None = None,
               cancel: threading.Event | None = None) -> list[_R]:
    """`fn(chunk, report)` over the chunks (one stack each), `workers` at a time; results in order.

    With workers <= 1 every chunk runs here, one after the other. Otherwise each runs in a forked
    worker process on Linux and on a worker thread elsewhere (see the module docstring), with one
    intra-op thread. `report(n)`, which `fn` calls as models finish, reaches `progress` in this
    thread, one call at a time; `report` is None when `progress` is.

    On any exception here or in a stack (Ctrl-C included) `cancel` is set and the running stacks
    stop: worker processes are killed (they write nothing but their result), worker threads stop at
    their next step when `fn` watches `cancel`. Then the exception is raised, a worker's with its
    traceback as a note.
    """
    if workers <= 1:
        return [fn(c, progress) for c in chunks]
    if forks_workers():
        try:
            return _on_processes(fn, chunks, workers, progress)
        except BaseException:
            if cancel is not None:
                cancel.set()
            raise
    return _on_threads(fn, chunks, workers, progress, cancel)


def _on_threads(fn: Callable[[list[int], Report], _R], chunks: list[list[int]], workers: int,
                progress: Callable[[int], None] | None, cancel: threading.Event | None) -> list[_R]:
    threads = torch.get_num_threads()
    lock = threading.Lock()

    def report(n: int) -> None:
        assert progress is not None
        with lock:
            progress(n)

    def run(chunk: list[int]) -> _R:
        torch.set_num_threads(1)
        return fn(chunk, report if progress is not None else None)

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="taskscout-stack")
    try:
        futures = [pool.submit(run, c) for c in chunks]
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=_POLL_S, return_when=FIRST_EXCEPTION)
            for f in done:
                f.result()  # raises a stack's exception here
        return [f.result() for f in futures]
    except BaseException:
        if cancel is not None:
            cancel.set()  # before the shutdown below waits for the running stacks
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads)


class _Worker:
    """One forked process running one chunk, and the read end of its pipe."""

    def __init__(self, fn: Callable[[list[int], Report], object], chunk: list[int], index: int,
                 listen: bool) -> None:
        self.index = index
        ctx = multiprocessing.get_context("fork")
        self.conn, child_end = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=_child, args=(fn, chunk, child_end, listen, os.getpid()), daemon=True,
                                   name=f"taskscout-stack-{index}")
        with warnings.catch_warnings():
            # Python 3.12+ warns that fork() in a multi-threaded process may deadlock the child.
            # The other threads here are torch's idle intra-op pool and progress displays; the
            # child takes no lock they could hold: it runs single-threaded torch kernels, writes
            # to its own pipe, and prints through stream objects of its own (`_fresh_streams`).
            warnings.filterwarnings("ignore", message=r".*use of fork\(\) may lead to deadlocks.*",
                                    category=DeprecationWarning)
            self.process.start()
        child_end.close()  # so the pipe reads end-of-file if the child dies without a result

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()


def _proc_status_bytes(field: str) -> int:
    """A memory figure of this process from /proc/self/status (e.g. VmRSS, VmHWM), in bytes."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _fresh_streams() -> None:
    """New sys.stdout/sys.stderr objects on the same file descriptors. Another thread of the
    parent (a progress display) may have held a stream's lock at the moment of the fork, and in
    the child nobody would ever release it: a warning printed there would hang the worker."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):  # not a file (e.g. captured in memory): leave it
            continue
        setattr(sys, name, open(fd, "w", encoding=getattr(stream, "encoding", None), errors="backslashreplace",
                                closefd=False, buffering=1))


def _die_with_parent(parent: int) -> None:
    """Have the kernel kill this process when its parent dies (Linux's PR_SET_PDEATHSIG): a
    parent killed outright (SIGKILL, OOM, a scheduler's SIGTERM) runs no clean-up, and its
    workers would otherwise train on, orphaned, to the end of their stacks."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _child(fn: Callable[[list[int], Report], object], chunk: list[int], conn: Connection, listen: bool,
           parent: int) -> None:
    # Ctrl-C is the parent's to handle: it kills this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    _fresh_streams()
    torch.set_num_threads(1)
    started = _proc_status_bytes("VmRSS")

    def report(n: int) -> None:
        conn.send_bytes(pickle.dumps(("progress", n)))

    try:
        value = fn(chunk, report if listen else None)
        message = ("result", (value, max(0, _proc_status_bytes("VmHWM") - started)))
    except BaseException as e:
        message = ("error", (e, traceback.format_exc()))
    try:
        # Plain pickle: torch's multiprocessing pickler would share tensors through file
        # descriptors that this process must outlive.
        payload = pickle.dumps(message)
        if message[0] == "error":
            pickle.loads(payload)  # an exception that cannot be rebuilt is sent as text below
    except Exception:
        text = message[1][1] if message[0] == "error" else traceback.format_exc()
        payload = pickle.dumps(("error", (RuntimeError(f"a stack's result could not be sent back:\n{text}"), text)))
    conn.send_bytes(payload)
    conn.close()


def _on_processes(fn: Callable[[list[int], Report], _R], chunks: list[list[int]], workers: int,
                  progress: Callable[[int], None] | None) -> list[_R]:
    results: list[_R | None] = [None] * len(chunks)
    todo = list(enumerate(chunks))
    running: list[_Worker] = []
    try:
        while todo or running:
            while todo and len(running) < workers:
                index, chunk = todo.pop(0)
                running.append(_Worker(fn, chunk, index, listen=progress is not None))
            ready = wait_ready([w.conn for w in running], timeout=_POLL_S)
            for w in [w for w in running if w.conn in ready]:
                try:
                    kind, value = pickle.loads(w.conn.recv_bytes())
                except EOFError:
                    w.process.join()
                    raise RuntimeError(f"the worker process of stack {w.index} ended without a result "
                                       f"(exit code {w.process.exitcode}); was it killed, e.g. for memory?") from None
                if kind == "progress":
                    if progress is not None:
                        progress(value)
                    continue
                if kind == "error":
                    error, text = value
                    error.add_note(f"In the worker process of stack {w.index}:\n{text}")
                    raise error
                results[w.index], added = value
                for record in _recorders:
                    record.append(added)
                running.remove(w)
                w.stop()
        return results  # type: ignore[return-value]  # every index was filled
    finally:
        for w in running:
            w.stop()
