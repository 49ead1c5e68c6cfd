"""A finished search run again trains nothing and recomputes no estimator; estimators are opt-in."""

from __future__ import annotations

import pandas as pd
import pytest

from taskscout import rundir
from taskscout.affinity.base import Compute, EstimatorResult, affinity_rows
from taskscout.search import run_search, summary_text
from taskscout.search.runner import ESTIMATORS_NOTE
from taskscout.spec import DEFAULT_PHASES, resolve_spec

from .test_search import FakeTrainer, aux_candidates

TASKS = ["g0_t0", "g0_t1", "g1_t0", "g1_t1"]


class FakeEstimator:
    """Scores every ordered pair of main tasks 1 inside a planted group and 0 across; counts its calls."""

    calls: list[str] = []

    def __init__(self, name: str):
        self.name = name

    def estimate(self, problem, progress=None):
        FakeEstimator.calls.append(self.name)
        names = problem.main_names
        values = {(s, t): [float(s[:2] == t[:2])] * len(problem.seeds) for s in names for t in names if s != t}
        tables = {"rsa_layers": pd.DataFrame([("g0_t0|g0_t1", 1, 0.9, 3)], columns=list(rundir.RSA_LAYER_COLUMNS))}
        return EstimatorResult(self.name, affinity_rows(self.name, values), Compute(len(names), 10, 1.5),
                               tables=tables if self.name == "rsa" else {})


@pytest.fixture
def fake_estimators(monkeypatch):
    import taskscout.search.estimators as est

    FakeEstimator.calls = []
    monkeypatch.setattr(est, "make_estimator", lambda name, **kw: FakeEstimator(name))
    return FakeEstimator.calls


def _spec(out, phases=None):
    search = {"stack_size": 5, "subsets": 3}
    if phases is not None:
        search["phases"] = phases
    return resolve_spec("builtin:planted", {
        "tasks": TASKS, "out": str(out),
        "data_options": {"n_rows": 240, "n_inputs": 8, "groups": 2, "tasks_per_group": 2, "label_fraction": 0.5},
        "training": {"seeds": 3, "epochs": 4}, "model": {"depth": 2, "width": 8}, "search": search,
    })


def test_estimators_are_not_a_default_phase_and_the_summary_says_how_to_run_them(tmp_path, fake_estimators):
    assert "estimators" not in DEFAULT_PHASES and "estimators" not in _spec(tmp_path).search.phases
    result = run_search(_spec(tmp_path / "run"), train_fn=FakeTrainer(), candidates_fn=aux_candidates,
                        finalize_run=False)
    assert fake_estimators == []
    outcome = {o.phase: o for o in result.phases}["estimators"]
    assert outcome.status == "skipped" and outcome.note == ESTIMATORS_NOTE
    assert "--phase estimators" in summary_text(result)
    assert list(pd.read_csv(tmp_path / "run" / rundir.AGREEMENT)["method"]) == ["surrogate"]  # the subsets phase's


def test_a_finished_search_reruns_without_training_or_estimating(tmp_path, fake_estimators):
    spec = _spec(tmp_path / "run", phases=[*DEFAULT_PHASES, "estimators"])
    first_trainer = FakeTrainer()
    first = run_search(spec, train_fn=first_trainer, candidates_fn=aux_candidates, finalize_run=False)
    assert sorted(fake_estimators) == ["gradcos", "rsa", "tag"]
    assert first.trained > 0 and sum(len(c) for c in first_trainer.calls) > 0
    before = {n: pd.read_csv(spec.run_dir / n) for n in (rundir.AFFINITY, rundir.AGREEMENT, rundir.COMPUTE, rundir.RSA_LAYERS)}

    again = FakeTrainer()
    second = run_search(spec, train_fn=again, candidates_fn=aux_candidates, finalize_run=False)
    assert again.calls == []  # no model trained: measured phases, subsets, confirmation normalisers
    assert fake_estimators == ["tag", "gradcos", "rsa"]  # the first run's three calls, none since
    assert second.trained == 0
    est = {o.phase: o for o in second.phases}["estimators"]
    assert (est.status, est.trained, est.reused) == ("done", 0, 3 * len(TASKS))
    for name, frame in before.items():
        pd.testing.assert_frame_equal(pd.read_csv(spec.run_dir / name), frame, check_exact=False, rtol=1e-9)

    # The default phases later: the kept estimator results are still shown, nothing is recomputed.
    third = run_search(_spec(tmp_path / "run"), train_fn=again, candidates_fn=aux_candidates, finalize_run=False)
    assert again.calls == [] and len(fake_estimators) == 3 and third.trained == 0
    aff = pd.read_csv(spec.run_dir / rundir.AFFINITY)
    assert {"tag", "gradcos", "rsa"} <= set(aff["method"])
    assert "--phase estimators" not in summary_text(third)


def test_estimator_results_on_other_seeds_are_computed_again(tmp_path, fake_estimators):
    spec = _spec(tmp_path / "run", phases=[*DEFAULT_PHASES, "estimators"])
    run_search(spec, train_fn=FakeTrainer(), candidates_fn=aux_candidates, finalize_run=False)
    more = resolve_spec("builtin:planted", {**spec.to_dict(), "training": {**spec.to_dict()["training"], "seeds": 4}})
    run_search(more, train_fn=FakeTrainer(), candidates_fn=aux_candidates, finalize_run=False)
    assert len(fake_estimators) == 6
