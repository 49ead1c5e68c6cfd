"""Tests for taskscout.grouping.subset_scores: measured subsets as scores, surrogate predictions, what to measure."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from taskscout import rundir
from taskscout.grouping import (
    GroupScorer,
    anchored_predictions,
    groups_to_measure,
    observed_group_scores,
    recommend,
    with_subset_scores,
)

from .conftest import _affinity, _measured_pairs, _observations, _pair_observations


def test_observed_group_scores_are_t_intervals_over_seeds():
    obs = _observations([("a|b|c", "a", [0.8, 0.9, 1.0]), ("a", "a", [1.0, 1.0, 1.0]), ("c|b", "b", [0.7, 0.7, 0.7])])
    rows = observed_group_scores(obs, ("a", "b", "c"))
    assert list(rows.columns) == list(rundir.GROUP_SCORE_COLUMNS)
    by = {(r.group, r.task): r for r in rows.itertuples(index=False)}
    assert set(by) == {("a|b|c", "a"), ("b|c", "b")}  # single-task anchors are not group scores
    half = 4.302653 * 0.1 / math.sqrt(3)  # t(0.975, 2 dof) * sd / sqrt(n)
    r = by[("a|b|c", "a")]
    assert (r.norm_loss, r.ci_low, r.ci_high, r.n_seeds, r.source) == pytest.approx((0.9, 0.9 - half, 0.9 + half, 3, "measured"))
    assert (by[("b|c", "b")].ci_low, by[("b|c", "b")].ci_high) == pytest.approx((0.7, 0.7))


def test_measured_subsets_win_over_the_surrogate_which_fills_only_the_rest():
    tasks = ("a", "b", "c", "d")
    gs = _measured_pairs(tasks, helped="abc")
    obs = pd.concat([_pair_observations(tasks, helped="abc"),
                     _observations([("a|b|c", t, [0.6, 0.62, 0.64]) for t in "abc"])], ignore_index=True)
    table = with_subset_scores(gs, obs, tasks)
    scorer = GroupScorer.from_tables(tasks=tasks, group_scores=table)
    triple = scorer(("a", "b", "c"), "b")
    assert triple.source == "measured" and triple.norm_loss == pytest.approx(0.62) and triple.n_seeds == 3
    assert scorer(("a", "b", "d"), "d").source == "surrogate"  # never trained: predicted
    pair = scorer(("a", "b"), "a")  # the pairs phase's row stays
    assert (pair.norm_loss, pair.ci_low, pair.ci_high, pair.source) == pytest.approx((0.85, 0.80, 0.90, "measured"))
    assert (table["group"] == "a|b").sum() == 2  # not added a second time from the observations
    assert set(with_subset_scores(gs, obs, tasks, surrogate=False)["source"]) == {"measured"}


def test_groups_to_measure_names_the_unmeasured_group_a_recommendation_needs():
    tasks = ("a", "b", "c", "d")
    gs, pairs = _measured_pairs(tasks, helped="abc"), _pair_observations(tasks, helped="abc")
    # a, b, c help each other pairwise and d hurts everyone: the triple is what a grouping needs
    assert groups_to_measure(tasks, group_scores=gs, observations=pairs) == [("a", "b", "c")]
    measured = pd.concat([pairs, _observations([("a|b|c", t, [0.7, 0.72, 0.74]) for t in "abc"])], ignore_index=True)
    assert groups_to_measure(tasks, group_scores=gs, observations=measured) == []
    rec = recommend(spec_tasks=tasks, affinity=_affinity([]), group_scores=with_subset_scores(gs, measured, tasks),
                    depth_L=2)
    assert rec["groups"][0]["tasks"] == ["a", "b", "c"] and rec["groups"][0]["score_source"] == "measured"
    assert rec["assignment"] == {"a": 0, "b": 0, "c": 0, "d": 1}
    assert groups_to_measure(("a", "b"), group_scores=gs, observations=pairs) == []  # pairs are always measured


def test_surrogate_scores_are_anchored_on_the_largest_measured_group_inside():
    from taskscout.affinity.surrogate import fit_surrogate

    tasks = ("a", "b", "c", "d")
    gs = _measured_pairs(tasks, helped="abc")
    # the triple is measured far better than its pairs suggest: a linear surrogate cannot fit it
    obs = pd.concat([_pair_observations(tasks, helped="abc"),
                     _observations([("a|b|c", t, [0.5, 0.52, 0.54]) for t in "abc"]),
                     _observations([("a|b|d", t, [0.9, 0.95, 1.0]) for t in "abd"])], ignore_index=True)
    model = fit_surrogate(obs, tasks=list(tasks))
    known = with_subset_scores(gs, obs, tasks, surrogate=False)
    rows = anchored_predictions(model, [("a", "b", "c", "d"), ("a", "c", "d")], known, tasks)
    by = {(r.group, r.task): r for r in rows.itertuples(index=False)}
    s = model.per_task["a"].predict
    # a in a|b|c|d: anchored on the measured triple a|b|c (the largest measured group inside)
    assert by[("a|b|c|d", "a")].norm_loss == pytest.approx(0.52 + s(list("abcd"))[0] - s(list("abc"))[0])
    # d in a|b|c|d: anchored on a|b|d; a in a|c|d: on its measured pair a|c (0.85)
    sd = model.per_task["d"].predict
    assert by[("a|b|c|d", "d")].norm_loss == pytest.approx(0.95 + sd(list("abcd"))[0] - sd(list("abd"))[0])
    assert by[("a|c|d", "a")].norm_loss == pytest.approx(0.85 + s(list("acd"))[0] - s(list("ac"))[0])
    # the interval holds the anchor's and the surrogate's errors: never narrower than the surrogate's
    m, lo, hi = s(list("abcd"))
    r = by[("a|b|c|d", "a")]
    assert r.ci_low <= r.norm_loss - (m - lo) + 1e-12 and r.ci_high >= r.norm_loss + (hi - m) - 1e-12
    assert set(rows["source"]) == {"surrogate"}
    # with nothing measured, a task is anchored on itself alone (normalised loss exactly 1)
    bare = anchored_predictions(model, [("a", "b", "c")], None, tasks)
    got = bare.set_index("task").loc["a", "norm_loss"]
    assert got == pytest.approx(1.0 + s(list("abc"))[0] - s(["a"])[0])


def test_groups_to_measure_tries_a_group_its_noisy_pairs_hide():
    tasks = ("a", "b", "c", "d")
    norm = {("a", "b"): (0.80, 0.80), ("b", "c"): (0.80, 0.80), ("a", "c"): (1.30, 0.85)}  # a|c: a hurt (noise)
    gs_rows = [(t, t, 1.0, 1.0, 1.0, 3, "measured") for t in tasks]
    obs_rows = [(t, t, [1.0, 1.0, 1.0]) for t in tasks]
    for x, y in itertools.combinations(tasks, 2):
        vx, vy = norm.get((x, y), (1.1, 1.1))
        hw = 0.3 if (x, y) == ("a", "c") else 0.05
        gs_rows += [(f"{x}|{y}", x, vx, vx - hw, vx + hw, 3, "measured"), (f"{x}|{y}", y, vy, vy - 0.05, vy + 0.05, 3, "measured")]
        obs_rows += [(f"{x}|{y}", x, [vx - hw / 3, vx, vx + hw / 3]), (f"{x}|{y}", y, [vy - 0.02, vy, vy + 0.02])]
    gs = pd.DataFrame(gs_rows, columns=list(rundir.GROUP_SCORE_COLUMNS))
    # a measured larger subset shows a, b and c helping each other, d helping nobody
    obs = pd.concat([_observations(obs_rows),
                     _observations([("a|b|c|d", t, [0.6, 0.62, 0.64] if t != "d" else [1.1, 1.1, 1.1]) for t in "abcd"])],
                    ignore_index=True)
    # HOA (a's mean over its pairs: hurt by c) and the pair graph (a|c does not help on average)
    # both miss a|b|c; the surrogate, anchored on the measured pairs, proposes it
    assert groups_to_measure(tasks, group_scores=gs, observations=obs)[0] == ("a", "b", "c")


def _block_data(n_tasks: int, seed: int = 0):
    """Pairs measured and 2T random 4-task subsets on tasks in blocks of 5: a partner in the block
    lowers a task's normalised loss by 0.05, another raises it by 0.01 (noise 0.02)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    tasks = tuple(f"t{i:03d}" for i in range(n_tasks))
    block = np.arange(n_tasks) // 5

    def loss(members, i):
        mates = sum(block[j] == block[i] for j in members if j != i)
        return 1 - 0.05 * mates + 0.01 * (len(members) - 1 - mates)

    obs = [(t, t, s, 1.0) for t in tasks for s in range(3)]
    gs = []
    subsets = [tuple(p) for p in itertools.combinations(range(n_tasks), 2)]
    subsets += [tuple(sorted(rng.choice(n_tasks, size=4, replace=False))) for _ in range(2 * n_tasks)]
    for members in subsets:
        key = rundir.group_key([tasks[j] for j in members], tasks)
        for i in members:
            vals = [loss(members, i) + rng.normal(0, 0.02) for _ in range(3)]
            obs += [(key, tasks[i], s, v) for s, v in enumerate(vals)]
            if len(members) == 2:
                m = sum(vals) / 3
                gs.append((key, tasks[i], m, m - 0.05, m + 0.05, 3, "measured"))
    return (tasks, pd.DataFrame(gs, columns=list(rundir.GROUP_SCORE_COLUMNS)),
            pd.DataFrame(obs, columns=list(rundir.SUBSET_OBSERVATION_COLUMNS)))


