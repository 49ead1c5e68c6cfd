"""The Optuna storage of a search: every trained model is one trial.

Life of a model (all through the storage, so that any process that can reach it sees the same):

1. `enqueue_missing` adds a WAITING trial for every planned model whose key has no WAITING,
   RUNNING or COMPLETE trial yet. The model's description (PlannedModel.attrs: key, phase, tasks,
   main, aux, seed, branch_layer) is written with the trial, so a trial is never without its key.
2. `claim_pending` moves up to K WAITING trials of the wanted keys to RUNNING. The move is one
   conditional update in the storage (Optuna's own queue mechanism: it succeeds only if the trial is
   still WAITING), so two processes never claim the same trial. Two WAITING trials with the same key
   (two processes enqueued the same model) are resolved right after claiming: the claim yields if the
   key already has a COMPLETE trial or a RUNNING trial with a lower number.
3. `record_result` stores the outcome as user attributes ("result": losses, metrics, epochs,
   seconds; "curves": the learning curves) and tells the trial COMPLETE with its value, the summed
   validation loss of its main tasks.
4. A process killed between 2 and 3 leaves RUNNING trials. `recover_abandoned` marks them FAIL and
   the next `enqueue_missing` queues their keys again. With one process per storage (the default,
   SQLite in the run directory) every RUNNING trial found at start is abandoned; concurrent workers
   (a shared storage such as PostgreSQL) open the store with heartbeats (`liveness`) and pass
   `single_process=False`: only trials whose heartbeat went stale are abandoned (see workers.py).

Curves are kept in the storage (trial user attribute "curves": {split: {head: [[epoch, loss], ...]}},
losses rounded to 6 significant digits), so tables can be rebuilt from the storage alone.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from taskscout.errors import MissingResultsError, SpecError
from taskscout.search.plan import PlannedModel
from taskscout.search.workers import WORKER_ATTR, Heartbeat, quiet_experimental, run_lock

RESULT_ATTR = "result"
CURVES_ATTR = "curves"
DUPLICATE_ATTR = "duplicate_of"
FINGERPRINT_ATTR = "fingerprint"
SPEC_ATTR = "spec"
# The phases the last finished run of the study left unfinished (its time limit); [] when complete.
UNFINISHED_ATTR = "unfinished_phases"


@dataclass(frozen=True, eq=False)
class Store:
    """An open study: the Optuna study plus the storage it lives in."""

    study: optuna.Study
    storage: optuna.storages.BaseStorage
    study_id: int
    url: str
    heartbeat: Heartbeat | None = None  # keeps this process's claimed trials alive (shared storage)

    @property
    def name(self) -> str:
        return self.study.study_name

    def close(self) -> None:
        """Stop the heartbeat thread (trials still held then go stale and are retried elsewhere)."""
        if self.heartbeat is not None:
            self.heartbeat.stop()


@dataclass(frozen=True)
class Claim:
    """A RUNNING trial this process owns, and the model it stands for."""

    number: int
    trial_id: int
    model: PlannedModel


@dataclass(frozen=True)
class TrialRecord:
    """A COMPLETE trial read back from the storage."""

    number: int
    model: PlannedModel
    result: dict[str, Any]  # val_loss, val_metric ({head name: value}), epochs, best_epoch, seconds
    curves: dict[str, dict[str, list]]  # split -> head name -> [[epoch, loss], ...]
    finished: datetime | None


def _rdb(url: str, *, liveness: tuple[int, int] | None = None) -> optuna.storages.BaseStorage:
    """The storage at `url`; liveness = (heartbeat_interval, grace_period) in seconds enables
    Optuna's heartbeats (for storage shared by several workers)."""
    import sqlalchemy.exc

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("sqlite"):
        # a second process (a rerun, `taskscout report`) may read while this one writes
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    elif url.startswith("postgresql"):
        kwargs["engine_kwargs"] = {"pool_pre_ping": True}  # a server restart must not kill a worker
    if liveness is not None:
        kwargs["heartbeat_interval"], kwargs["grace_period"] = liveness
    try:
        # Workers starting together on an empty database would race to create the tables.
        with run_lock(url, "schema"), quiet_experimental():
            rdb = optuna.storages.RDBStorage(url, **kwargs)
    except (ValueError, ImportError, sqlalchemy.exc.SQLAlchemyError) as e:
        raise SpecError(
            f"cannot open the Optuna storage {mask_url(url)}: {str(e).splitlines()[0]}; "
            f"give a database URL such as sqlite:///study.db or postgresql+psycopg2://user@host/db"
        ) from None
    if url.startswith("sqlite"):
        _fast_sqlite(rdb)
    # The cached wrapper reads finished trials once; create_study uses the same object.
    return optuna.storages._CachedStorage(rdb)


