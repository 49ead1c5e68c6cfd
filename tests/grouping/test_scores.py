"""Tests for taskscout.grouping.scores: group scores by source, intervals, false-discovery control."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from taskscout import rundir
from taskscout.errors import SpecError
from taskscout.grouping import GroupScorer, TaskScore, recommend

from .conftest import _affinity, _planted_affinity


def test_scorer_prefers_measured_then_surrogate_then_hoa():
    tasks = ("a", "b", "c", "d")
    aff = _affinity([
        ("b", "a", 0.10, 0.05, 0.15, 3, "measured"),
        ("c", "a", 0.30, 0.20, 0.40, 3, "measured"),
        ("d", "a", 0.20, 0.10, 0.30, 3, "measured"),
        ("b", "a", 0.90, 0.80, 0.99, 1, "tag"),  # not a loss ratio: never used for scores
        ("a", "b", 0.05, -0.05, 0.15, 3, "measured"),
        ("c", "b", 0.10, 0.00, 0.20, 3, "measured"),
    ])
    gs = pd.DataFrame([
        ("a|b|c", "a", 0.5, 0.4, 0.6, 3, "measured"),
        ("a|b|c", "a", 0.1, 0.0, 0.2, 0, "surrogate"),  # the measured row wins
        ("a|b|c", "b", 0.7, 0.6, 0.8, 0, "surrogate"),
    ], columns=list(rundir.GROUP_SCORE_COLUMNS))
    scorer = GroupScorer.from_tables(tasks=tasks, group_scores=gs, affinity=aff)
    assert scorer(("c", "a", "b"), "a") == TaskScore(0.5, 0.4, 0.6, "measured", 3)
    assert scorer(("a", "b", "c"), "b").source == "surrogate"
    hoa = scorer(("a", "b", "c"), "c")
    assert hoa is None  # nothing measured about c's partners
    hoa = scorer(("a", "b", "d"), "a")  # mean over partners b and d of 1 - gain
    assert hoa.source == "hoa"
    assert hoa.norm_loss == pytest.approx(((1 - 0.10) + (1 - 0.20)) / 2)
    assert (hoa.ci_low, hoa.ci_high) == pytest.approx(((0.85 + 0.70) / 2, (0.95 + 0.90) / 2))
    pair = scorer(("a", "b"), "a")
    assert pair.source == "measured" and pair.norm_loss == pytest.approx(0.9) and pair.real
    assert not scorer(("a", "b"), "b").real
    assert scorer(("a",), "a").source == "single"
    with pytest.raises(SpecError, match="not in the group"):
        scorer(("a", "b"), "c")


def test_recommendation_records_the_score_source():
    groups = [["a", "b", "c"], ["d", "e"]]
    tasks, aff = _planted_affinity(groups, inside=0.2, across=-0.01, hw=0.04)
    gs = pd.DataFrame([("d|e", "d", 0.75, 0.7, 0.8, 3, "measured"), ("d|e", "e", 0.75, 0.7, 0.8, 3, "measured")],
                      columns=list(rundir.GROUP_SCORE_COLUMNS))
    rec = recommend(spec_tasks=tasks, affinity=aff, group_scores=gs, depth_L=3)
    by_tasks = {tuple(g["tasks"]): g for g in rec["groups"]}
    assert by_tasks[("a", "b", "c")]["score_source"] == "hoa"
    assert by_tasks[("a", "b", "c")]["expected_gain"]["a"] == pytest.approx(0.2)
    assert by_tasks[("d", "e")]["score_source"] == "measured"
    assert by_tasks[("d", "e")]["expected_gain"]["d"] == pytest.approx(0.25)
    assert by_tasks[("d", "e")]["ci"]["d"] == pytest.approx([0.2, 0.3])


def test_p_value_from_a_student_t_interval_by_hand():
    # half-width 0.1 over 3 seeds: se = 0.1 / t(0.975, 2); a gain of exactly one half-width has
    # t = t(0.975, 2), so its two-sided p-value is 0.05; twice that gain has t = 2 * 4.3027
    assert TaskScore(0.9, 0.8, 1.0, "measured", 3).p_value() == pytest.approx(0.05)
    from scipy.stats import t as student_t

    assert TaskScore(0.8, 0.7, 0.9, "measured", 3).p_value() == pytest.approx(2 * student_t.sf(2 * 4.302653, 2), rel=1e-4)
    assert math.isnan(TaskScore(0.8, 0.7, 0.9, "measured", 1).p_value())


def test_false_discovery_control_keeps_strong_gains_and_drops_a_lucky_one():
    tasks = tuple("abcdefgh")
    rows = [("b", "a", 0.30, 0.25, 0.35, 3), ("a", "b", 0.30, 0.25, 0.35, 3)]  # strong: p ~ 1e-3
    rows.append(("c", "a", 0.06, 0.01, 0.11, 3))  # its interval excludes 0 on its own (p ~ 0.04)
    rows += [(j, i, 0.0, -0.05, 0.05, 3) for i in "defgh" for j in "defgh" if i != j]  # 20 null gains
    alone = GroupScorer.from_tables(tasks=tasks, affinity=_affinity([(*r, "measured") for r in rows[:3]]), fdr=0.05)
    assert alone(("a", "c"), "a").real  # 3 comparisons: the lucky gain still passes (p ~ 0.04 <= 0.05)
    off = GroupScorer.from_tables(tasks=tasks, affinity=_affinity([(*r, "measured") for r in rows]))
    assert off(("a", "c"), "a").real and off(("a", "c"), "a").discovered is None  # default: the interval alone
    scorer = GroupScorer.from_tables(tasks=tasks, affinity=_affinity([(*r, "measured") for r in rows]), fdr=0.05)
    assert scorer(("a", "b"), "a").real  # survives among 23 comparisons
    lucky = scorer(("a", "c"), "a")
    assert lucky.ci_high < 1.0 and lucky.discovered is False and not lucky.real
    aff = _affinity([(*r, "measured") for r in rows])
    rec = recommend(spec_tasks=list(tasks), affinity=aff, group_scores=None, depth_L=2, fdr=0.05)
    assert {tuple(g["tasks"]) for g in rec["groups"] if len(g["tasks"]) > 1} == {("a", "b")}
    assert any("false-discovery rate of 0.05" in r and "2 of 23 scores pass" in r for r in rec["reasons"])


def test_false_discovery_control_covers_the_auxiliaries_gains():
    # --fdr judged only task pairs: a lucky auxiliary gain among many null comparisons was kept.
    tasks = tuple("defgh")
    rows = [(j, i, 0.0, -0.05, 0.05, 3) for i in tasks for j in tasks if i != j]  # 20 null gains
    rows.append(("d__hint", "d", 0.30, 0.25, 0.35, 3))  # strong: p ~ 1e-3
    rows.append(("e__hint", "e", 0.06, 0.01, 0.11, 3))  # its interval excludes 0 on its own (p ~ 0.04)
    aff = _affinity([(*r, "measured") for r in rows])
    kinds = [{"name": "d__hint", "kind": "hints"}, {"name": "e__hint", "kind": "hints"}]

    def chosen(rec):
        return {a["name"] for g in rec["groups"] for a in g["aux"]}

    assert chosen(recommend(spec_tasks=list(tasks), affinity=aff, group_scores=None, depth_L=2,
                            candidates=kinds)) == {"d__hint", "e__hint"}
    rec = recommend(spec_tasks=list(tasks), affinity=aff, group_scores=None, depth_L=2, candidates=kinds, fdr=0.05)
    assert chosen(rec) == {"d__hint"}
    assert any("1 of 22 scores pass" in r for r in rec["reasons"])
    scorer = GroupScorer.from_tables(tasks=tasks, affinity=aff, fdr=0.05)
    assert scorer.aux_rows[("d__hint", "d")].discovered and scorer.aux_rows[("e__hint", "e")].discovered is False