def test_confirmation_cost_does_not_grow_with_the_number_of_possible_groups(monkeypatch):
    """groups_to_measure asks the surrogate for a polynomial number of predictions: from 14 to 28
    tasks the groups of up to 4 tasks grow 17-fold (1,456 -> 24,129) and all groups 16,384-fold;
    the predictions grow less than 8-fold (T^3) and stay below 8 T^2."""
    from taskscout.affinity.surrogate import TaskSurrogate

    calls = []
    predict = TaskSurrogate.predict

    def counted(self, *args, **kwargs):
        calls.append(1)
        return predict(self, *args, **kwargs)

    monkeypatch.setattr(TaskSurrogate, "predict", counted)
    examined: list[tuple] = []  # every (group, task) score a solver asks for
    score = GroupScorer.__call__

    def looked_up(self, group, task):
        examined.append((tuple(group), task))
        return score(self, group, task)

    monkeypatch.setattr(GroupScorer, "__call__", looked_up)
    made, asked = {}, {}
    for n in (14, 28):
        tasks, gs, obs = _block_data(n)
        calls.clear()
        examined.clear()
        found = groups_to_measure(tasks, group_scores=gs, observations=obs)
        made[n], asked[n] = len(calls), len(examined)
        assert found[0] == tasks[:5]  # the first block, never measured whole, is what to measure
    assert 0 < made[28] < 8 * made[14]
    assert made[28] < 8 * 28**2 < math.comb(28, 4)
    assert 0 < asked[28] < 8 * asked[14]  # score look-ups: O(T^3) at most, not the 2^T groups