def _fast_sqlite(rdb: optuna.storages.RDBStorage) -> None:
    """Write-ahead logging with synchronous=NORMAL: a commit no longer waits for the disk, which
    makes the search's many small transactions about 10x cheaper. A killed process loses nothing
    committed (the log survives it); only a power cut can lose the last commits, which a rerun
    then trains again."""
    from sqlalchemy import event

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(rdb.engine, "connect", on_connect)
    rdb.engine.dispose()  # connections opened before the listener reconnect with it


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***, for messages."""
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        if ":" in creds:
            return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


def open_store(
    url: str,
    name: str,
    *,
    fingerprint: Mapping[str, Any],
    spec_json: str,
    fresh: bool = False,
    create: bool = True,
    liveness: tuple[int, int] | None = None,
) -> Store:
    """Create the study `name` in `url`, or load it when it exists (`fresh`: delete it first, and
    the run's other studies, named "`name`:...").

    A loaded study must have been created for the same data and model settings (`fingerprint`);
    otherwise its trials would mix with incomparable ones, and this is a SpecError. With
    create=False the study must exist (a worker joining a run): MissingResultsError otherwise.
    `liveness` = (heartbeat_interval, grace_period) gives the store a Heartbeat for its claims.
    Creation holds `run_lock`, so workers that start together create the study exactly once."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not create and url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        raise MissingResultsError(f"no study '{name}' to join: {mask_url(url)} does not exist; create the run first "
                                  f"(the same `taskscout search` command without --join)")
    storage = _rdb(url, liveness=liveness)
    with run_lock(url, f"study:{name}"):
        if fresh:  # the study and the run's own studies beside it ("NAME:subsets", the proposer's)
            for other in [s.study_name for s in storage.get_all_studies()]:
                if other == name or other.startswith(f"{name}:"):
                    delete_study(storage, other)
        if create:
            study = optuna.create_study(storage=storage, study_name=name, direction="minimize", load_if_exists=True)
        else:
            try:
                study = optuna.load_study(study_name=name, storage=storage)
            except KeyError:
                raise MissingResultsError(
                    f"no study '{name}' in {mask_url(url)} to join; create the run first "
                    f"(the same `taskscout search` command without --join, or with --create-only)"
                ) from None
        study_id = storage.get_study_id_from_name(name)
        attrs = study.user_attrs
        stored = attrs.get(FINGERPRINT_ATTR)
        wanted = json.loads(json.dumps(fingerprint))
        if stored is None:
            study.set_user_attr(FINGERPRINT_ATTR, wanted)
            study.set_user_attr(SPEC_ATTR, spec_json)
        elif stored != wanted:
            changed = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
            raise SpecError(
                f"study '{name}' in {mask_url(url)} was run with different settings ({', '.join(changed)}); "
                f"rerun with --fresh to start over, or give another --out/--name to keep both"
            )
    heartbeat = None
    if liveness is not None:
        heartbeat = Heartbeat(storage, study_id, grace_period=liveness[1])
        heartbeat.start()
    return Store(study, storage, study_id, url, heartbeat)


def open_existing(storage: optuna.storages.BaseStorage | str, url: str, name: str) -> Store:
    """Load study `name` (which must exist) without changing it."""
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        raise MissingResultsError(f"no study database at {url[len('sqlite:///'):]}; run `taskscout search` first")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if isinstance(storage, str):
        storage = _rdb(storage)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise MissingResultsError(f"no study '{name}' in {mask_url(url)}; run `taskscout search` first") from None
    return Store(study, storage, storage.get_study_id_from_name(name), url)


def delete_study(storage: optuna.storages.BaseStorage | str, name: str) -> bool:
    """Delete study `name` if it exists; True when it did."""
    if isinstance(storage, str):
        storage = _rdb(storage)
    try:
        optuna.delete_study(study_name=name, storage=storage)
    except KeyError:
        return False
    return True


def spec_json_from_storage(url: str, name: str) -> str | None:
    """The resolved spec saved with study `name`, or None when the study does not exist."""
    storage = _rdb(url)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None
    return study.user_attrs.get(SPEC_ATTR)


