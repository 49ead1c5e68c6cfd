"""Tests for taskscout.grouping: graph, scores, the grouping solver, branch layers, recommendation."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest

from taskscout import rundir
from taskscout.errors import MissingResultsError, SpecError
from taskscout.grouping import (
    RSA_SHARE_THRESHOLD,
    GroupScorer,
    TaskScore,
    anchored_predictions,
    baselines_from_trials,
    build_graph,
    choose_auxiliaries,
    choose_branch_layer,
    choose_grouping,
    groups_to_measure,
    load_graphml,
    negative_transfer_edges,
    observed_group_scores,
    recommend,
    recommend_run,
    save_graphml,
    solve_grouping,
    strongest_partners,
    with_subset_scores,
    write_recommendation,
)

# ---------------------------------------------------------------- helpers


def _score(c: float, hw: float, source: str = "measured") -> TaskScore:
    return TaskScore(c, c - hw, c + hw, source, 3)


def _random_table(n_tasks: int, seed: int, n_groups: int = 9) -> tuple[tuple[str, ...], dict]:
    """A sparse random table of group -> task -> score; about half the memberships are real."""
    rng = np.random.default_rng(seed)
    tasks = tuple(f"t{i}" for i in range(n_tasks))
    all_groups = [g for k in range(2, n_tasks + 1) for g in itertools.combinations(tasks, k)]
    picked = rng.choice(len(all_groups), size=min(n_groups, len(all_groups)), replace=False)
    table = {}
    for gi in sorted(picked):
        g = all_groups[gi]
        table[g] = {t: _score(float(rng.uniform(0.5, 1.1)), float(rng.uniform(0.01, 0.15))) for t in g}
    return tasks, table


def _lookup(table: dict):
    return lambda group, task: table.get(tuple(group), {}).get(task)


def _brute_force(tasks, table, budget, only_real):
    """Optimal total by enumerating every set of at most `budget` networks (the definition itself)."""
    multi = [g for g, s in table.items() if all(x.real or not only_real for x in s.values())]
    networks = multi + [(t,) for t in tasks]
    best = (math.inf, 0)
    for k in range(1, budget + 1):
        for chosen in itertools.combinations(networks, k):
            total = 0.0
            for t in tasks:
                costs = [1.0 if len(g) == 1 else table[g][t].norm_loss for g in chosen if t in g]
                if not costs:
                    break
                total += min(costs)
            else:
                if total < best[0] - 1e-9:
                    best = (total, k)
    return best


def _affinity(rows):
    return pd.DataFrame(rows, columns=list(rundir.AFFINITY_COLUMNS))


def _planted_affinity(groups, inside=0.15, across=0.0, hw=0.05, extra=()):
    """Measured pairwise gains: `inside` within a group, `across` between groups, +-hw."""
    tasks = [t for g in groups for t in g]
    member = {t: i for i, g in enumerate(groups) for t in g}
    rows = []
    for s, t in itertools.permutations(tasks, 2):
        gain = inside if member[s] == member[t] else across
        rows.append((s, t, gain, gain - hw, gain + hw, 3, "measured"))
    rows.extend(extra)
    return tasks, _affinity(rows)


# ---------------------------------------------------------------- solver


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


# ---------------------------------------------------------------- scores


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


# ---------------------------------------------------------------- recommendation


def test_recommend_recovers_planted_groups():
    groups = [["g0_t0", "g0_t1", "g0_t2"], ["g1_t0", "g1_t1", "g1_t2"], ["g2_t0", "g2_t1", "g2_t2"]]
    tasks, aff = _planted_affinity(groups, inside=0.12, across=-0.01, hw=0.04)
    rec = recommend(spec_tasks=tasks, affinity=aff, depth_L=2,
                    baselines={"single_task_loss": {t: 0.5 for t in tasks}, "all_together_loss": {}})
    assert rec["schema_version"] == 1 and rec["tasks"] == tasks
    served = {}
    for t, i in rec["assignment"].items():
        served.setdefault(i, []).append(t)
    assert sorted(served.values()) == groups
    assert rec["budget"] == {"networks": 3, "requested": None}
    assert [p["networks"] for p in rec["pareto"]][-1] == len(tasks)
    front = {p["networks"]: p["total_normalised_loss"] for p in rec["pareto"]}
    assert front[3] == pytest.approx(9 * 0.88)
    assert 1 not in front  # one network would need memberships without a real gain
    assert front[2] > front[3] and front[9] == front[3]
    assert all(g["branch_layer"] == 2 and g["branch_source"] == "default" for g in rec["groups"])
    assert rec["verdict"].startswith("Train 3 network(s)")
    assert rec["baselines"]["single_task_loss"]["g0_t0"] == 0.5
    json.dumps(rec, allow_nan=False)  # strict JSON: no NaN anywhere


def test_no_real_gain_means_every_task_alone_with_a_reason():
    tasks, aff = _planted_affinity([["a", "b", "c"]], inside=0.02, hw=0.05)
    rec = recommend(spec_tasks=tasks, affinity=aff, depth_L=2)
    assert [g["tasks"] for g in rec["groups"]] == [["a"], ["b"], ["c"]]
    assert rec["assignment"] == {"a": 0, "b": 1, "c": 2}
    assert rec["verdict"].startswith("Train every task separately")
    assert "no task gains from any partner" in rec["reasons"][0]
    assert [p["networks"] for p in rec["pareto"]] == [3]
    assert all(g["score_source"] == "single" for g in rec["groups"])



def test_one_way_gains_give_every_task_alone_with_a_reason_that_says_so():
    # b really gains from a, a does not gain from b: no network where every task gains. The
    # verdict once said "no task gains from any partner" and then quoted a -> b's real gain.
    # c -> a is the largest gain, but not real: the reason quotes the largest real one.
    aff = _affinity([("a", "b", 0.05, 0.03, 0.07, 3, "measured"), ("b", "a", -0.01, -0.06, 0.04, 3, "measured"),
                     ("a", "c", 0.0, -0.05, 0.05, 3, "measured"), ("c", "a", 0.08, -0.1, 0.26, 3, "measured"),
                     ("b", "c", 0.0, -0.05, 0.05, 3, "measured"), ("c", "b", 0.0, -0.05, 0.05, 3, "measured")])
    rec = recommend(spec_tasks=["a", "b", "c"], affinity=aff, depth_L=2)
    assert rec["assignment"] == {"a": 0, "b": 1, "c": 2}
    assert "no task gains from any partner" not in rec["verdict"]
    assert ("no two tasks both gain from training together" in rec["reasons"][0]
            and "largest real gain: a -> b +5.0%, interval [+3.0%, +7.0%]; b -> a -1.0%, interval [-6.0%, +4.0%]"
            in rec["reasons"][0])
    # Kept at an interval that excludes zero, dropped by the false-discovery control.
    assert "false-discovery" in recommend(spec_tasks=["a", "b", "c"], affinity=aff, depth_L=2, fdr=1e-9)["reasons"][0]

def test_a_single_main_task_is_not_told_to_run_the_pairs_phase():
    # with one main task the pairs phase has nothing to pair; the verdict once asked for it
    aff = _affinity([("x__hint", "a", 0.01, -0.05, 0.07, 3, "measured")])
    rec = recommend(spec_tasks=["a"], affinity=aff, depth_L=2)
    assert rec["verdict"] == "Train a in a network of its own: a is the only main task, so there is nothing to group it with."
    assert "pairs" not in " ".join(rec["reasons"])


def test_write_recommendation_round_trip(tmp_path):
    tasks, aff = _planted_affinity([["a", "b"], ["c"]], inside=0.2, hw=0.05)
    rec = recommend(spec_tasks=tasks, affinity=aff, depth_L=2)
    path = write_recommendation(tmp_path, rec)
    assert path == tmp_path / rundir.RECOMMENDATION
    assert rundir.read_json(path) == rec


def test_recommend_run_reads_the_run_directory(tmp_path):
    from taskscout.spec import resolve_spec

    spec = resolve_spec("builtin:planted", {"tasks": ["a", "b", "c"], "model": {"depth": 3}})
    rundir.write_text(tmp_path / rundir.SPEC, spec.to_json())
    tasks, aff = _planted_affinity([["a", "b"], ["c"]], inside=0.2, hw=0.05,
                                   extra=[("a__ge_1", "c", 0.1, 0.05, 0.15, 3, "measured")])
    rundir.write_csv(tmp_path / rundir.AFFINITY, aff)
    rundir.write_json(tmp_path / rundir.CANDIDATES, [{"name": "a__ge_1", "kind": "quantization"}])
    rec = recommend_run(tmp_path)
    assert rundir.read_json(tmp_path / rundir.RECOMMENDATION) == rec
    assert rec["auxiliaries"]["c"][0]["name"] == "a__ge_1"
    assert load_graphml(tmp_path / rundir.GRAPH).nodes["a__ge_1"]["kind"] == "aux:quantization"
    assert all(g["branch_layer"] == 3 for g in rec["groups"])
    (tmp_path / rundir.AFFINITY).unlink()
    with pytest.raises(MissingResultsError, match="affinity.csv"):
        recommend_run(tmp_path)


# ---------------------------------------------------------------- branch layer


def _depth(rows):
    return pd.DataFrame(rows, columns=list(rundir.DEPTH_COLUMNS))


def test_branch_tie_goes_to_the_deeper_layer():
    # layer 1 has a slightly higher mean, but inside the intervals: layer 2 (more sharing) wins
    depth = _depth([
        ("a|b", 0, "a", 0.00, -0.04, 0.04, 3), ("a|b", 0, "b", 0.00, -0.04, 0.04, 3),
        ("a|b", 1, "a", 0.10, 0.06, 0.14, 3), ("a|b", 1, "b", 0.08, 0.04, 0.12, 3),
        ("a|b", 2, "a", 0.09, 0.05, 0.13, 3), ("a|b", 2, "b", 0.07, 0.03, 0.11, 3),
    ])
    got = choose_branch_layer(("b", "a"), order=("a", "b"), depth=depth, similarity=None, depth_L=2)
    assert (got.layer, got.source) == (2, "depth")
    assert got.mean_gain == pytest.approx(0.08)
    # a clear winner at a shallower layer keeps it
    clear = _depth([
        ("a|b", 1, "a", 0.20, 0.18, 0.22, 3), ("a|b", 1, "b", 0.20, 0.18, 0.22, 3),
        ("a|b", 2, "a", 0.05, 0.03, 0.07, 3), ("a|b", 2, "b", 0.05, 0.03, 0.07, 3),
    ])
    assert choose_branch_layer(("a", "b"), order=("a", "b"), depth=clear, similarity=None, depth_L=2).layer == 1


def test_branch_layer_of_a_triple_pools_its_pairs():
    rows = []
    for pair in ("a|b", "a|c", "b|c"):
        for t in pair.split("|"):
            rows += [(pair, 1, t, 0.2, 0.18, 0.22, 3), (pair, 2, t, 0.05, 0.03, 0.07, 3)]
    got = choose_branch_layer(("a", "b", "c"), order=("a", "b", "c"), depth=_depth(rows), similarity=None, depth_L=2)
    assert (got.layer, got.source) == (1, "depth")
    missing = _depth([r for r in rows if r[0] != "b|c"])
    got = choose_branch_layer(("a", "b", "c"), order=("a", "b", "c"), depth=missing, similarity=None, depth_L=2)
    assert (got.layer, got.source) == (2, "default")


def test_a_group_measured_with_the_whole_trunk_shared_keeps_it():
    order = ("a", "b", "c")
    sim = pd.DataFrame([(p, 1, 0.9) for p in ("a|b", "a|c", "b|c")], columns=["pair", "layer", "similarity"])
    pooled = _depth([(p, layer, t, g, g - 0.02, g + 0.02, 3) for p in ("a|b", "a|c", "b|c") for t in p.split("|")
                     for layer, g in ((1, 0.2), (2, 0.05))])
    # measured at full sharing: neither the pairs' pooled depth rows nor similarity move it
    got = choose_branch_layer(order, order=order, depth=pooled, similarity=sim, depth_L=2, measured=True)
    assert (got.layer, got.source) == (2, "measured")
    assert choose_branch_layer(order, order=order, depth=pooled, similarity=sim, depth_L=2).source == "depth"
    # the depth phase trained the group itself at every layer: its rows decide
    own = _depth([("a|b", layer, t, g, g - 0.02, g + 0.02, 3) for t in "ab" for layer, g in ((1, 0.2), (2, 0.05))])
    got = choose_branch_layer(("a", "b"), order=order, depth=own, similarity=sim, depth_L=2, measured=True)
    assert (got.layer, got.source) == (1, "depth")
    # in a recommendation: a group scored on its own measured rows shares the whole trunk
    tasks = ("a", "b", "c", "d")
    gs = _measured_pairs(tasks, helped="abc")
    obs = pd.concat([_pair_observations(tasks, helped="abc"),
                     _observations([("a|b|c", t, [0.6, 0.62, 0.64]) for t in "abc"])], ignore_index=True)
    rec = recommend(spec_tasks=tasks, affinity=_affinity([]), group_scores=with_subset_scores(gs, obs, tasks),
                    similarity=sim, depth_L=2)
    assert (rec["groups"][0]["tasks"], rec["groups"][0]["branch_layer"], rec["groups"][0]["branch_source"]) == (
        ["a", "b", "c"], 2, "measured")


def test_branch_layer_falls_back_to_similarity_then_default():
    sim = pd.DataFrame([
        ("a|b", 1, 0.9), ("a|b", 2, RSA_SHARE_THRESHOLD + 0.01), ("a|b", 3, 0.2),
        ("b|c", 1, 0.3), ("b|c", 2, 0.1), ("a|c", 1, 0.25), ("a|c", 2, 0.28),
    ], columns=["pair", "layer", "similarity"])
    order = ("a", "b", "c")
    got = choose_branch_layer(("a", "b"), order=order, depth=None, similarity=sim, depth_L=3)
    assert (got.layer, got.source) == (2, "rsa")
    # no layer reaches the threshold for the triple: the layer where its weakest pair is most similar
    got = choose_branch_layer(("a", "b", "c"), order=order, depth=None, similarity=sim, depth_L=3)
    assert (got.layer, got.source) == (1, "rsa")
    got = choose_branch_layer(("a", "b"), order=order, depth=None, similarity=None, depth_L=3)
    assert (got.layer, got.source) == (3, "default")


# ---------------------------------------------------------------- auxiliaries and baselines


def test_auxiliaries_keep_real_measured_gains_best_first_capped():
    aff = _affinity([
        ("x1", "a", 0.05, 0.01, 0.09, 3, "measured"),
        ("x2", "a", 0.10, 0.02, 0.18, 3, "measured"),
        ("x3", "a", 0.20, -0.01, 0.41, 3, "measured"),  # not real
        ("x4", "a", 0.30, 0.20, 0.40, 1, "tag"),  # not measured
        ("x5", "a", 0.03, 0.01, 0.05, 3, "measured"),
        ("b", "a", 0.30, 0.20, 0.40, 3, "measured"),  # a main task, not an auxiliary
    ])
    got = choose_auxiliaries(aff, tasks=("a", "b"), aux_kinds={"x2": "hints"}, cap=2)
    assert [x.name for x in got["a"]] == ["x2", "x1"]
    assert got["a"][0].kind == "hints" and got["a"][0].ci == (0.02, 0.18)
    assert got["b"] == []


def test_baselines_from_trials():
    trials = pd.DataFrame([
        {"tasks": ["a"], "aux": [], "val_loss": json.dumps({"a": 0.4}), "branch_layer": 2, "state": "COMPLETE"},
        {"tasks": ["a"], "aux": [], "val_loss": json.dumps({"a": 0.6}), "branch_layer": 2, "state": "COMPLETE"},
        {"tasks": ["a"], "aux": ["x"], "val_loss": json.dumps({"a": 0.1, "x": 1}), "branch_layer": 2, "state": "COMPLETE"},
        {"tasks": ["a", "b"], "aux": [], "val_loss": json.dumps({"a": 0.3, "b": 0.7}), "branch_layer": 2, "state": "COMPLETE"},
        {"tasks": ["a", "b"], "aux": [], "val_loss": json.dumps({"a": 0.9, "b": 0.9}), "branch_layer": 1, "state": "COMPLETE"},
        {"tasks": ["b"], "aux": [], "val_loss": json.dumps({"b": 5.0}), "branch_layer": 2, "state": "PRUNED"},
    ])
    got = baselines_from_trials(trials, tasks=("a", "b"))
    assert got == {"single_task_loss": {"a": pytest.approx(0.5)}, "all_together_loss": {"a": 0.3, "b": 0.7}}


# ---------------------------------------------------------------- graph


def test_graph_edges_methods_and_negative_transfer():
    aff = _affinity([
        ("a", "b", 0.10, 0.05, 0.15, 3, "measured"),
        ("a", "b", 0.50, 0.40, 0.60, 1, "tag"),
        ("c", "b", 0.02, -0.01, 0.05, 3, "measured"),
        ("b", "a", -0.10, -0.15, -0.05, 3, "measured"),
        ("c", "a", 0.30, 0.10, 0.50, 1, "gradcos"),
        ("a__ge_1", "a", 0.04, 0.01, 0.07, 3, "measured"),
        ("a", "a__ge_1", 0.04, 0.01, 0.07, 3, "measured"),  # target is not a main task: not an edge
    ])
    g = build_graph(aff, tasks=("a", "b", "c"), aux_kinds={"a__ge_1": "quantization"})
    assert g.nodes["a"]["kind"] == "task" and g.nodes["a__ge_1"]["kind"] == "aux:quantization"
    assert set(g.edges) == {("a", "b"), ("c", "b"), ("b", "a"), ("c", "a"), ("a__ge_1", "a")}
    e = g.edges["a", "b"]
    assert (e["method"], e["gain"], e["real"], e["gain_tag"]) == ("measured", 0.10, True, 0.50)
    assert g.edges["c", "b"]["real"] is False
    assert g.edges["c", "a"]["method"] == "gradcos"
    assert [(x.source, x.target) for x in negative_transfer_edges(g)] == [("b", "a")]
    assert [x.source for x in strongest_partners(g, "a", 5)] == ["c", "b"]
    assert [x.source for x in strongest_partners(g, "a", 1, include_aux=True)] == ["c"]
    assert [x.source for x in strongest_partners(g, "b", 1)] == ["a"]
    with pytest.raises(SpecError, match="not in the affinity graph"):
        strongest_partners(g, "zzz")
    with pytest.raises(MissingResultsError, match="ci_low"):
        build_graph(aff.drop(columns=["ci_low"]), tasks=("a",))


def test_graphml_round_trip(tmp_path):
    aff = _affinity([
        ("a", "b", 0.10, 0.05, 0.15, 3, "measured"),
        ("x", "a", 0.02, float("nan"), float("nan"), 1, "tag"),
    ])
    g = build_graph(aff, tasks=("a", "b"), aux_kinds={"x": "hints"})
    path = save_graphml(g, tmp_path / rundir.GRAPH)
    back = load_graphml(path)
    assert set(back.nodes) == set(g.nodes) and set(back.edges) == set(g.edges)
    assert dict(back.nodes(data=True)) == dict(g.nodes(data=True))
    assert back.edges["a", "b"] == g.edges["a", "b"]
    assert math.isnan(back.edges["x", "a"]["ci_low"]) and back.edges["x", "a"]["real"] is False
    assert back.is_directed()


def test_related_auxiliary_copying_a_group_member_is_not_listed_for_the_group():
    groups = [["a", "b"], ["c"]]
    tasks, aff = _planted_affinity(groups, inside=0.12, across=-0.01, hw=0.04)
    aff = pd.concat([aff, _affinity([
        ("b__related", "a", 0.10, 0.02, 0.18, 3, "measured"),  # b is in a's group already
        ("x__hint", "a", 0.05, 0.01, 0.09, 3, "measured"),
        ("a__related", "c", 0.08, 0.02, 0.14, 3, "measured"),  # a is not in c's group: kept
    ])], ignore_index=True)
    candidates = [
        {"name": "b__related", "kind": "related", "provenance": {"columns": ["b"]}},
        {"name": "x__hint", "kind": "hints", "provenance": {"columns": ["x"]}},
        {"name": "a__related", "kind": "related", "provenance": {"columns": ["a"]}},
    ]
    rec = recommend(spec_tasks=tasks, affinity=aff, depth_L=2, candidates=candidates)
    by_tasks = {tuple(g["tasks"]): [x["name"] for x in g["aux"]] for g in rec["groups"]}
    assert by_tasks[("a", "b")] == ["x__hint"]
    assert by_tasks[("c",)] == ["a__related"]
    assert [x["name"] for x in rec["auxiliaries"]["a"]] == ["b__related", "x__hint"]  # per task: all real ones


# ---------------------------------------------------------------- subsets: measured scores, what to measure


def _observations(rows):
    """Surrogate observations: (group, task, [norm loss per seed 0, 1, 2])."""
    return pd.DataFrame([(g, t, s, v) for g, t, vals in rows for s, v in enumerate(vals)],
                        columns=list(rundir.SUBSET_OBSERVATION_COLUMNS))


def _measured_pairs(tasks, helped, norm_in=0.85, norm_out=1.10, hw=0.05):
    """group_scores.csv rows: every task alone, every pair (norm_in inside `helped`, else norm_out)."""
    rows = [(t, t, 1.0, 1.0, 1.0, 3, "measured") for t in tasks]
    for a, b in itertools.combinations(tasks, 2):
        v = norm_in if {a, b} <= set(helped) else norm_out
        rows += [(f"{a}|{b}", t, v, v - hw, v + hw, 3, "measured") for t in (a, b)]
    return pd.DataFrame(rows, columns=list(rundir.GROUP_SCORE_COLUMNS))


def _pair_observations(tasks, helped, norm_in=0.85, norm_out=1.10):
    rows = [(t, t, [1.0, 1.0, 1.0]) for t in tasks]
    for a, b in itertools.combinations(tasks, 2):
        v = norm_in if {a, b} <= set(helped) else norm_out
        rows += [(f"{a}|{b}", t, [v - 0.02, v, v + 0.02]) for t in (a, b)]
    return _observations(rows)


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


def test_an_auxiliary_serving_two_members_is_listed_once_for_the_group():
    # Each served task listed its auxiliaries in turn, so the network named x__hint twice and
    # train/verify refused it ("a model lists a target more than once").
    tasks, aff = _planted_affinity([["a", "b"], ["c"]], inside=0.12, across=-0.01, hw=0.04, extra=[
        ("x__hint", "a", 0.05, 0.01, 0.09, 3, "measured"),
        ("x__hint", "b", 0.08, 0.02, 0.14, 3, "measured"),
        ("y__hint", "b", 0.03, 0.01, 0.05, 3, "measured"),
    ])
    candidates = [{"name": n, "kind": "hints", "provenance": {"columns": ["x"]}} for n in ("x__hint", "y__hint")]
    rec = recommend(spec_tasks=tasks, affinity=aff, depth_L=2, candidates=candidates)
    group = next(g for g in rec["groups"] if g["tasks"] == ["a", "b"])
    assert [x["name"] for x in group["aux"]] == ["x__hint", "y__hint"]
    x = group["aux"][0]
    assert x["serves"] == ["a", "b"]
    assert x["expected_gain"] == pytest.approx({"a": 0.05, "b": 0.08})
    assert x["ci"] == {"a": pytest.approx([0.01, 0.09]), "b": pytest.approx([0.02, 0.14])}
    assert group["aux"][1]["serves"] == ["b"]
    assert rec["verdict"].count("x__hint") == 1


@pytest.mark.parametrize("phases, missing", [
    (("pairs",), "run the search's 'single' phase"),   # pairs trained: nothing to measure them against
    (("single",), "run the search's 'pairs' phase"),
])
def test_no_gains_reason_names_the_phase_that_did_not_run(phases, missing):
    from taskscout.affinity.measured import LOSS_COLUMNS, measured_affinity
    from taskscout.affinity.measured import group_scores as measured_group_scores

    tasks = ["a", "b"]
    rows = []
    for seed in range(3):
        if "single" in phases:
            rows += [(("a",), (), 2, seed, "a", 1.0), (("b",), (), 2, seed, "b", 1.0)]
        if "pairs" in phases:
            rows += [(("a", "b"), (), 2, seed, "a", 0.8), (("a", "b"), (), 2, seed, "b", 0.8)]
    losses = pd.DataFrame(rows, columns=list(LOSS_COLUMNS))
    rec = recommend(spec_tasks=tasks, affinity=measured_affinity(losses, full_layer=2),
                    group_scores=measured_group_scores(losses, full_layer=2, order=tasks), depth_L=2)
    assert rec["verdict"] == (f"Train every task separately (2 networks): there are no measured pairwise gains "
                              f"to group by ({missing}" + (": gains are measured against each task trained alone)."
                                                           if "pairs" in phases else ")."))
