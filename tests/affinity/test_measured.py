import math

import pandas as pd
import pytest

from taskscout.affinity.measured import (
    depth_gains,
    gain_interval,
    group_scores,
    measured_affinity,
    paired_gains,
    paired_with_alone,
    positive_pairs,
    t_interval,
)
from taskscout.rundir import AFFINITY_COLUMNS, DEPTH_COLUMNS, GROUP_SCORE_COLUMNS

# t(0.975, 2) for 3 seeds, from a t table
T2 = 4.302652729911275


def _row(tasks, aux, layer, seed, task, loss):
    return {"tasks": tuple(tasks), "aux": tuple(aux), "branch_layer": layer, "seed": seed, "task": task, "loss": loss}


@pytest.fixture
def losses():
    rows = []
    alone = {"a": [1.0, 2.0, 4.0], "b": [2.0, 2.0, 2.0], "c": [1.0, 1.0, 1.0]}
    for task, ls in alone.items():
        for s, v in enumerate(ls):
            rows.append(_row([task], [], 2, s, task, v))
    # pair a|b at the full layer 2: a gains 10%, 20%, 30%; b loses 0%, 10%, -10%... see below
    for s, (la, lb) in enumerate([(0.9, 2.0), (1.6, 2.2), (2.8, 1.8)]):
        rows += [_row("ab", [], 2, s, "a", la), _row("ab", [], 2, s, "b", lb)]
    # the same pair at branch layer 0 (depth phase)
    for s, (la, lb) in enumerate([(1.0, 2.0), (2.0, 2.0), (4.0, 2.0)]):
        rows += [_row("ab", [], 0, s, "a", la), _row("ab", [], 0, s, "b", lb)]
    # auxiliary x for c, one seed only
    rows.append(_row("c", ["x"], 2, 0, "c", 0.5))
    # all together
    for s in range(3):
        rows += [_row("abc", [], 2, s, t, 1.1 * alone[t][s]) for t in "abc"]
    return pd.DataFrame(rows)


def test_t_interval_hand_computed():
    iv = t_interval([0.1, 0.2, 0.3])
    sd = 0.1  # sample sd of 0.1, 0.2, 0.3
    assert iv.mean == pytest.approx(0.2)
    assert iv.low == pytest.approx(0.2 - T2 * sd / math.sqrt(3))
    assert iv.high == pytest.approx(0.2 + T2 * sd / math.sqrt(3))
    assert iv.n == 3 and not iv.real  # 0.2 - 0.248 < 0
    assert t_interval([0.5, 0.5, 0.5]).real  # zero spread: [0.5, 0.5]


def test_one_seed_is_never_real_and_no_seed_is_empty():
    iv = t_interval([0.9])
    assert iv.mean == 0.9 and iv.low == -math.inf and iv.high == math.inf and not iv.real
    assert t_interval([]).n == 0 and math.isnan(t_interval([math.nan]).mean)


def test_estimator_rows_use_the_same_interval_as_the_measured_gains():
    # affinity_rows once had its own t interval, with (nan, nan) for one seed
    from taskscout.affinity.base import affinity_rows

    rows = affinity_rows("tag", {("a", "b"): [0.1, 0.2, 0.3, math.nan], ("b", "a"): [0.9]}).set_index(["source", "target"])
    ab, ba = rows.loc[("a", "b")], rows.loc[("b", "a")]
    assert (ab["gain"], ab["n_seeds"]) == (pytest.approx(0.2), 3)
    assert (ab["ci_low"], ab["ci_high"]) == (pytest.approx(0.2 - T2 * 0.1 / math.sqrt(3)), pytest.approx(0.2 + T2 * 0.1 / math.sqrt(3)))
    assert (ba["gain"], ba["ci_low"], ba["ci_high"], ba["n_seeds"]) == (0.9, -math.inf, math.inf, 1)


def test_models_are_paired_with_the_single_task_loss_of_their_seed():
    rows = [_row("a", [], 2, 0, "a", 1.0), _row("b", [], 2, 0, "b", 3.0), _row("a", [], 2, 2, "a", math.nan)]
    rows += [_row("ab", [], 2, 0, "a", 0.8), _row("ab", [], 2, 0, "b", 1.5)]
    rows += [_row("ab", [], 2, 1, "a", 0.9)]  # seed 1 of a has no single-task loss: dropped
    rows += [_row("ab", [], 2, 2, "a", 0.9)]  # seed 2's single-task loss is NaN: dropped
    rows += [_row("a", ["x"], 2, 0, "a", 0.5)]  # a model with an auxiliary: not a group of tasks
    rows += [_row("abc", [], 2, 0, "a", 0.7)]
    got = paired_with_alone(pd.DataFrame(rows))
    assert got[["task", "seed", "loss", "alone"]].values.tolist() == [["a", 0, 0.8, 1.0], ["b", 0, 1.5, 3.0], ["a", 0, 0.7, 1.0]]
    assert [tuple(t) for t in got["tasks"]] == [("a", "b"), ("a", "b"), ("a", "b", "c")]
    assert len(paired_with_alone(pd.DataFrame(rows), sizes=(2,))) == 2


