"""Many workers, one search: jobs in an Optuna RDB storage, claimed atomically.

Part of the search stage (the only stage that imports optuna). Every unit of work is a trial:

- a *job* is enqueued once as a WAITING trial that carries its stable `key` and its `phase` as
  user attributes (and its kind, "model", "plan" or "finalize", as a system attribute);
- a worker *claims* a job by moving its trial from WAITING to RUNNING with
  `storage.set_trial_state_values`, which Optuna's RDB storage does in one transaction with
  ``SELECT ... FOR UPDATE``: when two workers race for the same trial, exactly one succeeds (this
  is also how `Study.ask` pops enqueued trials, but here the worker chooses which trial, so a
  stack holds jobs of one phase);
- while a worker holds trials, a `Heartbeat` thread records a heartbeat for each of them; a trial
  whose heartbeat is older than the grace period belongs to a dead worker, and the next worker to
  look (`claim` calls `optuna.storages.fail_stale_trials`) marks it FAIL, upon which
  `RetryHeartbeatStaleTrialCallback` enqueues a WAITING copy with the same key (up to `max_retry`
  times). A job that fails more often than that stays failed and is reported as missing.

The heartbeat of a trial is recorded *before* the claim, so no trial is ever RUNNING without a
heartbeat (Optuna never fails a RUNNING trial that has none).

Creating a run is serialised: on PostgreSQL, `make_storage` and `open_study(create=True)` hold a
session-level advisory lock while they create tables, the study and its first jobs, so any number
of processes may start at once and the run is still created exactly once. SQLite storage is for
one process at a time; `single_process_lock` makes a second process fail with a clear message,
and `fail_abandoned` retries the trials a killed process left RUNNING.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from taskscout.errors import MissingResultsError, SpecError

KIND_ATTR = "taskscout:job"  # system attribute: "model", "plan" or "finalize"
WORKER_ATTR = "taskscout:worker"  # system attribute: host:pid of the worker that claimed it
READY_ATTR = "taskscout:ready"  # study system attribute: the creator finished setting the run up
KEY = "key"  # user attribute: the job's stable identifier
PHASE = "phase"  # user attribute: the search phase the job belongs to

MODEL, PLAN, FINALIZE = "model", "plan", "finalize"

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass(frozen=True)
class Job:
    """One unit of work to enqueue: its key is unique within the study."""

    key: str
    phase: str
    kind: str = MODEL
    user_attrs: Mapping[str, Any] = field(default_factory=dict)


def worker_id() -> str:
    """This process as other workers see it: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # Heartbeats and their retry callback are marked experimental in optuna; they are what we use.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


# ------------------------------------------------------------------ storage and study