def test_sampled_predictor_sums_the_partners_shrunk_gains():
    from taskscout.grouping import sampled_predictor

    from .conftest import _affinity

    aff = _affinity([("a", "c", 0.10, 0.07, 0.13, 4, "sampled"), ("b", "c", 0.05, 0.01, 0.09, 5, "sampled"),
                     ("a", "b", 0.2, 0.1, 0.3, 4, "measured")])
    # By hand: m = 0.075, var = 0.025^2, se^2 = (0.03 / 1.96)^2 and (0.04 / 1.96)^2,
    # tau^2 = var - mean(se^2); each gain moves to m + tau^2 / (tau^2 + se^2) (g - m).
    z = 1.959963984540054
    se2 = np.array([0.03, 0.04]) ** 2 / z**2
    tau2 = 0.025**2 - se2.mean()
    shrunk = 0.075 + tau2 / (tau2 + se2) * np.array([0.025, -0.025])
    half = z * np.sqrt(tau2 * se2 / (tau2 + se2))
    predict = sampled_predictor(aff, ("a", "b", "c"))
    s = predict(("a", "b", "c"), "c")
    assert (s.norm_loss, s.source, s.n_seeds) == (pytest.approx(1 - shrunk.sum()), "sampled", 4)
    assert s.norm_loss == pytest.approx(0.8464, abs=1e-4)  # unshrunk it would be 0.85
    assert s.ci_high - s.norm_loss == pytest.approx(float(np.hypot(*half)))
    prior = predict(("a", "c"), "a")  # c -> a was not estimated: the prior, m +- 1.96 tau
    assert prior.norm_loss == pytest.approx(1 - 0.075) and prior.ci_high - prior.norm_loss == pytest.approx(z * tau2**0.5)
    assert predict(("a", "x"), "x") is None  # x has no sampled gain at all
    assert sampled_predictor(aff[aff["method"] == "measured"], ("a", "b", "c")) is None


