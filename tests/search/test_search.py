import dataclasses
import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from taskscout import rundir
from taskscout.auxgen import AuxTask
from taskscout.errors import DataError, SpecError, TaskscoutError
from taskscout.search import rebuild_tables, run_search, summary_text
from taskscout.search.plan import PlannedModel, model_seeds, plan_depth, plan_pairs, plan_single
from taskscout.search.runner import fingerprint, storage_url
from taskscout.search.storage import claim_pending, enqueue_missing, open_store
from taskscout.spec import resolve_spec

from ..distributed._worker import planted_result

TASKS = ["g0_t0", "g0_t1", "g1_t0", "g1_t1"]
T2 = 4.302652729911275  # t(0.975, 2)
AUX = "x0_copy"


def planted_gain(source: str, target: str) -> float:
    """The fake trainer's truth: +20% inside a planted group, -5% across, +10% from the auxiliary."""
    if source == AUX:
        return 0.1 if target == "g0_t0" else 0.0
    return 0.2 if source.split("_")[0] == target.split("_")[0] else -0.05


class FakeTrainer:
    """Deterministic losses with a known gain per seed: gain_s = planted * b / L + 0.01 * (s - 1)."""

    def __init__(self, fail_after: int | None = None):
        self.calls: list[list[str]] = []
        self.fail_after = fail_after
        self.dropped: dict[str, tuple[int, ...]] = {}

    def __call__(self, X, Y, heads, split, plans, *, model, training, device, progress, stack_size, **kw):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("trainer crashed")
        self.calls.append([p.key for p in plans])
        out = []
        for p in plans:
            self.dropped[p.key] = p.dropped_features
            out.append(planted_result(p, heads, depth=model.depth, epochs=training.epochs, gain=planted_gain,
                                      seconds=0.01))
            progress(1)
        return out


def aux_candidates(ds, spec):
    values = ds.frame["x0"].to_numpy(dtype=float)
    return [
        AuxTask(name=AUX, kind="predict_inputs", serves=("g0_t0",), values=values, type="regression",
                provenance={"columns": ["x0"], "transform": "identity"}, training_only=False,
                drops_inputs=("x0",), score=0.3),
        AuxTask(name="dropped_one", kind="hints", serves=("g0_t0",), values=values, type="regression",
                provenance={"columns": ["x0"], "transform": "identity"}, training_only=False,
                dropped="only 3 labelled training rows"),
    ]


def make_spec(out: Path, **over):
    settings = {
        "tasks": TASKS, "out": str(out),
        "data_options": {"n_rows": 240, "n_inputs": 8, "groups": 2, "tasks_per_group": 2, "label_fraction": 0.5},
        "training": {"seeds": 3, "epochs": 4}, "model": {"depth": 2, "width": 8},
        "search": {"phases": ["single", "pairs", "aux", "depth"], "stack_size": 5, "halving": False},
    }
    for section, values in over.items():
        if isinstance(values, dict):
            settings[section] = {**settings.get(section, {}), **values}
        else:
            settings[section] = values
    return resolve_spec("builtin:planted", settings)


def expected_keys(spec) -> set[str]:
    seeds, L = model_seeds(spec), spec.model.depth
    models = plan_single(TASKS, seeds, L) + plan_pairs(TASKS, seeds, L)
    models += [PlannedModel("aux", ("g0_t0",), (AUX,), s, L) for s in seeds]
    models += plan_depth([("g0_t0", "g0_t1"), ("g1_t0", "g1_t1")], seeds, L)
    return {m.key for m in models}


def trial_states(spec) -> list[tuple[str, str]]:
    study = optuna.load_study(study_name=spec.name, storage=storage_url(spec))
    return [(t.user_attrs.get("key"), t.state.name) for t in study.get_trials(deepcopy=False)]


def assert_each_once(spec):
    complete = [k for k, s in trial_states(spec) if s == "COMPLETE"]
    assert len(complete) == len(set(complete))
    assert set(complete) == expected_keys(spec)
    trials = pd.read_parquet(spec.run_dir / rundir.TRIALS)
    assert sorted(trials["key"]) == sorted(complete)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """One search with the fake trainer, shared by the tests that only read it."""
    spec = make_spec(tmp_path_factory.mktemp("searched") / "run")
    fake = FakeTrainer()
    result = run_search(spec, train_fn=fake, candidates_fn=aux_candidates, finalize_run=False)
    return spec, fake, result


@pytest.fixture
def searched_copy(searched, tmp_path):
    """A private copy of the shared run directory (study.db included), for tests that change it."""
    spec, _, _ = searched
    shutil.copytree(spec.run_dir, tmp_path / "run")
    return make_spec(tmp_path / "run")


def test_plan_keys_are_stable_unique_and_round_trip():
    pairs = plan_pairs(["a", "b", "c"], (0, 1), 2)
    assert len(pairs) == 8  # 3 pairs + all three, per seed
    assert len({m.key for m in pairs}) == 8
    assert pairs[0].key == '["pairs",["a","b"],[],0,2]'
    for m in pairs:
        assert PlannedModel.from_attrs(m.attrs()) == m
        assert set(m.attrs()) == {"key", "phase", "model"}  # one storage write for the description
    assert len(plan_pairs(["a", "b"], (0,), 2)) == 1  # with two tasks the pair is the all-together model
    assert [m.branch_layer for m in plan_depth([("a", "b")], (0,), 3)] == [2, 1, 0]