def test_gains_are_paired_per_seed():
    alone = {0: 1.0, 1: 2.0, 2: 4.0}
    together = {0: 0.9, 1: 1.6, 2: 2.8, 7: 0.1}  # seed 7 has no baseline: ignored
    assert paired_gains(alone, together) == pytest.approx({0: 0.1, 1: 0.2, 2: 0.3})
    # pairing matters: the unpaired mean of the losses would say (7/3 - 5.3/3) / (7/3) = 0.243
    assert gain_interval(alone, together).mean == pytest.approx(0.2)


def test_measured_affinity_matches_hand_computation(losses):
    aff = measured_affinity(losses, full_layer=2)
    assert tuple(aff.columns) == AFFINITY_COLUMNS
    assert set(aff["method"]) == {"measured"}
    got = {(r.source, r.target): r for r in aff.itertuples(index=False)}
    assert set(got) == {("b", "a"), ("a", "b"), ("x", "c")}  # no row from the all-together model
    ba = got[("b", "a")]
    half = T2 * 0.1 / math.sqrt(3)
    assert (ba.gain, ba.ci_low, ba.ci_high, ba.n_seeds) == pytest.approx((0.2, 0.2 - half, 0.2 + half, 3))
    ab = got[("a", "b")]  # b: (2-2)/2 = 0, (2-2.2)/2 = -0.1, (2-1.8)/2 = 0.1 -> mean 0, sd 0.1
    assert (ab.gain, ab.ci_low, ab.ci_high) == pytest.approx((0.0, -half, half))
    xc = got[("x", "c")]
    assert xc.gain == pytest.approx(0.5) and xc.n_seeds == 1 and xc.ci_low == -math.inf


def test_group_scores_normalise_by_the_single_task_loss(losses):
    gs = group_scores(losses, full_layer=2, order=["a", "b", "c"])
    assert tuple(gs.columns) == GROUP_SCORE_COLUMNS
    single = gs[gs["group"] == gs["task"]]
    assert list(single["task"]) == ["a", "b", "c"] and (single["norm_loss"] == 1).all()
    ab = gs[gs["group"] == "a|b"].set_index("task")
    assert ab.loc["a", "norm_loss"] == pytest.approx(0.8)  # 0.9, 0.8, 0.7
    assert ab.loc["b", "norm_loss"] == pytest.approx(1.0)
    abc = gs[gs["group"] == "a|b|c"].set_index("task")
    assert list(abc.index) == ["a", "b", "c"]
    assert abc["norm_loss"].tolist() == pytest.approx([1.1, 1.1, 1.1])
    assert abc["ci_low"].tolist() == pytest.approx([1.1, 1.1, 1.1])  # no spread across seeds


def test_depth_gains_per_layer(losses):
    d = depth_gains(losses, order=["a", "b", "c"])
    assert tuple(d.columns) == DEPTH_COLUMNS
    assert sorted(set(d["branch_layer"])) == [0, 2]
    at0 = d[(d["branch_layer"] == 0)].set_index("task")
    assert at0.loc["a", "gain"] == pytest.approx(0.0) and at0.loc["b", "gain"] == pytest.approx(0.0)
    assert d[(d["branch_layer"] == 2) & (d["task"] == "a")]["gain"].item() == pytest.approx(0.2)
    assert set(d["group"]) == {"a|b"}


def test_positive_pairs_need_a_lower_bound_above_zero():
    aff = pd.DataFrame(
        [("b", "a", 0.2, 0.05, 0.3, 3, "measured"), ("a", "b", 0.1, -0.1, 0.3, 3, "measured"),
         ("c", "a", 0.3, -0.01, 0.6, 3, "measured"), ("x", "c", 0.5, 0.4, 0.6, 3, "measured")],
        columns=list(AFFINITY_COLUMNS),
    )
    assert positive_pairs(aff, ["a", "b", "c"]) == [("a", "b")]