def test_surrogate_scores_no_unmeasured_group_above_its_table_size_on_few_tasks():
    """Up to EXACT_MAX_TASKS tasks the surrogate scores unmeasured groups of at most
    SURROGATE_MAX_GROUP tasks (as `with_subset_scores` tabulates them); a larger one gets no
    prediction and the scorer falls back on the measured pairs. Above EXACT_MAX_TASKS every size
    is scored on demand."""
    from taskscout.grouping import EXACT_MAX_TASKS, SURROGATE_MAX_GROUP
    from taskscout.grouping.subset_scores import subset_predictor

    tasks = ("a", "b", "c", "d", "e", "f")
    gs = _measured_pairs(tasks, helped="abc")
    # a merged group of five is measured helping everyone: the linear surrogate learns that size helps
    obs = pd.concat([_pair_observations(tasks, helped="abc"),
                     _observations([("a|b|c|d|e", t, [0.7, 0.72, 0.74]) for t in "abcde"])], ignore_index=True)
    known = with_subset_scores(gs, obs, tasks, surrogate=False)
    predict = subset_predictor(known, obs, tasks)
    assert SURROGATE_MAX_GROUP == 4
    assert predict(("a", "b", "c", "d"), "d").source == "surrogate"
    assert predict(("a", "b", "c", "d", "f"), "a") is None
    assert predict(tasks, "f") is None
    scorer = GroupScorer.from_tables(tasks=tasks, group_scores=known, predict=predict)
    hoa = scorer(("a", "b", "c", "d", "f"), "a")  # the mean over a's measured pairs
    assert hoa.source == "hoa" and hoa.norm_loss == pytest.approx((0.85 + 0.85 + 1.10 + 1.10) / 4)
    assert scorer(("a", "b", "c", "d", "e"), "a").source == "measured"  # a measured group is never capped
    many = tuple(f"t{i:02d}" for i in range(EXACT_MAX_TASKS + 2))
    big = pd.concat([_pair_observations(many, helped=many[:3]),
                     _observations([("|".join(many[:5]), t, [0.7, 0.72, 0.74]) for t in many[:5]])], ignore_index=True)
    at_scale = subset_predictor(with_subset_scores(_measured_pairs(many, helped=many[:3]), big, many, surrogate=False),
                                big, many)
    assert at_scale(many[:6], many[0]).source == "surrogate"


def test_shrink_gains_pulls_noisy_gains_to_the_mean_and_keeps_sharp_ones():
    from taskscout.grouping.subset_scores import shrink_gains

    rng = np.random.default_rng(0)
    true = np.where(rng.random(4000) < 0.1, 0.15, -0.02)  # planted: a tenth of the pairs gain
    se = np.where(rng.random(4000) < 0.5, 0.02, 0.2)  # half sharp, half very noisy
    noisy = true + se * rng.normal(size=4000)
    shrunk, half, m, tau2 = shrink_gains(noisy, 1.959963984540054 * se)
    assert m == pytest.approx(true.mean(), abs=0.01) and tau2 == pytest.approx(true.var(), rel=0.25)
    assert np.mean((shrunk - true) ** 2) < 0.5 * np.mean((noisy - true) ** 2)  # closer to the truth
    sharp = se == 0.02
    assert np.abs(shrunk - noisy)[sharp].mean() < 0.2 * np.abs(shrunk - noisy)[~sharp].mean()
    assert (half < 1.959963984540054 * se).all()
    nan = shrink_gains(np.array([0.1, np.nan]), np.array([0.05, 0.05]))[0]
    assert nan[1] == pytest.approx(0.1)  # no estimate: the mean of the others