def test_search_trains_every_planned_model_once_and_measures_the_planted_gains(searched):
    spec, fake, result = searched
    assert_each_once(spec)
    trained = [k for call in fake.calls for k in call]
    assert len(trained) == len(set(trained)) == len(expected_keys(spec)) == 48
    assert max(len(c) for c in fake.calls) <= spec.search.stack_size
    assert [(p.phase, p.planned, p.trained, p.status) for p in result.phases] == [
        ("single", 12, 12, "done"), ("pairs", 21, 21, "done"), ("aux", 3, 3, "done"), ("depth", 12, 12, "done"),
        ("subsets", 0, 0, "skipped"), ("estimators", 0, 0, "skipped")]

    aff = pd.read_csv(spec.run_dir / rundir.AFFINITY)
    half = T2 * 0.01 / math.sqrt(3)  # per-seed gains planted +- 0.01 around the mean
    for r in aff.itertuples(index=False):
        want = planted_gain(r.source, r.target)
        assert r.gain == pytest.approx(want)
        assert (r.ci_low, r.ci_high, r.n_seeds, r.method) == pytest.approx((want - half, want + half, 3, "measured"))
    assert len(aff) == 12 + 1  # both directions of 6 pairs, and the auxiliary
    inside = aff[[planted_gain(s, t) > 0 and s != AUX for s, t in zip(aff.source, aff.target, strict=True)]]
    across = aff[[planted_gain(s, t) < 0 for s, t in zip(aff.source, aff.target, strict=True)]]
    assert (inside["ci_low"] > 0).all() and (across["ci_high"] < 0).all()

    depth = pd.read_csv(spec.run_dir / rundir.DEPTH)
    assert set(depth["group"]) == {"g0_t0|g0_t1", "g1_t0|g1_t1"}
    per_layer = depth.groupby("branch_layer")["gain"].mean()
    assert per_layer.to_dict() == pytest.approx({0: 0.0, 1: 0.1, 2: 0.2})

    scores = pd.read_csv(spec.run_dir / rundir.GROUP_SCORES)
    together = scores[scores["group"] == "|".join(TASKS)].set_index("task")["norm_loss"]
    # all together: one partner inside (+0.2) and two across (-0.05 each) -> 1 - 0.1
    assert together.to_dict() == pytest.approx({t: 0.9 for t in TASKS})
    assert (scores[scores["group"] == scores["task"]]["norm_loss"] == 1).all()

    compute = pd.read_csv(spec.run_dir / rundir.COMPUTE).set_index("phase")
    assert compute["models"].to_dict() == {"single": 12, "pairs": 21, "aux": 3, "depth": 12}
    assert compute.loc["pairs", "epochs"] == 21 * 4

    feats = pd.read_csv(spec.run_dir / rundir.CURVE_FEATURES)
    assert list(feats["task"]) == TASKS
    # val curve loss * (1 + 1/e): improvement from e=1 to min over e=2..4 is (2 - 1.25)/2, then
    # e=2: (1.5 - 1.25)/1.5 = 0.167, no plateau at epsilon 0.01 within 4 epochs -> 4
    assert (feats["plateau_epoch"] == 4).all()
    # train curve (1 + 2/e) / 3 at 10%: c = 1 (0.4 rounds to 0): (L2 - L1) / L1 / (1/4) = (2 - 3) / 3 * 4
    assert feats["slope_10"].tolist() == pytest.approx([-4 / 3] * 4)


def test_predict_inputs_auxiliary_drops_its_inputs_and_candidates_are_all_saved(searched):
    spec, fake, _ = searched
    aux_keys = [k for k in fake.dropped if json.loads(k)[0] == "aux"]
    assert aux_keys and all(fake.dropped[k] == (0,) for k in aux_keys)  # x0 is feature 0
    assert all(fake.dropped[k] == () for k in fake.dropped if json.loads(k)[0] != "aux")
    cands = rundir.read_json(spec.run_dir / rundir.CANDIDATES)
    assert [c["name"] for c in cands] == [AUX, "dropped_one"]
    assert cands[1]["dropped"]


def test_tables_are_written_atomically_and_match_the_contract(searched):
    spec, _, _ = searched
    assert not list(spec.run_dir.glob("*.tmp")) and not list(spec.run_dir.glob(".*.tmp"))
    trials = pd.read_parquet(spec.run_dir / rundir.TRIALS)
    assert tuple(trials.columns) == rundir.TRIAL_COLUMNS
    assert (trials["test_loss"] == "{}").all() and (trials["state"] == "COMPLETE").all()
    row = trials[trials["phase"] == "aux"].iloc[0]
    assert set(json.loads(row["val_loss"])) == {"g0_t0", AUX}
    curves = pd.read_parquet(spec.run_dir / rundir.CURVES)
    assert tuple(curves.columns) == rundir.CURVE_COLUMNS
    assert len(curves) == sum(len(t) + len(a) for t, a in zip(trials["tasks"], trials["aux"], strict=True)) * 4 * 2
    assert json.loads((spec.run_dir / rundir.SPEC).read_text())["name"] == spec.name


