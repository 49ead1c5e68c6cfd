"""Several workers on one search: liveness and locks around the shared Optuna storage.

How workers share a search (storage.py holds the queue itself):

- every worker plans the same phases from the same spec and storage, so they agree on the model
  keys; `enqueue_missing` queues each missing key, and `claim_pending` hands each WAITING trial to
  exactly one worker (the storage's WAITING -> RUNNING update is one ``SELECT ... FOR UPDATE``
  transaction on PostgreSQL);
- while a worker trains, a `Heartbeat` thread records a heartbeat for each trial it holds. The
  heartbeat is recorded *before* the claim, so no trial is ever RUNNING without one (Optuna never
  fails a RUNNING trial that has no heartbeat). A worker with nothing to claim calls
  `recover_abandoned(single_process=False)`, which fails every trial whose heartbeat is older than
  the grace period (its worker died), and queues its key again;
- each worker announces itself (study system attribute `worker:host:pid` = the time of its last
  heartbeat), and a claim takes at most a fair share of the WAITING models, ceil(waiting / live
  workers), so that one worker does not take a whole phase into one stack while others idle;
- creating the tables and the study happens under `run_lock`, a PostgreSQL advisory lock, so any
  number of workers may start at the same moment on an empty database;
- SQLite storage is for one process at a time: `single_process_lock` refuses a second one with a
  clear message, and every RUNNING trial found at start belongs to a process that was killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import math
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna

from taskscout.errors import SpecError

WORKER_ATTR = "worker"  # trial system attribute: host:pid of the worker that claimed it
ANNOUNCE_PREFIX = "worker:"  # study system attribute per worker: time.time() of its last heartbeat


def worker_id() -> str:
    """This process as other workers see it: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def is_shared(url: str) -> bool:
    """Whether several processes may work on a storage at once (every RDB back end but SQLite)."""
    return not url.startswith("sqlite")


@contextlib.contextmanager
def quiet_experimental() -> Iterator[None]:
    # Heartbeats and fail_stale_trials are marked experimental in optuna; they are what we rely on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def _lock_key(name: str) -> int:
    digest = hashlib.blake2b(f"taskscout:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextlib.contextmanager
def run_lock(url: str, name: str) -> Iterator[None]:
    """Hold a lock called `name` on the database server while the block runs.

    PostgreSQL: a session-level advisory lock on a connection of its own, released when the block
    ends or the process dies. Other back ends: no lock (SQLite has one process at a time).
    """
    if not url.startswith("postgresql"):
        yield
        return
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _lock_key(name)})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _lock_key(name)})
                conn.commit()
    finally:
        engine.dispose()


def live_workers(storage: Any, study_id: int, grace_period: float) -> list[str]:
    """host:pid of every worker of the study that announced itself within `grace_period` seconds."""
    now = time.time()
    attrs = storage.get_study_system_attrs(study_id)
    return sorted(k[len(ANNOUNCE_PREFIX):] for k, v in attrs.items()
                  if k.startswith(ANNOUNCE_PREFIX) and isinstance(v, (int, float)) and now - v < grace_period)


@contextlib.contextmanager
def try_run_lock(url: str, name: str) -> Iterator[bool]:
    """Like `run_lock`, without waiting: yields whether this process got the lock (held until the
    block ends). Off PostgreSQL there is no lock, and every caller gets True."""
    if not url.startswith("postgresql"):
        yield True
        return
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            got = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": _lock_key(name)}).scalar())
            conn.commit()
            try:
                yield got
            finally:
                if got:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _lock_key(name)})
                    conn.commit()
    finally:
        engine.dispose()


class Heartbeat:
    """Records a heartbeat for every held trial each interval, on a daemon thread, and announces
    this worker in the study (`live_workers` counts the announced ones).

    A no-op when the storage has no heartbeat interval (SQLite). The thread starts with `start`
    and ends with `stop` (or with the process: a dead worker's heartbeats simply stop).
    """

    _opened = itertools.count()

    def __init__(self, storage: Any, study_id: int | None = None, grace_period: float | None = None) -> None:
        self._storage = storage
        self._study_id = study_id
        getter = getattr(storage, "get_heartbeat_interval", None)
        self.interval: int | None = getter() if getter is not None else None
        self.grace_period = grace_period if grace_period is not None else 2 * (self.interval or 0)
        n = next(Heartbeat._opened)
        # host:pid, and a number for a second store of the same process (as in tests)
        self.worker = worker_id() + (f"/{n}" if n else "")
        self.me = ANNOUNCE_PREFIX + self.worker
        self._held: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.interval is not None

    def beat(self, trial_id: int) -> None:
        """Record one heartbeat for `trial_id` now."""
        if self.enabled:
            self._storage.record_heartbeat(trial_id)

    def start(self) -> None:
        """Announce this worker and start beating (no-op without heartbeats or when running)."""
        if not self.enabled or self._thread is not None:
            return
        self._announce(time.time())
        self._thread = threading.Thread(target=self._run, name="taskscout-heartbeat", daemon=True)
        self._thread.start()

    def _announce(self, when: float) -> None:
        if self._study_id is not None:
            self._storage.set_study_system_attr(self._study_id, self.me, when)

    def live_workers(self) -> int:
        """Workers (this one included) whose announcement is younger than the grace period."""
        if self._study_id is None:
            return 1
        others = set(live_workers(self._storage, self._study_id, self.grace_period)) - {self.worker}
        return 1 + len(others)

    def fair_share(self, waiting: int, limit: int) -> int:
        """How many of `waiting` models one claim may take: at most `limit`, and no more than an
        equal split between the live workers (at least one)."""
        return max(1, min(limit, math.ceil(waiting / self.live_workers())))

    def hold(self, trial_id: int) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._held.add(trial_id)

    def release(self, trial_id: int) -> None:
        with self._lock:
            self._held.discard(trial_id)

    @property
    def held(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._held)

    def _run(self) -> None:
        assert self.interval is not None
        while not self._stop.wait(self.interval):
            # A passing database error must not end the thread: the next beat tries again.
            with contextlib.suppress(Exception):
                self._announce(time.time())
            for trial_id in sorted(self.held):
                with contextlib.suppress(Exception):
                    self._storage.record_heartbeat(trial_id)

    def stop(self) -> None:
        """Stop beating and withdraw the announcement (the worker is leaving)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            with contextlib.suppress(Exception):
                self._announce(0.0)


@contextlib.contextmanager
def single_process_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on the run directory; a second process gets a clear error.

    For SQLite storage, which one process uses at a time. The lock dies with the process.
    """
    path = Path(run_dir) / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SpecError(
                f"another taskscout search is running on '{run_dir}' (SQLite storage serves one process); "
                "wait for it to end, or give every worker --storage postgresql+psycopg2://... to share the work"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
