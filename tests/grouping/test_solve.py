"""Tests for taskscout.grouping.solve: the exact and greedy solvers against brute force, the budget choice."""

from __future__ import annotations

import math

import pytest

from taskscout.errors import SpecError
from taskscout.grouping import GroupScorer, choose_grouping, solve_grouping

from .conftest import _brute_force, _lookup, _planted_affinity, _random_table, _score


@pytest.mark.parametrize("n_tasks", [3, 4, 5, 6])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("only_real", [True, False])
def test_solver_matches_brute_force(n_tasks, seed, only_real):
    tasks, table = _random_table(n_tasks, seed + 10 * n_tasks)
    solved = solve_grouping(tasks, _lookup(table), only_real=only_real)
    for budget in range(1, n_tasks + 1):
        expected, _ = _brute_force(tasks, table, budget, only_real)
        got = solved[budget]
        if math.isinf(expected):
            assert got is None
            continue
        assert got is not None
        assert got.total == pytest.approx(expected, abs=1e-9)
        assert got.networks <= budget
        # the reported total is what the chosen networks really give under the serving rule
        for t, i in got.assignment.items():
            assert t in got.groups[i]
            if only_real:
                assert got.scores[t].real or len(got.groups[i]) == 1


def test_overlapping_groups_and_the_serving_rule():
    # b is in both chosen networks and is served by the better one ({b, c}: 0.7 < 0.9)
    table = {
        ("a", "b"): {"a": _score(0.5, 0.05), "b": _score(0.9, 0.05)},
        ("b", "c"): {"b": _score(0.7, 0.05), "c": _score(0.5, 0.05)},
        ("a", "b", "c"): {t: _score(0.9, 0.05) for t in "abc"},
    }
    got = solve_grouping(("a", "b", "c"), _lookup(table), budgets=[2])[2]
    assert set(got.groups) == {("a", "b"), ("b", "c")}
    assert got.groups[got.assignment["b"]] == ("b", "c")
    assert got.groups[got.assignment["a"]] == ("a", "b")
    assert got.total == pytest.approx(0.5 + 0.7 + 0.5)
    # with one network only the triple fits
    one = solve_grouping(("a", "b", "c"), _lookup(table), budgets=[1])[1]
    assert one.groups == (("a", "b", "c"),) and one.total == pytest.approx(2.7)


def test_a_task_without_a_real_gain_is_served_alone():
    # c's interval in {a, b, c} reaches above 1: the triple is not a candidate; {a, b} is
    table = {
        ("a", "b"): {"a": _score(0.8, 0.05), "b": _score(0.8, 0.05)},
        ("a", "b", "c"): {"a": _score(0.6, 0.05), "b": _score(0.6, 0.05), "c": _score(0.97, 0.05)},
    }
    got = solve_grouping(("a", "b", "c"), _lookup(table), budgets=[3])[3]
    assert got.groups == (("a", "b"), ("c",))
    assert got.total == pytest.approx(2.6)


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_pareto_front_is_monotone_in_the_budget(seed):
    tasks, table = _random_table(6, seed, n_groups=20)
    choice = choose_grouping(tasks, _lookup(table))
    budgets = sorted(choice.front)
    assert budgets[-1] == len(tasks)
    totals = [choice.front[n].total for n in budgets]
    assert all(b <= a + 1e-12 for a, b in zip(totals, totals[1:], strict=False))
    assert all(choice.front[n].networks <= n for n in budgets)
    assert budgets == list(range(budgets[0], len(tasks) + 1))


def test_default_budget_prefers_fewer_networks_inside_the_intervals():
    tasks = ("a", "b", "c", "d")
    wide = {
        ("a", "b"): {"a": _score(0.80, 0.1), "b": _score(0.80, 0.1)},
        ("c", "d"): {"c": _score(0.80, 0.1), "d": _score(0.80, 0.1)},
        ("a", "b", "c", "d"): {t: _score(0.82, 0.1) for t in tasks},
    }
    choice = choose_grouping(tasks, _lookup(wide))
    assert choice.grouping.groups == (tasks,)
    assert any("inside the intervals" in r for r in choice.reasons)
    narrow = {g: {t: _score(s.norm_loss, 0.005) for t, s in v.items()} for g, v in wide.items()}
    choice = choose_grouping(tasks, _lookup(narrow))
    assert choice.grouping.groups == (("a", "b"), ("c", "d"))


def test_requested_budget_below_the_feasible_one_relaxes_and_says_so():
    tasks = ("a", "b", "c")
    table = {
        ("a", "b"): {"a": _score(0.8, 0.05), "b": _score(0.8, 0.05)},
        ("a", "b", "c"): {"a": _score(0.85, 0.05), "b": _score(0.85, 0.05), "c": _score(1.02, 0.05)},
    }
    choice = choose_grouping(tasks, _lookup(table), networks=1)
    assert choice.grouping.groups == (tasks,)
    assert not choice.grouping.only_real
    assert any("forces" in r for r in choice.reasons)
    assert min(choice.front) == 2
    assert choose_grouping(tasks, _lookup(table), networks=2).grouping.groups == (("a", "b"), ("c",))
    with pytest.raises(SpecError, match="networks"):
        choose_grouping(tasks, _lookup(table), networks=0)


def test_greedy_above_the_exact_limit_recovers_blocks():
    groups = [[f"g{g}_t{i}" for i in range(3)] for g in range(5)]  # 15 tasks > EXACT_MAX_TASKS
    tasks, aff = _planted_affinity(groups, inside=0.2, across=-0.02, hw=0.03)
    scorer = GroupScorer.from_tables(tasks=tasks, affinity=aff)
    choice = choose_grouping(tasks, scorer)
    assert sorted(choice.grouping.groups) == sorted(tuple(g) for g in groups)


def test_a_helper_stays_only_when_the_tasks_it_helps_are_clearly_better():
    # c is served by {c, d} (0.6 < 0.85); in {a, b, c} it only helps a and b, by 0.05 each
    tasks = ("a", "b", "c", "d")

    def table(hw):
        return {
            ("a", "b"): {"a": _score(0.80, hw), "b": _score(0.80, hw)},
            ("c", "d"): {"c": _score(0.60, hw), "d": _score(0.60, hw)},
            ("a", "b", "c"): {"a": _score(0.75, hw), "b": _score(0.75, hw), "c": _score(0.85, hw)},
        }

    raw = solve_grouping(tasks, _lookup(table(0.1)), budgets=[2])[2]
    assert raw.groups == (("a", "b", "c"), ("c", "d")) and raw.total == pytest.approx(2.7)
    wide = choose_grouping(tasks, _lookup(table(0.1)))  # -0.1 against a half-width of 0.2: inside
    assert wide.front[2].groups == (("a", "b"), ("c", "d")) and wide.front[2].total == pytest.approx(2.8)
    assert wide.grouping.groups == (("a", "b"), ("c", "d"))
    assert any("only to help others" in r for r in wide.reasons)
    assert all(wide.front[n].total <= wide.front[n - 1].total + 1e-12 for n in range(3, 5))  # still monotone
    narrow = choose_grouping(tasks, _lookup(table(0.005)))  # clearly better with c: c stays
    assert narrow.front[2].groups == (("a", "b", "c"), ("c", "d"))
    assert not any("only to help others" in r for r in narrow.reasons)