def test_resume_reuses_completed_trials_and_more_seeds_add_only_new_models(searched_copy):
    spec = searched_copy
    again = FakeTrainer()
    result = run_search(spec, train_fn=again, candidates_fn=aux_candidates, finalize_run=False)
    assert again.calls == [] and result.trained == 0
    assert sum(p.reused for p in result.phases) == 48
    assert_each_once(spec)

    more = make_spec(spec.run_dir, training={"seeds": 4})
    fake = FakeTrainer()
    run_search(more, train_fn=fake, candidates_fn=aux_candidates, finalize_run=False)
    new = {k for call in fake.calls for k in call}
    assert len(new) == 16 and all(json.loads(k)[3] == 3 for k in new)  # only the fourth seed
    assert_each_once(more)


def test_abandoned_running_trials_are_failed_and_retried(tmp_path):
    spec = make_spec(tmp_path / "run", search={"phases": ["single"]})
    store = open_store(storage_url(spec), spec.name, fingerprint=fingerprint(spec), spec_json=spec.to_json())
    models = plan_single(TASKS, model_seeds(spec), spec.model.depth)
    enqueue_missing(store, models)
    claimed = claim_pending(store, [m.key for m in models], 3)  # a process that died mid-stack
    assert len(claimed) == 3
    fake = FakeTrainer()
    run_search(spec, train_fn=fake, finalize_run=False)
    states = trial_states(spec)
    assert sorted(s for _, s in states).count("FAIL") == 3
    complete = [k for k, s in states if s == "COMPLETE"]
    assert sorted(complete) == sorted(m.key for m in models)
    assert {c.model.key for c in claimed} <= {k for call in fake.calls for k in call}


def test_a_trainer_error_gives_its_claims_back(tmp_path):
    spec = make_spec(tmp_path / "run", search={"phases": ["single", "pairs"]})
    with pytest.raises(RuntimeError, match="trainer crashed"):
        run_search(spec, train_fn=FakeTrainer(fail_after=2), finalize_run=False)
    assert "RUNNING" not in {s for _, s in trial_states(spec)}
    assert sum(s == "COMPLETE" for _, s in trial_states(spec)) == 10  # two stacks of 5
    fake = FakeTrainer()
    run_search(spec, train_fn=fake, finalize_run=False)
    assert len({k for call in fake.calls for k in call}) == 12 + 21 - 10


def test_duplicate_queue_entries_are_trained_once(tmp_path):
    spec = make_spec(tmp_path / "run")
    store = open_store(storage_url(spec), spec.name, fingerprint=fingerprint(spec), spec_json=spec.to_json())
    m = PlannedModel("single", ("g0_t0",), (), 0, 2)
    for _ in range(2):  # two workers enqueued the same model
        store.study.enqueue_trial({}, user_attrs=m.attrs())
    first = claim_pending(store, [m.key], 1)
    second = claim_pending(store, [m.key], 1)
    assert len(first) == 1 and second == []  # the second copy yields to the RUNNING first one
    dup = [t for t in store.study.get_trials() if t.number != first[0].number]
    assert dup[0].state.name == "FAIL" and dup[0].user_attrs["duplicate_of"] == first[0].number
    assert enqueue_missing(store, [m]) == 0  # RUNNING counts as taken


def test_a_search_cut_short_gives_a_provisional_recommendation(tmp_path):
    # a run stopped by its time limit once recommended as if it were complete
    spec = make_spec(tmp_path / "run", search={"phases": ["single", "pairs", "estimators"], "time_limit": 1e-9})
    result = run_search(spec, train_fn=FakeTrainer())
    rec = rundir.read_json(spec.run_dir / rundir.RECOMMENDATION)
    assert rec["verdict"].startswith("Provisional: ")
    assert rec["reasons"][0].startswith(
        "the search stopped at its time limit before finishing the phase(s) single, pairs, estimators")
    assert [(p.phase, p.status) for p in result.phases][-1] == ("estimators", "not started")
    from taskscout.cli import main  # a rebuild from the storage keeps the mark (it once cleared it)

    assert main(["report", str(spec.run_dir), "--rebuild"]) == 0
    assert rundir.read_json(spec.run_dir / rundir.RECOMMENDATION)["verdict"].startswith("Provisional: ")
    go_on = make_spec(tmp_path / "run", search={"phases": ["single", "pairs"]})
    run_search(go_on, train_fn=FakeTrainer())
    assert not rundir.read_json(spec.run_dir / rundir.RECOMMENDATION)["verdict"].startswith("Provisional")
    assert main(["report", str(spec.run_dir), "--rebuild"]) == 0
    assert not rundir.read_json(spec.run_dir / rundir.RECOMMENDATION)["verdict"].startswith("Provisional")


