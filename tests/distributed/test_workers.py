"""Several search workers on one PostgreSQL storage: every model trained once, nothing lost when a
worker is killed, and the same measurements as one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from optuna.trial import TrialState

from taskscout import rundir
from taskscout.errors import MissingResultsError
from taskscout.search import run_search
from taskscout.search.storage import key_states, open_existing
from taskscout.search.workers import WORKER_ATTR
from taskscout.spec import resolve_spec

from ._worker import PlantedTrainer, fake_settings
from .conftest import real_settings
from .tables import assert_same_measurements

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("_worker.py")


@pytest.fixture(scope="module")
def fake_one_process(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fake") / "run"
    run_search(resolve_spec(None, fake_settings(out)), train_fn=PlantedTrainer())
    return out


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _start_workers(tmp_path: Path, pg_url: str, n: int, pause: float,
                   settings: Callable[[Path, str], dict] = fake_settings) -> list[tuple[subprocess.Popen, Path, Path]]:
    """n fake workers, each with a run directory of its own (as on n machines), released together."""
    go = tmp_path / "go"
    workers = []
    for i in range(n):
        out, log = tmp_path / f"worker{i}", tmp_path / f"worker{i}.log"
        log.touch()
        cmd = [sys.executable, str(WORKER), json.dumps(settings(out, pg_url)), str(log),
               "--fake", str(pause), "--go", str(go)]
        workers.append((subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
                        out, log))
    deadline = time.monotonic() + 120
    while not all(Path(f"{log}.ready").exists() for _, _, log in workers):
        for proc, _, _ in workers:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "workers did not start"
        time.sleep(0.05)
    go.touch()
    return workers


def _finish(proc: subprocess.Popen) -> dict:
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])


def _trained(log: Path) -> list[str]:
    return [key for line in log.read_text().splitlines() for key in json.loads(line)]


def _complete_once(pg_url: str, name: str, expected: set[str]) -> dict[str, set[TrialState]]:
    store = open_existing(pg_url, pg_url, name)
    trials = store.storage.get_all_trials(store.study_id, deepcopy=False)
    complete = Counter(t.user_attrs["key"] for t in trials if t.state == TrialState.COMPLETE)
    assert complete == dict.fromkeys(expected, 1)
    assert not [t for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)]
    return key_states(store)


def test_two_workers_train_every_model_once_and_measure_what_one_process_does(
    pg_url: str, tmp_path: Path, fake_one_process: Path
) -> None:
    expected = set(pd.read_parquet(fake_one_process / rundir.TRIALS)["key"])
    assert len(expected) == 8 + 14 + 8  # the depth phase was planned from the pair gains
    workers = _start_workers(tmp_path, pg_url, 2, pause=0.2)
    outputs = [_finish(proc) for proc, _, _ in workers]
    trained = [_trained(log) for _, _, log in workers]
    assert all(trained), "both workers trained models"
    assert Counter(trained[0] + trained[1]) == dict.fromkeys(expected, 1)
    assert [o["trained"] for o in outputs] == [len(t) for t in trained]
    _complete_once(pg_url, "planted4", expected)
    # the first worker done finishes the run in its directory; one that ends meanwhile leaves it
    finishers = [out for (_, out, _), o in zip(workers, outputs, strict=True) if o["tables"]]
    assert finishers
    for (_, out, _), o in zip(workers, outputs, strict=True):
        assert o["finished_elsewhere"] == (out not in finishers)
    for out in finishers:
        assert_same_measurements(out, fake_one_process)
    # a worker that joins the finished run trains nothing and writes the same tables
    late = tmp_path / "late"
    cmd = [sys.executable, str(WORKER), json.dumps(fake_settings(late, pg_url)), str(tmp_path / "late.log"),
           "--fake", "0", "--join"]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["trained"] == 0
    assert not (tmp_path / "late.log").exists()  # the fake trainer was never called
    assert_same_measurements(late, fake_one_process)


def _sampled_settings(out: Path, storage: str | None = None) -> dict:
    """fake_settings with search.max_models below all pairs x seeds: the pairs phase trains sampled subsets."""
    settings = fake_settings(out, storage)
    settings["name"] = "sampled4"
    settings["search"] = {**settings["search"], "phases": ["single", "pairs"], "max_models": 10}
    return settings


def test_two_workers_share_the_sampled_subsets(pg_url: str, tmp_path: Path) -> None:
    one = tmp_path / "one"
    run_search(resolve_spec(None, _sampled_settings(one)), train_fn=PlantedTrainer())
    trials = pd.read_parquet(one / rundir.TRIALS)
    assert "sampled" in set(trials["phase"]) and "pairs" not in set(trials["phase"])
    expected = set(trials["key"])
    workers = _start_workers(tmp_path, pg_url, 2, pause=0.2, settings=_sampled_settings)
    for proc, _, _ in workers:
        _finish(proc)
    trained = [_trained(log) for _, _, log in workers]
    assert all(trained), "both workers trained models"
    assert Counter(trained[0] + trained[1]) == dict.fromkeys(expected, 1)  # each subset model once
    _complete_once(pg_url, "sampled4", expected)


def test_a_worker_killed_mid_phase_loses_nothing(pg_url: str, tmp_path: Path, fake_one_process: Path) -> None:
    expected = set(pd.read_parquet(fake_one_process / rundir.TRIALS)["key"])
    (victim, _, victim_log), (survivor, survivor_out, survivor_log) = _start_workers(tmp_path, pg_url, 2, pause=0.5)
    deadline = time.monotonic() + 120
    while True:  # the workers create the study
        try:
            store = open_existing(pg_url, pg_url, "planted4")
            break
        except MissingResultsError:
            assert time.monotonic() < deadline, "no worker created the study"
            time.sleep(0.05)

    def victim_trains_pairs() -> list[int]:
        running = store.storage.get_all_trials(store.study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return [t.number for t in running if t.user_attrs.get("phase") == "pairs"
                and str(t.system_attrs.get(WORKER_ATTR, "")).endswith(f":{victim.pid}")]

    while not (held := victim_trains_pairs()):
        assert victim.poll() is None and time.monotonic() < deadline, "the victim never trained a pair"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    output = _finish(survivor)
    states = _complete_once(pg_url, "planted4", expected)
    for number in held:  # the killed worker's models failed, and the survivor trained them again
        trial = store.storage.get_trial(store.storage.get_trial_id_from_study_id_trial_number(store.study_id, number))
        assert trial.state == TrialState.FAIL
        assert trial.user_attrs["key"] in _trained(survivor_log)
        assert TrialState.COMPLETE in states[trial.user_attrs["key"]]
    assert output["trained"] == len(_trained(survivor_log))
    assert_same_measurements(survivor_out, fake_one_process)


def _toml(settings: dict) -> str:
    def value(v) -> str:
        return json.dumps(v) if not isinstance(v, bool) else str(v).lower()

    lines = [f"{k} = {value(v)}" for k, v in settings.items() if not isinstance(v, dict)]
    for section, table in settings.items():
        if isinstance(table, dict):
            lines += [f"[{section}]", *(f"{k} = {value(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


def test_real_workers_on_postgres_match_one_sqlite_process(pg_url: str, tmp_path: Path, real_one_process: Path) -> None:
    """The CLI, the real trainer, two workers: the same losses and gains as one process."""
    study = tmp_path / "tiny.toml"
    study.write_text(_toml(real_settings(tmp_path / "unused", stack_size=2)))
    procs = [
        subprocess.Popen([sys.executable, "-m", "taskscout", "search", str(study), "--storage", pg_url,
                          "--out", str(tmp_path / f"w{i}"), "--quiet"],
                         env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    for p in procs:
        _, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr[-3000:]
    expected = set(pd.read_parquet(real_one_process / rundir.TRIALS)["key"])
    states = _complete_once(pg_url, "tiny", expected)
    # a FAIL here could only be a duplicate queue entry given up before training
    store = open_existing(pg_url, pg_url, "tiny")
    failed = store.storage.get_all_trials(store.study_id, deepcopy=False, states=(TrialState.FAIL,))
    assert all("duplicate_of" in t.user_attrs for t in failed)
    assert len(states) == len(expected)
    finishers = [tmp_path / f"w{i}" for i in range(2) if (tmp_path / f"w{i}" / rundir.AFFINITY).exists()]
    assert finishers  # the first worker done finished the run; the other may have left it to it
    for out in finishers:
        assert_same_measurements(out, real_one_process, rtol=1e-5)