def _lock_key(name: str) -> int:
    digest = hashlib.blake2b(f"taskscout:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextlib.contextmanager
def run_lock(url: str, name: str) -> Iterator[None]:
    """Hold a lock named after `name` on the database server while the block runs.

    PostgreSQL: a session-level advisory lock on a connection of its own, released when the
    block ends or the process dies. Other back ends: no lock (SQLite is one process at a time).
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


def make_storage(
    url: str,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int = 3,
) -> RDBStorage:
    """An Optuna RDB storage at `url`; with `heartbeat_interval` (seconds), dead workers' trials
    are failed after `grace_period` (default 2 intervals) and retried up to `max_retry` times.

    Safe to call from many processes at once on an empty PostgreSQL database: table creation
    happens under `run_lock`.
    """
    if heartbeat_interval is not None and heartbeat_interval < 1:
        raise SpecError(f"heartbeat_interval must be an int >= 1 second. Got {heartbeat_interval!r} instead.")
    if grace_period is not None and heartbeat_interval is not None and grace_period <= heartbeat_interval:
        raise SpecError(
            f"grace_period ({grace_period} s) must be longer than heartbeat_interval ({heartbeat_interval} s), "
            "or live workers would be declared dead"
        )
    kwargs: dict[str, Any] = {}
    if url.startswith("postgresql"):
        kwargs["engine_kwargs"] = {"pool_pre_ping": True}
    elif is_sqlite(url):
        # Several connections of one process (the heartbeat thread) wait for each other.
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    try:
        with run_lock(url, "schema"), _quiet():
            return RDBStorage(
                url,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=(
                    RetryHeartbeatStaleTrialCallback(max_retry=max_retry) if heartbeat_interval else None
                ),
                **kwargs,
            )
    except ImportError as e:
        raise SpecError(
            f"storage {url!r} needs a database driver that is not installed ({e}); "
            "install taskscout[distributed] for PostgreSQL"
        ) from None
    except Exception as e:  # sqlalchemy's errors: unreachable server, bad credentials, bad URL
        if type(e).__module__.startswith("sqlalchemy"):
            raise SpecError(f"cannot open storage {_safe(url)}: {str(e).splitlines()[0]}") from None
        raise


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        import sqlalchemy as sa

        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a message must never fail
        return "the storage URL"


def _url_of(storage: Any) -> str:
    return getattr(storage, "url", None) or getattr(getattr(storage, "_backend", None), "url", "")


def open_study(
    storage: RDBStorage,
    name: str,
    *,
    create: bool,
    setup: Callable[[optuna.Study], None] | None = None,
) -> optuna.Study:
    """The study `name` in `storage`.

    create=True: create it unless it exists, and run `setup(study)` (which enqueues the first
    jobs) once per study, under `run_lock`: concurrent creators make one study and one setup. A
    setup that was interrupted runs again on the next create.
    create=False: load it; MissingResultsError when it does not exist or is not set up yet.
    """
    url = _url_of(storage)
    if not create:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            raise MissingResultsError(
                f"no study '{name}' in storage {_safe(url)}; create the run first "
                "(`taskscout search ... --storage URL` without --join)"
            ) from None
        if not _is_ready(study):
            raise MissingResultsError(
                f"study '{name}' in storage {_safe(url)} is still being created; start workers after "
                "the creating command has printed that the run is ready"
            )
        return study
    with run_lock(url, name):
        study = optuna.create_study(storage=storage, study_name=name, direction="minimize", load_if_exists=True)
        if not _is_ready(study):
            if setup is not None:
                setup(study)
            study._storage.set_study_system_attr(study._study_id, READY_ATTR, True)
    return study


def _is_ready(study: optuna.Study) -> bool:
    return bool(study._storage.get_study_system_attrs(study._study_id).get(READY_ATTR))


# ------------------------------------------------------------------ jobs


def job_kind(trial: FrozenTrial) -> str:
    return str(trial.system_attrs.get(KIND_ATTR, MODEL))


def enqueue(study: optuna.Study, jobs: Iterable[Job]) -> list[str]:
    """Add a WAITING trial for each job whose key has no trial yet (FAIL ones aside); returns the
    keys added. Enqueue a phase from one process only (a creator or a claimed plan job)."""
    present = {
        t.user_attrs.get(KEY)
        for t in study.get_trials(deepcopy=False)
        if t.state != TrialState.FAIL
    }
    added = []
    for job in jobs:
        if job.key in present:
            continue
        attrs = {**dict(job.user_attrs), KEY: job.key, PHASE: job.phase}
        study.add_trial(
            optuna.trial.create_trial(state=TrialState.WAITING, user_attrs=attrs, system_attrs={KIND_ATTR: job.kind})
        )
        present.add(job.key)
        added.append(job.key)
    return added


def claim(
    study: optuna.Study,
    *,
    limit: int,
    kind: str = MODEL,
    phase: str | None = None,
    same_phase: bool = True,
    keys: Iterable[str] | None = None,
    heartbeat: Heartbeat | None = None,
) -> list[optuna.Trial]:
    """Claim up to `limit` WAITING jobs of `kind` (and `phase`, and among `keys`, when given),
    oldest first; each returned trial is RUNNING and held by this process only.

    With same_phase (the default), all claimed jobs share the phase of the first one, so they can
    be trained in one stack. Fails stale trials of dead workers first, so their retries are
    claimable. Held trials are added to `heartbeat`.
    """
    storage = study._storage
    with _quiet():
        fail_stale_trials(study)
    wanted = set(keys) if keys is not None else None
    waiting = storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.WAITING,))
    beating = heartbeat is not None and heartbeat.enabled
    me = worker_id()
    claimed: list[optuna.Trial] = []
    for frozen in waiting:
        if len(claimed) >= limit:
            break
        attrs = frozen.user_attrs
        if job_kind(frozen) != kind or (phase is not None and attrs.get(PHASE) != phase):
            continue
        if wanted is not None and attrs.get(KEY) not in wanted:
            continue
        if beating:
            # Before the claim: a RUNNING trial without a heartbeat would never be failed.
            storage.record_heartbeat(frozen._trial_id)
        try:
            if not storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING):
                continue  # another worker was first
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        if beating:
            heartbeat.hold(frozen._trial_id)
        storage.set_trial_system_attr(frozen._trial_id, WORKER_ATTR, me)
        claimed.append(optuna.Trial(study, frozen._trial_id))
        if same_phase and phase is None:
            phase = attrs.get(PHASE)
    return claimed


def complete(
    study: optuna.Study,
    trial: optuna.Trial,
    value: float,
    *,
    user_attrs: Mapping[str, Any] | None = None,
    heartbeat: Heartbeat | None = None,
) -> bool:
    """Store `user_attrs` and finish `trial` as COMPLETE with `value`.

    False when the trial was taken away meanwhile (its heartbeat went stale and another worker
    failed it; its retry is someone else's job): the result is dropped, never stored twice.
    """
    try:
        for k, v in (user_attrs or {}).items():
            trial.set_user_attr(k, v)
        study.tell(trial, value)
        return True
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
        if study._storage.get_trial(trial._trial_id).state == TrialState.RUNNING:
            raise
        return False
    finally:
        if heartbeat is not None:
            heartbeat.release(trial._trial_id)


def release(study: optuna.Study, trials: Iterable[optuna.Trial], *, heartbeat: Heartbeat | None = None) -> int:
    """Put claimed, untrained jobs back to WAITING (a stop before training them); returns how many."""
    n = 0
    for trial in trials:
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            if study._storage.set_trial_state_values(trial._trial_id, state=TrialState.WAITING):
                n += 1
        if heartbeat is not None:
            heartbeat.release(trial._trial_id)
    return n


def fail_abandoned(study: optuna.Study, *, max_retry: int = 3) -> int:
    """Mark every RUNNING trial FAIL and enqueue its retry; returns how many.

    Only for storage that one process uses at a time (SQLite under `single_process_lock`): there a
    RUNNING trial at start-up was left by a process that was killed.
    """
    with _quiet():
        retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
    n = 0
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            if study._storage.set_trial_state_values(frozen._trial_id, state=TrialState.FAIL):
                retry(study, study._storage.get_trial(frozen._trial_id))
                n += 1
    return n


def job_counts(study: optuna.Study) -> dict[tuple[str, str], dict[str, int]]:
    """(kind, phase) -> {state name: number of trials}, for progress displays."""
    out: dict[tuple[str, str], dict[str, int]] = {}
    for t in study.get_trials(deepcopy=False):
        row = out.setdefault((job_kind(t), str(t.user_attrs.get(PHASE, ""))), {})
        row[t.state.name] = row.get(t.state.name, 0) + 1
    return out


def completed_once(trials: Sequence[FrozenTrial]) -> dict[str, FrozenTrial]:
    """key -> its COMPLETE trial; the lowest-numbered one should a key ever be completed twice."""
    out: dict[str, FrozenTrial] = {}
    for t in sorted(trials, key=lambda t: t.number):
        key = t.user_attrs.get(KEY)
        if t.state == TrialState.COMPLETE and key is not None and key not in out:
            out[key] = t
    return out


# ------------------------------------------------------------------ liveness


class Heartbeat:
    """A daemon thread that records a heartbeat for every held trial each interval.

    Use as a context manager; a no-op when the storage has no heartbeat interval (SQLite).
    """

    def __init__(self, storage: Any) -> None:
        self._storage = storage
        self.interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
        self.enabled = self.interval is not None
        self._held: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, trial_id: int) -> None:
        with self._lock:
            self._held.add(trial_id)

    def release(self, trial_id: int) -> None:
        with self._lock:
            self._held.discard(trial_id)

    def _run(self) -> None:
        assert self.interval is not None
        while not self._stop.wait(self.interval):
            with self._lock:
                held = sorted(self._held)
            for trial_id in held:
                # A transient database error must not kill the thread: the next beat retries.
                with contextlib.suppress(Exception):
                    self._storage.record_heartbeat(trial_id)

    def __enter__(self) -> Heartbeat:
        if self.enabled:
            self._thread = threading.Thread(target=self._run, name="taskscout-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


@contextlib.contextmanager
def single_process_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on the run directory; a second process gets a clear error.

    For SQLite storage, which one process uses at a time. Released when the process dies.
    """
    path = Path(run_dir) / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SpecError(
                f"another taskscout process is running on '{run_dir}' (SQLite storage is for one process); "
                "wait for it, or give every worker --storage postgresql+psycopg2://... to share the work"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
