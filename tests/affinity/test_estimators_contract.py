"""One contract over every registered affinity estimator, on a tiny planted data set."""

from __future__ import annotations

import numpy as np
import pytest

from taskscout import rundir
from taskscout.affinity import ESTIMATORS, AffinityProblem, Compute, make_estimator
from taskscout.data import build_dataset
from taskscout.errors import SpecError
from taskscout.spec import ModelSettings, TrainingSettings, resolve_spec

TASKS = ["g0_t0", "g0_t1", "g1_t0", "g1_t1"]
MAIN = ("g0_t0", "g0_t1", "g1_t0")  # g1_t1 is a non-main head: a source only
FAST = {"tag": {"every": 1, "probe_size": 16}, "gradcos": {"every": 1, "probe_size": 16},
        "rsa": {"probe_size": 40}, "surrogate": {"n_subsets": 3}}


@pytest.fixture(scope="module")
def problem() -> AffinityProblem:
    spec = resolve_spec("builtin:planted", {
        "tasks": TASKS, "data_options": {"n_rows": 240, "groups": 2, "tasks_per_group": 2, "n_inputs": 8, "seed": 1},
    })
    ds = build_dataset(spec)
    return AffinityProblem.from_dataset(
        ds, main=MAIN, model=ModelSettings(depth=2, width=8),
        training=TrainingSettings(epochs=3, batch_size=64, patience=3), seeds=(0, 1), device="cpu",
    )


def test_every_planned_estimator_is_registered():
    assert {"measured", "tag", "gradcos", "rsa", "surrogate"} <= set(ESTIMATORS)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_estimator_contract(name: str, problem: AffinityProblem):
    result = make_estimator(name, **FAST.get(name, {})).estimate(problem)
    assert result.method == name
    rows = result.rows
    assert list(rows.columns) == list(rundir.AFFINITY_COLUMNS)
    assert set(rows["method"]) == {name}
    assert not rows.duplicated(["source", "target"]).any()
    got = {(s, t): g for s, t, g in zip(rows["source"], rows["target"], rows["gain"], strict=True)}
    for target in MAIN:
        for source in MAIN:
            if source != target:
                assert np.isfinite(got[(source, target)]), (name, source, target)
    assert set(rows["target"]) <= set(MAIN)  # targets are main tasks only
    assert isinstance(result.compute, Compute)
    assert result.compute.models >= 1 and result.compute.epochs >= 1 and result.compute.seconds > 0


def test_unknown_estimator_and_bad_parameters_are_clear_errors():
    with pytest.raises(SpecError, match="unknown affinity estimator 'tga'.*did you mean 'tag'"):
        make_estimator("tga")
    with pytest.raises(SpecError, match="estimator 'rsa' got invalid parameters"):
        make_estimator("rsa", nonsense=1)


def test_problem_checks_its_shapes(problem: AffinityProblem):
    with pytest.raises(SpecError, match="heads occupy 4 columns"):
        AffinityProblem(X=problem.X, Y=problem.Y[:, :3], heads=problem.heads, split=problem.split, main=(0,))
    with pytest.raises(SpecError, match="main must name head indices"):
        AffinityProblem(X=problem.X, Y=problem.Y, heads=problem.heads, split=problem.split, main=(7,))