def _trials(store: Store, states: Sequence[TrialState]) -> list[optuna.trial.FrozenTrial]:
    return store.storage.get_all_trials(store.study_id, deepcopy=False, states=tuple(states))


def recover_abandoned(store: Store, *, single_process: bool = True) -> int:
    """Mark trials left RUNNING by a dead process FAIL (their keys get queued again); the count.

    single_process: every RUNNING trial is abandoned (nobody else works on this study). Otherwise
    those whose heartbeat went stale (the storage must have been opened with heartbeats), and with
    them every other RUNNING trial of the same worker: a worker beats for all its trials in one
    loop, so one stale trial means the worker is gone, even if the last beats of its other
    trials were a moment later."""
    running = _trials(store, (TrialState.RUNNING,))
    if not single_process:
        with quiet_experimental():
            optuna.storages.fail_stale_trials(store.study)
        still = _trials(store, (TrialState.RUNNING,))
        alive = {t.number for t in still}
        dead = set()
        for t in running:  # failed just now, not completed by their worker nor given up as duplicates
            if t.number not in alive:
                now = store.storage.get_trial(t._trial_id)
                if now.state == TrialState.FAIL and DUPLICATE_ATTR not in now.user_attrs:
                    dead.add(t.system_attrs.get(WORKER_ATTR))
        dead.discard(None)
        for t in still:
            if t.system_attrs.get(WORKER_ATTR) in dead:
                with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                    store.storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        return len(running) - len(_trials(store, (TrialState.RUNNING,)))
    for t in running:
        store.study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
    return len(running)


def key_states(store: Store) -> dict[str, set[TrialState]]:
    """key -> the states of its trials."""
    out: dict[str, set[TrialState]] = {}
    for t in _trials(store, tuple(TrialState)):
        key = t.user_attrs.get("key")
        if key is not None:
            out.setdefault(key, set()).add(t.state)
    return out


def in_progress_keys(store: Store) -> set[str]:
    """Keys with a WAITING or RUNNING trial: models some worker will still train."""
    live = {TrialState.WAITING, TrialState.RUNNING}
    return {k for k, states in key_states(store).items() if states & live}


@dataclass(frozen=True)
class PhaseProgress:
    """How far one phase is, as the storage sees it (for `taskscout status`)."""

    phase: str
    complete: int  # models (keys) with a COMPLETE trial
    running: int  # trials being trained now
    waiting: int  # trials queued, not claimed yet
    failed: int  # failed trials (their keys are queued again), duplicates aside
    workers: tuple[str, ...]  # host:pid of the workers training this phase now


def phase_progress(store: Store, phases: Sequence[str]) -> list[PhaseProgress]:
    """One PhaseProgress per phase in `phases` order (phases with no trial yet show zeros)."""
    trials = _trials(store, tuple(TrialState))
    out = []
    for phase in phases:
        mine = [t for t in trials if t.user_attrs.get("phase") == phase]
        running = [t for t in mine if t.state == TrialState.RUNNING]
        out.append(PhaseProgress(
            phase=phase,
            complete=len({t.user_attrs.get("key") for t in mine if t.state == TrialState.COMPLETE}),
            running=len(running),
            waiting=sum(t.state == TrialState.WAITING for t in mine),
            failed=sum(t.state == TrialState.FAIL and DUPLICATE_ATTR not in t.user_attrs for t in mine),
            workers=tuple(sorted({str(t.system_attrs[WORKER_ATTR]) for t in running if WORKER_ATTR in t.system_attrs})),
        ))
    return out


def completed_keys(store: Store) -> set[str]:
    return {k for k, states in key_states(store).items() if TrialState.COMPLETE in states}


def failures(store: Store) -> dict[str, int]:
    """key -> how often a trial of it failed (duplicates given up at claim time do not count)."""
    out: dict[str, int] = {}
    for t in _trials(store, (TrialState.FAIL,)):
        key = t.user_attrs.get("key")
        if key is not None and DUPLICATE_ATTR not in t.user_attrs:
            out[key] = out.get(key, 0) + 1
    return out