def test_time_limit_stops_new_stacks_and_the_rerun_finishes(tmp_path):
    spec = make_spec(tmp_path / "run", search={"phases": ["single", "pairs"], "time_limit": 1e-9})
    fake = FakeTrainer()
    result = run_search(spec, train_fn=fake, finalize_run=False)
    assert fake.calls == [] and result.stopped_by_time_limit
    assert [p.status for p in result.phases] == ["stopped", "not started", "skipped", "skipped"]
    assert "time limit reached" in summary_text(result)
    assert pd.read_csv(spec.run_dir / rundir.AFFINITY).empty
    go_on = make_spec(tmp_path / "run", search={"phases": ["single", "pairs"]})
    result = run_search(go_on, train_fn=FakeTrainer(), finalize_run=False)
    assert not result.stopped_by_time_limit and result.trained == 33


def test_tables_rebuild_from_the_storage_alone(searched, tmp_path):
    spec, _, _ = searched
    before = {n: pd.read_csv(spec.run_dir / n) for n in (rundir.AFFINITY, rundir.DEPTH, rundir.GROUP_SCORES)}
    trials = pd.read_parquet(spec.run_dir / rundir.TRIALS)
    other = tmp_path / "elsewhere"  # a worker with only the database: no spec.json, no tables
    rebuild_tables(other, storage_url(spec), study_name=spec.name)
    for name, frame in before.items():
        pd.testing.assert_frame_equal(pd.read_csv(other / name), frame)
    pd.testing.assert_frame_equal(pd.read_parquet(other / rundir.TRIALS), trials)
    assert (other / rundir.SPEC).exists()


def test_changed_settings_are_refused_unless_fresh(searched_copy):
    spec = searched_copy
    changed = make_spec(spec.run_dir, training={"epochs": 5})
    saved = (spec.run_dir / rundir.SPEC).read_text()
    with pytest.raises(SpecError, match="--fresh"):
        run_search(changed, train_fn=FakeTrainer(), candidates_fn=aux_candidates, finalize_run=False)
    assert (spec.run_dir / rundir.SPEC).read_text() == saved  # a refused resume writes nothing
    for name in (rundir.RSA_LAYERS, rundir.SUBSET_OBSERVATIONS):  # an earlier run's estimator tables
        (spec.run_dir / name).write_text("stale\n")
    fake = FakeTrainer()
    run_search(changed, fresh=True, train_fn=fake, candidates_fn=aux_candidates, finalize_run=False)
    assert len({k for call in fake.calls for k in call}) == 48
    assert not (spec.run_dir / rundir.RSA_LAYERS).exists() and not (spec.run_dir / rundir.SUBSET_OBSERVATIONS).exists()
    assert_each_once(changed)


def test_a_refused_fresh_run_keeps_the_previous_results(searched_copy):
    # --fresh once deleted the tables before it looked at the data: a typo in a task name lost the run
    spec = searched_copy
    before = sorted(p.name for p in spec.run_dir.iterdir())
    typo = make_spec(spec.run_dir, tasks=["g0_t0", "g1_tX"])
    with pytest.raises(DataError, match="g1_tX"):
        run_search(typo, fresh=True, train_fn=FakeTrainer(), finalize_run=False)
    assert sorted(p.name for p in spec.run_dir.iterdir()) == before


@pytest.mark.parametrize("case", ["bad task", "bad storage", "join without a study"])
def test_a_refused_run_leaves_nothing_behind(tmp_path, case):
    out = tmp_path / "new" / "run"
    over = {"bad task": {"tasks": ["g0_t0", "nope"]}, "bad storage": {"search": {"storage": "foo://bar"}},
            "join without a study": {}}[case]
    spec = make_spec(out, **over)
    with pytest.raises(TaskscoutError):
        run_search(spec, train_fn=FakeTrainer(), finalize_run=False, join=case == "join without a study")
    assert list(tmp_path.iterdir()) == []  # not even the parent directory it would have made


def test_spec_json_names_the_data_file_by_its_absolute_path(tmp_path, monkeypatch):
    # a relative path in spec.json broke `verify` and `export` run from another directory
    from taskscout.data import load_builtin

    monkeypatch.chdir(tmp_path)
    load_builtin("planted", {"n_rows": 240, "n_inputs": 8, "groups": 2, "tasks_per_group": 2}).to_csv("table.csv", index=False)
    spec = resolve_spec("table.csv", {"tasks": TASKS, "out": "run", "training": {"seeds": 2, "epochs": 2},
                                      "search": {"phases": ["single"]}})
    result = run_search(spec, train_fn=FakeTrainer(), finalize_run=False)
    saved = json.loads((result.run_dir / rundir.SPEC).read_text())
    assert saved["data"] == str(tmp_path.resolve() / "table.csv")
    # the study's settings keep the path as given: workers elsewhere may keep the file elsewhere
    stored = optuna.load_study(study_name=spec.name, storage=storage_url(spec)).user_attrs["fingerprint"]
    assert stored["data"] == "table.csv"
    assert run_search(spec, train_fn=FakeTrainer(), finalize_run=False).trained == 0  # resumes


