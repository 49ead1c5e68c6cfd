"""The search's queue in a shared storage: each model claimed once, dead workers' models retried,
the study created once, SQLite kept to one process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from taskscout.errors import MissingResultsError, SpecError
from taskscout.search.plan import PlannedModel
from taskscout.search.storage import (
    claim_pending,
    enqueue_missing,
    in_progress_keys,
    key_states,
    open_store,
    phase_progress,
    record_result,
    recover_abandoned,
    release,
)
from taskscout.search.workers import WORKER_ATTR, single_process_lock, try_run_lock, worker_id

ROOT = Path(__file__).resolve().parents[2]
CLAIMER = Path(__file__).with_name("_claimer.py")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _models(n: int, phase: str = "pairs") -> list[PlannedModel]:
    return [PlannedModel(phase, ("a", "b"), (), seed, 2) for seed in range(n)]


def _store(url: str, name: str | None = None, fingerprint: dict | None = None, **kw):
    return open_store(url, name or f"s_{uuid.uuid4().hex[:8]}", fingerprint=fingerprint or {}, spec_json="{}", **kw)


def _wait_for(predicate, what: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def _complete(store, claims) -> None:
    for c in claims:
        assert record_result(store, c, {"val_loss": {}}, {}, 0.0)


# ------------------------------------------------------------------ PostgreSQL


def test_two_processes_create_one_study_and_never_claim_the_same_model(pg_url: str, tmp_path: Path) -> None:
    name = f"s_{uuid.uuid4().hex[:8]}"
    with pytest.raises(MissingResultsError, match="to join; create the run first"):
        _store(pg_url, name, create=False)
    start = tmp_path / "go"
    outs = [tmp_path / f"w{i}.txt" for i in range(2)]
    procs = [
        subprocess.Popen([sys.executable, str(CLAIMER), pg_url, name, str(o), str(start)], env=_env())
        for o in outs
    ]
    # both open the study at once on an empty database: tables and study are created once
    _wait_for(lambda: all(Path(f"{o}.ready").exists() for o in outs) or any(p.poll() for p in procs),
              "both workers to open the study")
    assert [p.poll() for p in procs] == [None, None]
    store = _store(pg_url, name, create=False)
    assert optuna.get_all_study_names(store.storage) == [name]
    models = _models(30)
    enqueue_missing(store, models)
    start.touch()
    for p in procs:
        assert p.wait(timeout=120) == 0
    claimed = [o.read_text().split() for o in outs]
    assert not set(claimed[0]) & set(claimed[1])
    assert sorted(claimed[0] + claimed[1]) == sorted(m.key for m in models)
    trials = store.study.get_trials()
    assert len(trials) == len(models)  # claiming creates no trials
    assert {t.state for t in trials} == {TrialState.COMPLETE}
    # the worker that wrote a key down is the one that stored its result
    for t in trials:
        assert t.user_attrs["key"] in Path(t.user_attrs["result"]["by"]).read_text().split()
    with pytest.raises(SpecError, match="was run with different settings"):  # a worker with other settings
        _store(pg_url, name, {"epochs": 4}, create=False)


def test_threads_racing_for_one_model_get_it_once(pg_url: str) -> None:
    store = _store(pg_url)
    n = 6
    others = [_store(pg_url, store.name) for _ in range(n)]
    for seed in range(4):
        (model,) = [PlannedModel("single", ("a",), (), seed, 2)]
        enqueue_missing(store, [model])
        barrier = threading.Barrier(n)
        got: list[int] = []

        def race(s, barrier: threading.Barrier, got: list[int], key: str) -> None:
            barrier.wait()
            got.append(len(claim_pending(s, [key], 1)))

        threads = [threading.Thread(target=race, args=(s, barrier, got, model.key)) for s in others]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(got) == [0] * (n - 1) + [1]


def test_a_dead_workers_models_are_failed_and_queued_again(pg_url: str, tmp_path: Path) -> None:
    models = _models(3)
    store = _store(pg_url, liveness=(1, 2))
    enqueue_missing(store, models)
    out, start = tmp_path / "held.txt", tmp_path / "go"
    start.touch()
    proc = subprocess.Popen([sys.executable, str(CLAIMER), pg_url, store.name, str(out), str(start), "--hold"], env=_env())
    try:
        _wait_for(lambda: out.exists() and len(out.read_text().split()) == 2, "the worker to claim two models")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    held = sorted(out.read_text().split())
    running = store.study.get_trials(states=(TrialState.RUNNING,))
    assert sorted(t.user_attrs["key"] for t in running) == held
    assert {t.system_attrs[WORKER_ATTR] for t in running} == {f"{worker_id().split(':')[0]}:{proc.pid}"}
    # a live worker that holds a model keeps it: heartbeats go on while it trains
    (mine,) = claim_pending(store, [m.key for m in models], 3)
    time.sleep(3)  # longer than the grace period
    # one of the dead worker's trials had a late beat: the worker is gone all the same
    store.storage.record_heartbeat(running[0]._trial_id)
    assert recover_abandoned(store, single_process=False) == 2
    assert store.storage.get_trial(mine.trial_id).state == TrialState.RUNNING
    assert enqueue_missing(store, models) == 2
    claimed = claim_pending(store, [m.key for m in models], 10)
    assert sorted(c.model.key for c in claimed) == held
    _complete(store, [mine, *claimed])
    states = key_states(store)
    assert all(TrialState.COMPLETE in states[m.key] for m in models)
    assert sorted(k for k, s in states.items() if TrialState.FAIL in s) == held
    store.close()


def test_an_unreachable_server_is_one_clear_error() -> None:
    with pytest.raises(SpecError, match="cannot open the Optuna storage postgresql"):
        _store("postgresql+psycopg2://nobody:secret@127.0.0.1:1/none")


# ------------------------------------------------------------------ SQLite (no server)


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"


def test_a_model_that_keeps_failing_is_given_up(tmp_path: Path) -> None:
    store = _store(_sqlite(tmp_path))
    (model,) = _models(1)
    for _ in range(3):
        assert enqueue_missing(store, [model], max_failures=2) == 1
        release(store, claim_pending(store, [model.key], 1))
    assert enqueue_missing(store, [model], max_failures=2) == 0
    assert in_progress_keys(store) == set()
    (row,) = phase_progress(store, ["pairs"])
    assert (row.complete, row.failed, row.waiting, row.running) == (0, 3, 0, 0)


def test_a_result_for_a_model_taken_over_is_dropped(tmp_path: Path) -> None:
    store = _store(_sqlite(tmp_path))
    enqueue_missing(store, _models(1))
    (claim,) = claim_pending(store, [m.key for m in _models(1)], 1)
    # another worker declared this one dead and failed its trial
    store.study.tell(claim.number, state=TrialState.FAIL)
    assert not record_result(store, claim, {"val_loss": {"a": 0.1}}, {}, 0.1)
    assert store.storage.get_trial(claim.trial_id).user_attrs.get("result") is None


def test_status_counts_each_phase(tmp_path: Path) -> None:
    store = _store(_sqlite(tmp_path))
    enqueue_missing(store, _models(3, "single") + _models(2, "pairs"))
    _complete(store, claim_pending(store, [m.key for m in _models(3, "single")], 2))
    claim_pending(store, [m.key for m in _models(3, "single")], 1)
    rows = {r.phase: r for r in phase_progress(store, ["single", "pairs", "depth"])}
    assert (rows["single"].complete, rows["single"].running, rows["single"].waiting) == (2, 1, 0)
    assert (rows["pairs"].complete, rows["pairs"].waiting) == (0, 2)
    assert rows["depth"].complete == rows["depth"].waiting == 0


def test_a_second_process_on_a_sqlite_run_is_refused(tmp_path: Path) -> None:
    with single_process_lock(tmp_path):
        with pytest.raises(SpecError, match="another taskscout search is running"):
            with single_process_lock(tmp_path):
                pass
    with single_process_lock(tmp_path):  # released: usable again
        pass


def test_a_claim_takes_a_fair_share_when_other_workers_are_alive(pg_url: str) -> None:
    first = _store(pg_url, liveness=(1, 3))
    enqueue_missing(first, _models(10))
    keys = [m.key for m in _models(10)]
    # alone, a worker takes what its stack holds
    assert len(claim_pending(first, keys, 4)) == 4
    second = _store(pg_url, first.name, liveness=(1, 3))
    # two live workers share the 6 models still waiting: 3 each at most
    assert len(claim_pending(second, keys, 64)) == 3
    assert len(claim_pending(first, keys, 64)) == 2  # ceil(3 / 2)
    second.close()  # a leaving worker withdraws: the last one takes the rest
    assert len(claim_pending(first, keys, 64)) == 1
    first.close()


def test_workers_planning_a_phase_at_once_queue_each_model_once(pg_url: str) -> None:
    stores = [_store(pg_url, "same") for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    added: list[int] = []

    def plan(store) -> None:
        barrier.wait()
        added.append(enqueue_missing(store, _models(12)))

    threads = [threading.Thread(target=plan, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(added) == [0, 0, 0, 12]
    assert len(stores[0].study.get_trials()) == 12


def test_one_worker_finishes_the_run_the_others_are_told(pg_url: str, tmp_path: Path) -> None:
    with try_run_lock(pg_url, "finish:x") as first:
        with try_run_lock(pg_url, "finish:x") as second, try_run_lock(pg_url, "finish:y") as other_run:
            assert (first, second, other_run) == (True, False, True)
    with try_run_lock(pg_url, "finish:x") as again:  # released with the block
        assert again
    with try_run_lock(_sqlite(tmp_path), "finish:x") as a, try_run_lock(_sqlite(tmp_path), "finish:x") as b:
        assert a and b  # SQLite has one process: nothing to decide
