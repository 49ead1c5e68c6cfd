"""Jobs in the storage: claimed exactly once, retried when their worker dies, created once."""

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

from taskscout import distributed as dist
from taskscout.errors import MissingResultsError, SpecError

ROOT = Path(__file__).resolve().parents[2]
CLAIMER = Path(__file__).with_name("_claimer.py")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _jobs(n: int, phase: str = "pairs") -> list[dist.Job]:
    return [dist.Job(key=f"{phase}/{i:03d}", phase=phase, user_attrs={"index": i}) for i in range(n)]


def _new_study(url: str, jobs: list[dist.Job], **storage_kw) -> tuple[optuna.Study, str]:
    name = f"s_{uuid.uuid4().hex[:8]}"
    storage = dist.make_storage(url, **storage_kw)
    study = dist.open_study(storage, name, create=True, setup=lambda s: dist.enqueue(s, jobs))
    return study, name


def _wait_for(predicate, what: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


# ------------------------------------------------------------------ PostgreSQL


def test_two_processes_never_claim_the_same_job(pg_url: str, tmp_path: Path) -> None:
    jobs = _jobs(60)
    study, name = _new_study(pg_url, jobs)
    start = tmp_path / "go"
    outs = [tmp_path / f"w{i}.txt" for i in range(2)]
    procs = [
        subprocess.Popen([sys.executable, str(CLAIMER), pg_url, name, str(o), str(start)], env=_env())
        for o in outs
    ]
    start.touch()
    for p in procs:
        assert p.wait(timeout=120) == 0
    claimed = [o.read_text().split() for o in outs]
    assert not set(claimed[0]) & set(claimed[1])
    assert sorted(claimed[0] + claimed[1]) == sorted(j.key for j in jobs)
    trials = study.get_trials()
    assert len(trials) == len(jobs)  # claiming creates no trials
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(t.user_attrs["key"] for t in trials) == sorted(j.key for j in jobs)
    # the worker recorded on each trial is the one that wrote its key
    by_worker = {t.system_attrs[dist.WORKER_ATTR] for t in trials}
    assert {t.user_attrs["by"] for t in trials} == by_worker


def test_threads_racing_for_one_job_get_it_once(pg_url: str) -> None:
    study, name = _new_study(pg_url, [])
    n = 6
    studies = [optuna.load_study(study_name=name, storage=dist.make_storage(pg_url)) for _ in range(n)]
    for round_ in range(4):
        dist.enqueue(study, [dist.Job(key=f"only/{round_}", phase="single")])
        barrier = threading.Barrier(n)
        got: list[int] = []

        def race(s: optuna.Study, barrier: threading.Barrier, got: list[int]) -> None:
            barrier.wait()
            got.append(len(dist.claim(s, limit=1)))

        threads = [threading.Thread(target=race, args=(s, barrier, got)) for s in studies]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(got) == [0] * (n - 1) + [1]


def test_dead_workers_jobs_are_failed_and_retried(pg_url: str, tmp_path: Path) -> None:
    jobs = _jobs(3)
    study, name = _new_study(pg_url, jobs, heartbeat_interval=1, grace_period=2)
    out, start = tmp_path / "held.txt", tmp_path / "go"
    start.touch()
    proc = subprocess.Popen([sys.executable, str(CLAIMER), pg_url, name, str(out), str(start), "--hold"], env=_env())
    try:
        _wait_for(lambda: out.exists() and len(out.read_text().split()) == 2, "the worker to claim two jobs")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    held = out.read_text().split()
    survivor = dist.make_storage(pg_url, heartbeat_interval=1, grace_period=2)
    mine = optuna.load_study(study_name=name, storage=survivor)
    claimed: list[optuna.Trial] = []
    with dist.Heartbeat(survivor) as beat:
        def collect() -> bool:
            claimed.extend(dist.claim(mine, limit=10, heartbeat=beat))
            return len(claimed) == 3
        _wait_for(collect, "the dead worker's jobs to become claimable")
        for t in claimed:
            assert dist.complete(mine, t, 0.0, heartbeat=beat)
    assert sorted(t.user_attrs["key"] for t in claimed) == sorted(j.key for j in jobs)
    trials = study.get_trials()
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert sorted(t.user_attrs["key"] for t in failed) == sorted(held)
    done = dist.completed_once(trials)
    assert sorted(done) == sorted(j.key for j in jobs)
    for key in held:  # the retry records which trial it replaces
        assert done[key].system_attrs["failed_trial"] in {t.number for t in failed}


def test_concurrent_creators_make_one_run(pg_url: str, tmp_path: Path) -> None:
    name = f"s_{uuid.uuid4().hex[:8]}"
    with pytest.raises(MissingResultsError, match="create the run first"):
        dist.open_study(dist.make_storage(pg_url), name, create=False)
    script = (
        "import sys, time; from pathlib import Path; from taskscout import distributed as d\n"
        "while not Path(sys.argv[3]).exists(): time.sleep(0.01)\n"
        "s = d.open_study(d.make_storage(sys.argv[1]), sys.argv[2], create=True, setup=lambda st: "
        "(time.sleep(0.5), d.enqueue(st, [d.Job(key=f'k{i}', phase='single') for i in range(5)])))\n"
    )
    start = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", script, pg_url, name, str(start)], env=_env()) for _ in range(3)]
    start.touch()
    for p in procs:
        assert p.wait(timeout=120) == 0
    study = dist.open_study(dist.make_storage(pg_url), name, create=False)
    assert sorted(t.user_attrs["key"] for t in study.get_trials()) == [f"k{i}" for i in range(5)]
    assert len(optuna.get_all_study_summaries(dist.make_storage(pg_url))) == 1


def test_unreachable_server_is_a_clear_error() -> None:
    with pytest.raises(SpecError, match="cannot open storage"):
        dist.make_storage("postgresql+psycopg2://nobody:secret@127.0.0.1:1/none")


# ------------------------------------------------------------------ SQLite (no server)


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"


def test_claim_takes_one_phase_in_enqueue_order(tmp_path: Path) -> None:
    jobs = _jobs(3, "single") + _jobs(2, "pairs") + [dist.Job(key="plan/depth", phase="depth", kind=dist.PLAN)]
    study, _ = _new_study(_sqlite(tmp_path), jobs)
    got = dist.claim(study, limit=10)
    assert [t.user_attrs["key"] for t in got] == ["single/000", "single/001", "single/002"]
    got = dist.claim(study, limit=1, keys={"pairs/001"})
    assert [t.user_attrs["key"] for t in got] == ["pairs/001"]
    assert [t.user_attrs["key"] for t in dist.claim(study, limit=10, kind=dist.PLAN)] == ["plan/depth"]
    assert [t.user_attrs["key"] for t in dist.claim(study, limit=10)] == ["pairs/000"]
    assert dist.claim(study, limit=10) == []


def test_enqueue_skips_keys_already_present(tmp_path: Path) -> None:
    study, _ = _new_study(_sqlite(tmp_path), _jobs(3))
    (first,) = dist.claim(study, limit=1)
    study.tell(first, state=TrialState.FAIL)
    added = dist.enqueue(study, _jobs(4))
    # the failed key may come again, the waiting and the new one only once
    assert added == ["pairs/000", "pairs/003"]


def test_release_and_abandoned_trials_go_back_to_waiting(tmp_path: Path) -> None:
    study, _ = _new_study(_sqlite(tmp_path), _jobs(4))
    a = dist.claim(study, limit=2)
    assert dist.release(study, a) == 2
    b = dist.claim(study, limit=3)
    assert [t.user_attrs["key"] for t in b] == ["pairs/000", "pairs/001", "pairs/002"]
    assert dist.complete(study, b[0], 0.5, user_attrs={"loss": 0.5})
    # the process "dies" holding pairs/001 and pairs/002: a restart retries them
    assert dist.fail_abandoned(study) == 2
    states = {(t.user_attrs["key"], t.state) for t in study.get_trials()}
    assert ("pairs/001", TrialState.FAIL) in states and ("pairs/001", TrialState.WAITING) in states
    # a result for a trial that was failed meanwhile is dropped, not stored
    assert not dist.complete(study, b[1], 0.1, user_attrs={"loss": 0.1})
    rest = dist.claim(study, limit=10)
    assert sorted(t.user_attrs["key"] for t in rest) == ["pairs/001", "pairs/002", "pairs/003"]
    for t in rest:
        assert dist.complete(study, t, 0.0)
    done = dist.completed_once(study.get_trials())
    assert sorted(done) == [f"pairs/{i:03d}" for i in range(4)]
    assert done["pairs/000"].user_attrs["loss"] == 0.5


def test_workers_cannot_join_a_run_that_is_not_set_up(tmp_path: Path) -> None:
    storage = dist.make_storage(_sqlite(tmp_path))
    optuna.create_study(storage=storage, study_name="half")  # a creator killed before its setup ended
    with pytest.raises(MissingResultsError, match="still being created"):
        dist.open_study(storage, "half", create=False)
    study = dist.open_study(storage, "half", create=True, setup=lambda s: dist.enqueue(s, _jobs(2)))
    assert len(dist.open_study(storage, "half", create=False).get_trials()) == 2 == len(study.get_trials())


def test_second_process_on_a_sqlite_run_is_refused(tmp_path: Path) -> None:
    with dist.single_process_lock(tmp_path):
        with pytest.raises(SpecError, match="another taskscout process"):
            with dist.single_process_lock(tmp_path):
                pass
    with dist.single_process_lock(tmp_path):  # released: usable again
        pass


def test_grace_period_must_exceed_the_interval() -> None:
    with pytest.raises(SpecError, match="grace_period"):
        dist.make_storage("sqlite://", heartbeat_interval=5, grace_period=5)