def test_a_refused_start_keeps_what_another_process_put_beside_it(tmp_path):
    # the refused run removes the directories it made, but not a sibling run made meanwhile
    from taskscout.search import runner

    real = runner.single_process_lock

    def lock_then_sibling(run_dir):
        (tmp_path / "new" / "other").mkdir()
        return real(run_dir)

    runner.single_process_lock = lock_then_sibling
    try:
        with pytest.raises(TaskscoutError):
            run_search(make_spec(tmp_path / "new" / "run"), train_fn=FakeTrainer(), finalize_run=False, join=True)
    finally:
        runner.single_process_lock = real
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["other"]


def test_an_output_under_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SpecError, match="cannot create the run directory .*afile/run"):
        run_search(make_spec(tmp_path / "afile" / "run"), train_fn=FakeTrainer(), finalize_run=False)


def test_fresh_deletes_the_runs_own_studies_and_nothing_else(tmp_path):
    # The subsets proposer keeps its trials in "NAME:subsets"; a fresh run must not reuse them.
    url = f"sqlite:///{tmp_path / 'study.db'}"
    open_store(url, "run", fingerprint={"a": 1}, spec_json="{}")
    for name in ("run:subsets", "run2", "other:subsets"):
        optuna.create_study(storage=url, study_name=name).add_trial(optuna.trial.create_trial(value=1.0))
    open_store(url, "run", fingerprint={"a": 2}, spec_json="{}", fresh=True)
    names = {s.study_name for s in optuna.get_all_study_summaries(url)}
    assert names == {"run", "run2", "other:subsets"}


def test_summary_names_the_strongest_transfers_and_the_files(searched):
    _, _, result = searched
    text = summary_text(result)
    lines = text.splitlines()
    pos = lines.index("strongest positive transfers:")
    assert "+20.0%" in lines[pos + 1] and "real" in lines[pos + 1]
    neg = lines.index("strongest negative transfers:")
    assert "-5.0%" in lines[neg + 1]
    assert "affinity.csv" in text and str(result.run_dir) in text


def test_summary_carries_the_data_stages_notes(tmp_path):
    rng = np.random.default_rng(0)
    n = 60
    path = tmp_path / "ids.csv"
    pd.DataFrame({"id": [f"r{i}" for i in range(n)], "x": rng.normal(size=n), "y": rng.normal(size=n)}).to_csv(
        path, index=False)
    spec = resolve_spec(str(path), {"tasks": ["y"], "out": str(tmp_path / "run"),
                                    "search": {"phases": ["single"], "time_limit": 1e-9}})
    result = run_search(spec, train_fn=FakeTrainer(), finalize_run=False)
    (note,) = result.data_notes
    assert note.startswith("input column 'id' left out: a different value in every row (60 distinct values")
    assert f"note: {note}" in summary_text(result).splitlines()


def _complete_count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as con:
            return con.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0


def test_a_killed_search_resumes_and_trains_every_model_exactly_once(tmp_path):
    """Real trainer, tiny data: SIGKILL the CLI mid-phase, run it again, every key exactly once."""
    study = tmp_path / "tiny.toml"
    study.write_text(
        'data = "builtin:planted"\n'
        f'tasks = {json.dumps(TASKS)}\n'
        'budget = "small"\n'
        '[data_options]\nn_rows = 160\nn_inputs = 8\ngroups = 2\ntasks_per_group = 2\nlabel_fraction = 0.5\n'
        '[training]\nseeds = 1\nepochs = 3\nbatch_size = 64\n'
        '[model]\ndepth = 1\nwidth = 4\n'
        '[search]\nphases = ["single", "pairs"]\nstack_size = 1\n'
    )
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "taskscout", "search", str(study), "--out", str(out), "--quiet", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = out / rundir.STUDY_DB
    deadline = time.monotonic() + 120
    while _complete_count(db) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = _complete_count(db)
    assert 2 <= done_at_kill < 11, proc.stderr.read().decode()[-2000:]  # killed mid-search

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"search 'tiny': {11 - done_at_kill} models trained, {done_at_kill} reused" in rerun.stdout
    spec = resolve_spec(str(study), {"out": str(out)})
    states = trial_states(spec)
    complete = [k for k, s in states if s == "COMPLETE"]
    assert len(complete) == len(set(complete)) == 11
    seeds, L = model_seeds(spec), spec.model.depth
    assert set(complete) == {m.key for m in plan_single(TASKS, seeds, L) + plan_pairs(TASKS, seeds, L)}
    assert "RUNNING" not in {s for _, s in states}
    trials = pd.read_parquet(out / rundir.TRIALS)
    assert len(trials) == 11 and np.isfinite(trials["seconds"]).all()
    assert not list(out.glob(".*.tmp"))
    # the command finishes with the stages after the search: recommendation, then report
    assert (out / rundir.RECOMMENDATION).exists() and (out / rundir.REPORT).exists()
    assert f"report: {out / rundir.REPORT}" in rerun.stdout