def enqueue_missing(store: Store, models: Iterable[PlannedModel], *, max_failures: int | None = None) -> int:
    """Queue a WAITING trial for every model whose key has no WAITING, RUNNING or COMPLETE trial.

    max_failures: a key that failed more often than this is given up (not queued again), so a
    model that kills every worker that trains it cannot stall a shared search forever.

    On PostgreSQL, workers enqueue one at a time (`run_lock`), so workers planning the same phase
    at once queue each model once; `claim_pending` still copes with duplicates."""
    live = {TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE}
    with run_lock(store.url, f"enqueue:{store.name}"):
        states = key_states(store)
        failed = failures(store) if max_failures is not None else {}
        queue = []
        for m in models:
            if states.get(m.key, set()) & live:
                continue
            if max_failures is not None and failed.get(m.key, 0) > max_failures:
                continue
            queue.append(m.attrs())
            states.setdefault(m.key, set()).add(TrialState.WAITING)
        _add_waiting_trials(store, queue)
    return len(queue)


def _add_waiting_trials(store: Store, attrs: Sequence[Mapping[str, Any]]) -> None:
    """Queue one WAITING trial per entry of `attrs` (its user attributes): what
    `study.enqueue_trial({}, user_attrs=a)` stores for each, in one transaction. Optuna's own path
    costs about ten SQL statements and a commit per trial (over 100 ms a trial on a busy 2-core
    machine, as long as training the trial's model when it is small); here the rows go in with
    a few bulk inserts. The trial numbers are counted under Optuna's lock on the study row, as
    Optuna counts them. Storages that are not SQL databases take Optuna's path."""
    backend = getattr(store.storage, "_backend", store.storage)
    if not attrs:
        return
    if not isinstance(backend, optuna.storages.RDBStorage):
        for a in attrs:
            store.study.enqueue_trial({}, user_attrs=dict(a))
        return
    from optuna.storages._rdb import models as orm
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(backend.scoped_session, True) as session:
        orm.StudyModel.find_or_raise_by_id(store.study_id, session, for_update=True)
        first = session.query(orm.TrialModel).filter(orm.TrialModel.study_id == store.study_id).count()
        trials = [orm.TrialModel(study_id=store.study_id, number=first + i, state=TrialState.WAITING,
                                 datetime_start=None, datetime_complete=None) for i in range(len(attrs))]
        session.add_all(trials)
        session.flush()  # assigns the trial ids
        session.add_all([orm.TrialSystemAttributeModel(trial_id=t.trial_id, key="fixed_params", value_json="{}")
                         for t in trials])
        session.add_all([orm.TrialUserAttributeModel(trial_id=t.trial_id, key=k, value_json=json.dumps(v))
                         for t, a in zip(trials, attrs, strict=True) for k, v in a.items()])


def claim_pending(store: Store, keys: Iterable[str], k: int) -> list[Claim]:
    """Claim up to `k` WAITING trials whose key is in `keys` (lowest trial numbers first).

    This is the single place where a process takes work: the WAITING -> RUNNING move is atomic in
    the storage, and a claim whose key is already COMPLETE, or RUNNING under a lower trial number,
    is given up (FAIL, with user attribute `duplicate_of`).

    With a shared storage, the claimed trials are held by the store's heartbeat until they are
    recorded or released, and carry the worker's host:pid (system attribute `worker`); a claim
    then takes no more than a fair share of the WAITING models (Heartbeat.fair_share)."""
    wanted = set(keys)
    beat = store.heartbeat
    fast = _claim_in_one_transaction(store, wanted, k) if beat is None else None
    if fast is not None:
        return _without_duplicates(store, *fast)
    waiting = [t for t in _trials(store, (TrialState.WAITING,)) if t.user_attrs.get("key") in wanted]
    if beat is not None and beat.enabled:
        k = beat.fair_share(len({t.user_attrs["key"] for t in waiting}), k)
    claims: list[Claim] = []
    for t in waiting:
        if len(claims) >= k:
            break
        trial_id = t._trial_id
        if beat is not None:
            # Before the claim: a RUNNING trial without a heartbeat is never declared dead.
            beat.beat(trial_id)
        try:
            won = store.storage.set_trial_state_values(trial_id, state=TrialState.RUNNING)
        except optuna.exceptions.UpdateFinishedTrialError:
            won = False
        if won:
            if beat is not None:
                beat.hold(trial_id)
                store.storage.set_trial_system_attr(trial_id, WORKER_ATTR, beat.worker)
            claims.append(Claim(t.number, trial_id, PlannedModel.from_attrs(t.user_attrs)))
    return _without_duplicates(store, claims)


