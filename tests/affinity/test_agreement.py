"""Agreement of estimators with measured gains: hand-computed Spearman, recall and compute."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from taskscout import rundir
from taskscout.affinity.agreement import (
    agreement,
    agreement_from_run,
    agreement_table,
    flag_negative,
)
from taskscout.affinity.base import Compute, EstimatorResult


def rows(method: str, values: dict, ci_high: dict | None = None) -> pd.DataFrame:
    out = []
    for (s, t), g in values.items():
        hi = (ci_high or {}).get((s, t), g + 0.01)
        out.append((s, t, g, g - 0.01, hi, 3, method))
    return pd.DataFrame(out, columns=list(rundir.AFFINITY_COLUMNS))


PAIRS = [("a", "b"), ("b", "a"), ("a", "c"), ("c", "a"), ("b", "c"), ("c", "b")]
MEASURED = dict(zip(PAIRS, [0.30, 0.20, -0.10, -0.05, 0.00, 0.10], strict=True))
# measured negative transfers (interval entirely below 0): a->c, c->a
MEASURED_HIGH = {("a", "c"): -0.02, ("c", "a"): -0.01}


def test_flag_negative_rule():
    v = np.array([0.5, 0.1, -0.2, 0.3, 0.2, 0.4, 0.6, 0.7])
    # below zero: -0.2; bottom ceil(0.25 * 8) = 2 values: -0.2, 0.1
    assert flag_negative(v, quantile=0.25).tolist() == [False, True, True, False, False, False, False, False]
    assert flag_negative(v, quantile=0.0).tolist() == [False, False, True, False, False, False, False, False]


def test_hand_computed_spearman_recall_and_compute():
    measured = rows("measured", MEASURED, MEASURED_HIGH)
    # ranks of measured: a->b 6, b->a 5, a->c 1, c->a 2, b->c 3, c->b 4
    est = dict(zip(PAIRS, [0.9, 0.8, 0.7, 0.1, 0.2, 0.3], strict=True))
    # ranks of estimate: 6, 5, 4, 1, 2, 3 -> d = 0, 0, -3, 1, 1, 1; sum d^2 = 12
    # spearman = 1 - 6 * 12 / (6 * 35) = 1 - 72 / 210
    a = agreement(measured, rows("tag", est), estimator_compute=Compute(1, 30, 10.0),
                  measured_compute=Compute(9, 270, 80.0), quantile=0.25)
    assert a.method == "tag"
    assert a.spearman == pytest.approx(1 - 72 / 210)
    # flagged: bottom ceil(0.25 * 6) = 2 values (c->a 0.1, b->c 0.2), none below 0;
    # negatives a->c (0.7, not flagged) and c->a (flagged): recall 1/2
    assert a.negative_transfer_recall == pytest.approx(0.5)
    assert (a.n_pairs, a.n_negative, a.flagged) == (6, 2, 2)
    assert a.relative_compute == pytest.approx(10 / 80)
    assert a.relative_epochs == pytest.approx(30 / 270)


def test_pairs_missing_on_either_side_are_left_out_and_no_negatives_gives_nan():
    measured = rows("measured", MEASURED)  # every ci_high = gain + 0.01: a->c, c->a still below 0? no: -0.09, -0.04
    measured.loc[:, "ci_high"] = 0.5  # no interval entirely below zero
    est = {("a", "b"): 1.0, ("b", "a"): 2.0, ("a", "c"): float("nan"), ("c", "b"): 3.0, ("x", "y"): 9.0}
    a = agreement(measured, rows("gradcos", est))
    assert a.n_pairs == 3  # a->b, b->a, c->b
    assert math.isnan(a.negative_transfer_recall)
    assert math.isnan(a.relative_compute)
    # measured 0.30, 0.20, 0.10 vs estimate 1, 2, 3: perfectly reversed
    assert a.spearman == pytest.approx(-1.0)


def test_table_and_run_directory_round_trip(tmp_path):
    measured = EstimatorResult("measured", rows("measured", MEASURED, MEASURED_HIGH), Compute(45, 900, 100.0))
    perfect = EstimatorResult("rsa", rows("rsa", MEASURED), Compute(9, 180, 20.0))
    table = agreement_table(measured, [measured, perfect])
    assert table["method"].tolist() == ["rsa"]
    assert list(table.columns[:4]) == list(rundir.AGREEMENT_COLUMNS)
    assert table.loc[0, "spearman"] == pytest.approx(1.0)
    assert table.loc[0, "negative_transfer_recall"] == pytest.approx(1.0)
    assert table.loc[0, "relative_compute"] == pytest.approx(0.2)

    rundir.write_csv(tmp_path / rundir.AFFINITY, pd.concat([measured.rows, perfect.rows]))
    rundir.write_csv(tmp_path / rundir.COMPUTE, pd.DataFrame(
        [Compute(9, 200, 30.0).row("single"), Compute(36, 700, 70.0).row("pairs"), Compute(9, 180, 20.0).row("estimator:rsa")]
    ))
    again = agreement_from_run(tmp_path)
    assert again.loc[0, "relative_compute"] == pytest.approx(0.2)
    assert again.loc[0, "spearman"] == pytest.approx(1.0)


def test_seed_reliability_by_hand():
    from taskscout.affinity.agreement import per_seed_gains, seed_reliability

    pairs = [("a", "b"), ("b", "a"), ("a", "c"), ("c", "a")]
    # seed 0 ranks 1 2 3 4, seed 1 ranks 2 1 3 4: d^2 = 1 + 1 -> rho = 1 - 6 * 2 / (4 * 15) = 0.8
    rows = [(s, t, 0, g) for (s, t), g in zip(pairs, [0.1, 0.2, 0.3, 0.4], strict=True)]
    rows += [(s, t, 1, g) for (s, t), g in zip(pairs, [0.2, 0.1, 0.3, 0.4], strict=True)]
    r, rel, n = seed_reliability(pd.DataFrame(rows, columns=["source", "target", "seed", "gain"]))
    assert (r, n) == (pytest.approx(0.8), 2)
    assert rel == pytest.approx(2 * 0.8 / 1.8)
    losses = pd.DataFrame(
        [(("a",), (), 2, 0, "a", 2.0), (("b",), (), 2, 0, "b", 1.0), (("a", "b"), (), 2, 0, "a", 1.5),
         (("a", "b"), (), 2, 0, "b", 1.2), (("a",), ("x",), 2, 0, "a", 1.0)],
        columns=["tasks", "aux", "branch_layer", "seed", "task", "loss"],
    )
    g = per_seed_gains(losses).set_index(["source", "target"])["gain"]
    assert g[("b", "a")] == pytest.approx(0.25) and g[("a", "b")] == pytest.approx(-0.2) and len(g) == 2