def test_report_rebuild_writes_the_tables_and_recommendation_from_the_storage(searched_copy, capsys):
    from taskscout.cli import main

    spec = searched_copy
    expected = pd.read_csv(spec.run_dir / rundir.AFFINITY)
    for name in (rundir.AFFINITY, rundir.TRIALS):
        (spec.run_dir / name).unlink()
    assert main(["report", str(spec.run_dir), "--rebuild"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(spec.run_dir / rundir.AFFINITY), expected)
    assert (spec.run_dir / rundir.TRIALS).exists()
    assert (spec.run_dir / rundir.RECOMMENDATION).exists() and (spec.run_dir / rundir.REPORT).exists()
    assert "rebuilt" in capsys.readouterr().out


def test_report_rebuild_keeps_the_estimator_rows_and_rescores_their_agreement(searched_copy):
    # The subsets and estimators phases run once, in the finishing search; nothing in the storage
    # can rebuild their rows, so a rebuild must keep them (it once dropped them).
    from taskscout.cli import main

    spec = searched_copy
    measured = pd.read_csv(spec.run_dir / rundir.AFFINITY)
    same, reverse = measured.assign(method="tag"), measured.assign(method="rsa", gain=-measured["gain"])
    estimated = pd.concat([same, reverse], ignore_index=True)
    pd.concat([measured, estimated], ignore_index=True).to_csv(spec.run_dir / rundir.AFFINITY, index=False)
    compute = pd.read_csv(spec.run_dir / rundir.COMPUTE)
    extra = pd.DataFrame([("estimator:tag", 2, 8, 0.5), ("estimator:rsa", 4, 16, 1.0)], columns=compute.columns)
    pd.concat([compute, extra], ignore_index=True).to_csv(spec.run_dir / rundir.COMPUTE, index=False)
    (spec.run_dir / rundir.TRIALS).unlink()

    assert main(["report", str(spec.run_dir), "--rebuild"]) == 0
    after = pd.read_csv(spec.run_dir / rundir.AFFINITY)
    pd.testing.assert_frame_equal(after[after["method"] == "measured"].reset_index(drop=True), measured)
    pd.testing.assert_frame_equal(after[after["method"] != "measured"].reset_index(drop=True), estimated)
    pd.testing.assert_frame_equal(pd.read_csv(spec.run_dir / rundir.COMPUTE), pd.concat([compute, extra], ignore_index=True))
    agreement = pd.read_csv(spec.run_dir / rundir.AGREEMENT).set_index("method")
    assert agreement.loc["tag", "spearman"] == pytest.approx(1.0)
    assert agreement.loc["rsa", "spearman"] == pytest.approx(-1.0)
    single_pairs = compute.loc[compute["phase"].isin(["single", "pairs"]), "seconds"].sum()
    assert agreement.loc["tag", "relative_compute"] == pytest.approx(0.5 / single_pairs, rel=1e-6)


def test_the_estimators_phase_counts_the_models_its_estimators_train(tmp_path):
    # it counted one "model" per estimator (3) while rsa alone trains one per head and seed
    spec = make_spec(tmp_path / "run", training={"seeds": 2, "epochs": 2},
                     search={"phases": ["single", "pairs", "estimators"]})
    progress = _Bar()
    result = run_search(spec, train_fn=FakeTrainer(), progress=progress, finalize_run=False)
    (phase,) = [p for p in result.phases if p.phase == "estimators"]
    compute = pd.read_csv(spec.run_dir / rundir.COMPUTE)
    trained = int(compute.loc[compute["phase"].str.startswith("estimator:"), "models"].sum())
    assert phase.planned == phase.trained == trained == progress.done["estimators"] > 3


def test_a_phase_bar_settles_where_the_summary_ends():
    # a resumed subsets phase reuses its models: its bar stayed at 0/72 while the summary said 97/97
    from taskscout.search.runner import _Tally

    class Recorder:
        total = done = 0

        def advance(self, n):
            self.done += n

        def extend(self, n):
            self.total += n

        def reused(self, n):
            self.done += n

    rec = Recorder()
    rec.total = 6
    tally = _Tally(rec, 6)
    tally.advance(2)
    tally.extend(3)
    tally.settle(12)  # 12 models in the phase, 2 of them trained here
    assert (rec.total, rec.done) == (12, 12)
    # with few tasks there are fewer subsets than announced: 24 announced, 8 exist, all trained
    few = Recorder()
    few.total = 24
    tally = _Tally(few, 24)
    tally.advance(8)
    tally.settle(8)
    assert (few.total, few.done) == (8, 8)


def test_a_finished_bar_shows_the_phases_average_rate():
    # rich's estimate averages the last updates: 64 models finishing in two bursts read 964/s
    from types import SimpleNamespace

    from taskscout.cli import _search_bars

    with _search_bars() as bars:
        (column,) = [c for c in bars.progress.columns if type(c).__name__ == "ModelsPerSecond"]
        # rich keeps a finished task's `elapsed` running until the display stops; `finished_time`
        # holds the seconds it took
        done = SimpleNamespace(finished=True, completed=64, finished_time=3.6, elapsed=60.0, speed=963.9, fields={})
        running = SimpleNamespace(finished=False, completed=32, finished_time=None, elapsed=1.0, speed=20.0, fields={})
        assert str(column.render(done)) == "17.8 models/s"
        assert str(column.render(running)) == "20.0 models/s"
        # on a real bar: the rate of a phase that finished at once does not decay while later phases run
        bars.phase_started("single", total=4, done=0)
        bars.advance(4)
        time.sleep(0.3)
        rate = float(str(column.render(bars.progress.tasks[-1])).split()[0])
        assert rate > 4 / 0.3
        # models reused from an earlier run took no time: a phase that only reused shows no rate,
        # one that trained 2 of its 6 is timed on those 2
        bars.phase_started("pairs", total=6, done=4)
        bars.advance(2)
        pairs = bars.progress.tasks[-1]
        assert str(column.render(pairs)) == f"{2 / pairs.finished_time:.1f} models/s"
        bars.phase_started("subsets", total=3, done=0)
        bars.reused(3)
        assert str(column.render(bars.progress.tasks[-1])) == "-- models/s"


def test_progress_bars_grow_when_a_phase_announces_more_models():
    from taskscout.cli import _search_bars

    with _search_bars() as bars:
        bars.phase_started("subsets", total=4, done=0)
        bars.advance(4)
        bars.extend(3)  # confirmation: 3 more models than announced
        bars.advance(3)
        (task,) = bars.progress.tasks
        assert (task.completed, task.total) == (7, 7)
        bars.phase_finished("subsets")


def test_subsets_without_single_task_losses_are_skipped_with_a_note(tmp_path):
    # --skip single: every subset scored NaN and the phase proposed subsets without end
    spec = make_spec(tmp_path / "run", search={"phases": ["pairs", "subsets"], "subsets": 3})
    fake = FakeTrainer(fail_after=40)
    result = run_search(spec, train_fn=fake, finalize_run=False)
    subsets = {p.phase: p for p in result.phases}["subsets"]
    assert (subsets.status, subsets.trained) == ("skipped", 0)
    assert "--skip single" in subsets.note
    assert not any(k.startswith("subsets:") for call in fake.calls for k in call)
    assert f"note: subsets skipped: {subsets.note}" in summary_text(result)


def test_summary_without_measured_transfers_says_so():
    # --skip pairs --skip aux: affinity.csv held only the estimators' rows and the summary raised
    from taskscout.search.summary import transfer_lines

    estimated = pd.DataFrame([("a", "b", 0.1, 0.0, 0.2, 2, "tag")], columns=list(rundir.AFFINITY_COLUMNS))
    assert transfer_lines(estimated) == ["no measured transfers (no pair or auxiliary model was measured against "
                                         "its tasks alone)"]
    (line,) = transfer_lines(estimated.iloc[:0])
    assert line.startswith("no measured transfers")


class _Bar:
    """A SearchProgress that keeps each phase's count."""

    def __init__(self):
        self.done: dict[str, int] = {}
        self.phase = None

    def phase_started(self, phase, *, total, done):
        self.phase = phase
        self.done[phase] = done

    def advance(self, n):
        self.done[self.phase] += n

    def extend(self, n):
        pass

    def reused(self, n):
        self.done[self.phase] += n

    def phase_finished(self, phase):
        pass


def _interrupted_on_call(n: int):
    """A FakeTrainer that, on its n-th call, reports every model finished, then is interrupted."""
    fake = FakeTrainer()

    def train(*args, progress, **kw):
        if len(fake.calls) == n - 1:
            for _ in args[4]:
                progress(1)
            raise KeyboardInterrupt
        return fake(*args, progress=progress, **kw)

    return train


def test_an_interrupted_stack_is_not_shown_as_done(tmp_path):
    # Ctrl-C: the bar showed the interrupted phase complete although its last stack was never stored
    from taskscout.search.runner import stored_models

    spec = make_spec(tmp_path / "run")
    bar = _Bar()
    with pytest.raises(KeyboardInterrupt):
        run_search(spec, train_fn=_interrupted_on_call(3), candidates_fn=aux_candidates, progress=bar,
                   finalize_run=False)
    complete = sum(s == "COMPLETE" for _, s in trial_states(spec))
    assert complete == 2 * 5  # two stacks of stack_size 5 stored
    assert bar.done == {"single": 10}
    assert stored_models(spec) == 10


def test_an_interrupted_search_says_how_much_is_stored(tmp_path, monkeypatch, capsys):
    import taskscout.search
    from taskscout.cli import main

    real = taskscout.search.run_search
    monkeypatch.setattr(taskscout.search, "run_search", lambda spec, **kw: real(
        spec, **{**kw, "train_fn": _interrupted_on_call(2), "progress": None}))
    code = main(["search", "builtin:planted", "--tasks", "g0_t0,g0_t1,g1_t0", "--out", str(tmp_path / "run"),
                 "--stack-size", "4", "--skip", "aux", "--quiet"])
    captured = capsys.readouterr()
    assert code == 130
    assert captured.err == "interrupted: 4 models stored; run the same command again to resume\n"


def test_a_search_error_before_any_phase_is_one_line(tmp_path, capsys):
    # the progress display, started before the data was read, printed an empty line first
    from taskscout.cli import main

    code = main(["search", "builtin:planted", "--tasks", "g0_t0,nope", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: task column 'nope'") and err.count("\n") == 1


def test_many_tasks_train_sampled_subsets_through_the_store_instead_of_pairs(tmp_path):
    """8 tasks, 3 seeds: all pairs would be (28 + 1) x 3 = 87 models, over search.max_models = 60,
    so the pairs phase trains 19 sampled subsets of 4 tasks and the all-together model, 3 seeds
    each, as models of phase "sampled" in the storage (reused by a rerun); affinity.csv gets their
    "sampled" gains, which tell the planted pairs from the others."""
    from taskscout.grouping import recommend_run
    from taskscout.search.plan import uses_sampled

    tasks = [f"g{g}_t{i}" for g in range(4) for i in range(2)]
    spec = make_spec(tmp_path / "many", tasks=tasks, search={"phases": ["single", "pairs"], "max_models": 60},
                     data_options={"n_rows": 240, "n_inputs": 8, "groups": 4, "tasks_per_group": 2,
                                   "label_fraction": 0.5})
    assert uses_sampled(spec)
    fake = FakeTrainer()
    result = run_search(spec, train_fn=fake, finalize_run=False)
    assert [(p.phase, p.planned, p.status) for p in result.phases[:2]] == [("single", 24, "done"), ("sampled", 60, "done")]
    trials = pd.read_parquet(spec.run_dir / rundir.TRIALS)
    sampled = trials[trials["phase"] == "sampled"]
    assert len(sampled) == 60 and set(sampled["tasks"].map(len)) == {4, 8}
    aff = pd.read_csv(spec.run_dir / rundir.AFFINITY)
    rows = aff[aff["method"] == "sampled"]
    assert len(rows) and not len(aff[aff["method"] == "measured"])
    same = rows["source"].str[:2] == rows["target"].str[:2]
    assert rows[same]["gain"].mean() > 0.1 > 0.0 > rows[~same]["gain"].mean()
    again = run_search(spec, train_fn=FakeTrainer(), finalize_run=False)
    assert again.trained == 0  # the sampled models are in the storage: a rerun reuses them
    rec = recommend_run(spec.run_dir)
    assert sorted(tuple(g["tasks"]) for g in rec["groups"]) == sorted(tuple(tasks[2 * g:2 * g + 2]) for g in range(4))


class _SlowSingles(FakeTrainer):
    """FakeTrainer whose models report `seconds` each (the time the plan estimates from)."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def __call__(self, *args, **kwargs):
        return [dataclasses.replace(r, seconds=self.seconds) for r in super().__call__(*args, **kwargs)]


@pytest.mark.parametrize(("seconds", "phase"), [(20.0, "sampled"), (0.01, "pairs")])
def test_the_time_limit_chooses_sampled_subsets_when_all_pairs_would_not_fit(tmp_path, seconds, phase):
    """8 tasks, 3 seeds, search.max_models left at 2000 (87 pair models fit it) and a time limit of
    1000 s: single models of 20 s make all pairs about 3 x 8^2 x 20 = 3,840 s, more than half the
    time left, so the pairs phase trains sampled subsets; at 0.01 s they take 2 s and stay pairs.
    The choice is kept in the study: a rerun without a time limit plans the same models."""
    from taskscout.search.plan import PAIRS_PLAN_ATTR, pairs_fit_in_time, uses_sampled

    assert not pairs_fit_in_time(8, 3, 20.0, 1000.0) and pairs_fit_in_time(8, 3, 0.01, 1000.0)
    tasks = [f"g{g}_t{i}" for g in range(4) for i in range(2)]
    spec = make_spec(tmp_path / "timed", tasks=tasks, search={"phases": ["single", "pairs"], "time_limit": 1000.0},
                     data_options={"n_rows": 240, "n_inputs": 8, "groups": 4, "tasks_per_group": 2,
                                   "label_fraction": 0.5})
    assert not uses_sampled(spec)
    result = run_search(spec, train_fn=_SlowSingles(seconds), finalize_run=False)
    planned = 8 * 4 * 3 + 3 if phase == "sampled" else (28 + 1) * 3  # sampled: 4T subsets + all-together
    assert [(p.phase, p.planned, p.status) for p in result.phases[:2]] == [("single", 24, "done"), (phase, planned, "done")]
    store = open_store(storage_url(spec), spec.name, fingerprint=fingerprint(spec), spec_json=spec.to_json())
    chosen = store.study.user_attrs[PAIRS_PLAN_ATTR]
    assert chosen["plan"] == phase and chosen["single_seconds"] == pytest.approx(seconds)
    store.close()
    untimed = dataclasses.replace(spec, search=dataclasses.replace(spec.search, time_limit=None))
    again = run_search(untimed, train_fn=FakeTrainer(), finalize_run=False)
    assert again.trained == 0 and again.phases[1].phase == phase