def _without_duplicates(store: Store, claims: list[Claim], owners: dict[str, int] | None = None) -> list[Claim]:
    """The claims whose key has no COMPLETE trial and no RUNNING trial of a lower number; the
    others are given up (FAIL, user attribute `duplicate_of`). `owners`: key -> -1 (COMPLETE) or
    the lowest RUNNING trial number, when the caller read it already."""
    if not claims:
        return claims
    beat = store.heartbeat
    if owners is None:
        owners = {}
        for t in _trials(store, (TrialState.RUNNING, TrialState.COMPLETE)):
            key = t.user_attrs.get("key")
            if key is not None:
                _own(owners, key, -1 if t.state == TrialState.COMPLETE else t.number)
    kept = []
    for c in claims:
        owner = owners.get(c.model.key, c.number)
        if owner != c.number:
            store.storage.set_trial_user_attr(c.trial_id, DUPLICATE_ATTR, owner)
            store.study.tell(c.number, state=TrialState.FAIL, skip_if_finished=True)
            if beat is not None:
                beat.release(c.trial_id)
        else:
            kept.append(c)
    return kept


def _own(owners: dict[str, int], key: str, rank: int) -> None:
    if key not in owners or rank < owners[key]:
        owners[key] = rank


def _claim_in_one_transaction(store: Store, wanted: set[str], k: int) -> tuple[list[Claim], dict[str, int]] | None:
    """`claim_pending`'s claim without heartbeats, on an SQL storage, in one transaction: the
    WAITING trials of the wanted keys, lowest numbers first, each moved to RUNNING by an update
    that succeeds only while it is still WAITING (Optuna's own condition). Optuna's path reads
    every WAITING trial with all its attributes and commits once per claimed trial, which on a
    phase of a thousand small models cost seconds per stack. Also the owners of the claimed keys
    (`_without_duplicates`), read from the keys alone. None on other storages."""
    backend = getattr(store.storage, "_backend", store.storage)
    if not isinstance(backend, optuna.storages.RDBStorage):
        return None
    from optuna.storages._rdb import models as orm
    from optuna.storages._rdb.storage import _create_scoped_session

    trial, attr = orm.TrialModel, orm.TrialUserAttributeModel
    with _create_scoped_session(backend.scoped_session) as session:
        rows = (session.query(trial.trial_id, trial.number, attr.value_json)
                .join(attr, attr.trial_id == trial.trial_id)
                .filter(trial.study_id == store.study_id, trial.state == TrialState.WAITING, attr.key == "key")
                .order_by(trial.number).all())
        picked = [(tid, number) for tid, number, key in rows if json.loads(key) in wanted][:k]
        now, won = datetime.now(), []
        for tid, number in picked:
            moved = (session.query(trial).filter(trial.trial_id == tid, trial.state == TrialState.WAITING)
                     .update({"state": TrialState.RUNNING, "datetime_start": now}, synchronize_session=False))
            if moved:
                won.append((tid, number))
        attrs: dict[int, dict[str, Any]] = {}
        for tid, key, value in session.query(attr.trial_id, attr.key, attr.value_json).filter(
                attr.trial_id.in_([tid for tid, _ in won])):
            attrs.setdefault(tid, {})[key] = json.loads(value)
        owners: dict[str, int] = {}
        for number, state, key in (session.query(trial.number, trial.state, attr.value_json)
                                   .join(attr, attr.trial_id == trial.trial_id)
                                   .filter(trial.study_id == store.study_id, attr.key == "key",
                                           trial.state.in_([TrialState.RUNNING, TrialState.COMPLETE]),
                                           attr.value_json.in_([json.dumps(attrs[tid]["key"]) for tid, _ in won]))):
            _own(owners, json.loads(key), -1 if state == TrialState.COMPLETE else number)
    return [Claim(number, tid, PlannedModel.from_attrs(attrs[tid])) for tid, number in won], owners


def release(store: Store, claims: Iterable[Claim]) -> None:
    """Give claimed trials up (FAIL) after an error, so a later run queues their keys again."""
    for c in claims:
        store.study.tell(c.number, state=TrialState.FAIL, skip_if_finished=True)
        if store.heartbeat is not None:
            store.heartbeat.release(c.trial_id)


def _round(x: float) -> float:
    return float(f"{x:.9g}") if math.isfinite(x) else x


