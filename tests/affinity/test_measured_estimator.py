"""The measured estimator's tabulation: which plans it trains and which loss each task gets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from taskscout.affinity import AffinityProblem
from taskscout.affinity.measured import measured_affinity
from taskscout.affinity.measured_estimator import MeasuredEstimator, loss_table, pair_plans
from taskscout.data import TRAIN, VAL, Head
from taskscout.training import ModelPlan, ModelResult


@pytest.fixture
def problem() -> AffinityProblem:
    heads = (Head("a", "regression"), Head("b", "regression"), Head("x", "regression"))
    n = 10
    return AffinityProblem(X=np.zeros((n, 2), np.float32), Y=np.zeros((n, 3)), heads=heads,
                           split=np.where(np.arange(n) < 8, TRAIN, VAL).astype(np.int8), main=(0, 1), seeds=(0, 1))


def result(plan: ModelPlan, at_best: dict[int, float], curve: dict[str, list[float]], names) -> ModelResult:
    rows = [(names[t] if isinstance(t, int) else t, e + 1, "val", v) for t, vals in curve.items() for e, v in enumerate(vals)]
    return ModelResult(plan=plan, best_epoch=2, epochs_run=3, loss={"val": at_best}, metric={"val": {}}, seconds=0.1,
                       curves=pd.DataFrame(rows, columns=["task", "epoch", "split", "loss"]), state=None)


def test_plans_cover_singles_main_pairs_and_auxiliary_pairs(problem):
    plans = pair_plans(problem, (0,))
    got = {(p.targets, p.main) for p in plans}
    assert got == {((0,), (0,)), ((1,), (1,)), ((2,), (2,)), ((0, 1), (0, 1)), ((0, 2), (0,)), ((1, 2), (1,))}


def test_joint_and_own_epoch_selection(problem):
    names = problem.names
    single = [result(ModelPlan((t,), (t,), s, 2), {t: 1.0}, {names[t]: [1.2, 1.0, 1.1]}, names) for t in (0, 1) for s in (0, 1)]
    # in the pair, a is best at epoch 1 (0.8) but the pair's summed loss is best at epoch 2 (a 0.9)
    pair = [result(ModelPlan((0, 1), (0, 1), s, 2), {0: 0.9, 1: 0.95}, {"a": [0.8, 0.9, 1.0], "b": [1.1, 0.95, 0.97]}, names)
            for s in (0, 1)]
    joint = measured_affinity(loss_table(single + pair, problem, selection="joint"), full_layer=2).set_index(["source", "target"])
    own = measured_affinity(loss_table(single + pair, problem, selection="own"), full_layer=2).set_index(["source", "target"])
    # the default is the search's reading of a model: every task at its own best epoch
    pd.testing.assert_frame_equal(loss_table(single + pair, problem), loss_table(single + pair, problem, selection="own"))
    assert MeasuredEstimator().selection == "own"
    assert joint.loc[("b", "a"), "gain"] == pytest.approx(0.1)  # (1.0 - 0.9) / 1.0
    assert own.loc[("b", "a"), "gain"] == pytest.approx(0.2)  # (1.0 - 0.8) / 1.0
    assert joint.loc[("a", "b"), "gain"] == pytest.approx(own.loc[("a", "b"), "gain"]) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="selection"):
        loss_table(single, problem, selection="best")