def record_result(store: Store, claim: Claim, result: Mapping[str, Any], curves: Mapping[str, Any], value: float) -> bool:
    """Store a trained model's outcome and mark its trial COMPLETE; True when stored.

    A non-finite value (a diverged model) is stored as +inf so the trial still completes. False
    when the trial was failed meanwhile (this worker stalled past the grace period and another
    one took its model over): the result is dropped, so no key is ever completed twice."""
    try:
        store.storage.set_trial_user_attr(claim.trial_id, CURVES_ATTR, curves)
        store.storage.set_trial_user_attr(claim.trial_id, RESULT_ATTR, dict(result))
        # study.tell would read the trial back twice first; the conditional update alone refuses a FAIL trial
        if not store.storage.set_trial_state_values(claim.trial_id, TrialState.COMPLETE,
                                                    [_round(value) if math.isfinite(value) else math.inf]):
            raise optuna.exceptions.UpdateFinishedTrialError(f"trial {claim.number} is no longer RUNNING")
        return True
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError):  # tell refuses a FAIL trial
        if store.storage.get_trial(claim.trial_id).state != TrialState.FAIL:
            raise
        return False
    finally:
        if store.heartbeat is not None:
            store.heartbeat.release(claim.trial_id)


def record_results(store: Store, items: Sequence[tuple[Claim, Mapping[str, Any], Mapping[str, Any], float]]) -> list[bool]:
    """`record_result` for each (claim, result, curves, value) of a stack, in one transaction
    on an SQL storage (Optuna's path costs two attribute writes and a `tell`, each its own
    transaction with several reads, per model). The same rows are written: the two user
    attributes, the value (+inf when not finite) and the state COMPLETE with its time. A trial
    failed meanwhile is left alone (False), as in `record_result`."""
    backend = getattr(store.storage, "_backend", store.storage)
    if not isinstance(backend, optuna.storages.RDBStorage):
        return [record_result(store, *item) for item in items]
    from optuna.storages._rdb import models as orm
    from optuna.storages._rdb.storage import _create_scoped_session

    stored = []
    try:
        with _create_scoped_session(backend.scoped_session) as session:
            ids = [claim.trial_id for claim, *_ in items]
            rows = {t.trial_id: t for t in session.query(orm.TrialModel).filter(
                orm.TrialModel.trial_id.in_(ids)).with_for_update()}
            now = datetime.now()
            for claim, result, curves, value in items:
                trial = rows[claim.trial_id]
                if trial.state == TrialState.FAIL:
                    stored.append(False)
                    continue
                backend.check_trial_is_updatable(trial.trial_id, trial.state)
                session.add_all([orm.TrialUserAttributeModel(trial_id=trial.trial_id, key=key, value_json=json.dumps(v))
                                 for key, v in ((CURVES_ATTR, curves), (RESULT_ATTR, dict(result)))])
                v, kind = orm.TrialValueModel.value_to_stored_repr(_round(value) if math.isfinite(value) else math.inf)
                session.add(orm.TrialValueModel(trial_id=trial.trial_id, objective=0, value=v, value_type=kind))
                trial.state, trial.datetime_complete = TrialState.COMPLETE, now
                stored.append(True)
    finally:
        if store.heartbeat is not None:
            for claim, *_ in items:
                store.heartbeat.release(claim.trial_id)
    return stored


def load_records(store: Store) -> list[TrialRecord]:
    """Every COMPLETE trial, one per key (the lowest trial number if a key ever completed twice)."""
    seen: set[str] = set()
    out = []
    for t in _trials(store, (TrialState.COMPLETE,)):
        key = t.user_attrs.get("key")
        if key is None or key in seen or RESULT_ATTR not in t.user_attrs:
            continue
        seen.add(key)
        out.append(TrialRecord(t.number, PlannedModel.from_attrs(t.user_attrs), t.user_attrs[RESULT_ATTR],
                               t.user_attrs.get(CURVES_ATTR, {}), t.datetime_complete))
    return out


def encode_curves(frame: Any) -> dict[str, dict[str, list]]:
    """A trainer's curves frame (task, epoch, split, loss) as compact JSON for the storage."""
    out: dict[str, dict[str, list]] = {}
    if frame is None or len(frame) == 0:
        return out
    # plain loops over the columns: a pandas group-by cost more than training a small model's epoch
    parts: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for split, task, e, v in zip(frame["split"].tolist(), frame["task"].tolist(), frame["epoch"].tolist(),
                                 frame["loss"].tolist(), strict=True):
        parts.setdefault((str(split), str(task)), []).append((int(e), float(v)))
    for (split, task), points in sorted(parts.items()):
        out.setdefault(split, {})[task] = [[e, _round(v)] for e, v in sorted(points, key=lambda p: p[0])]
    return out
