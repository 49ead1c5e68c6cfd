"""Tests for taskscout.grouping.recommend: the recommendation from tables and from a run directory."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from taskscout import rundir
from taskscout.errors import MissingResultsError
from taskscout.grouping import load_graphml, recommend, recommend_run, write_recommendation

from .conftest import _affinity, _planted_affinity


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


def _sampled_affinity(tasks, groups):
    """affinity.csv rows of method "sampled": +0.05 inside a group, -0.01 across, tight intervals."""
    group_of = {t: g for g, grp in enumerate(groups) for t in grp}
    rows = [(s, t, g, g - 0.01, g + 0.01, 6, "sampled")
            for s in tasks for t in tasks if s != t
            for g in [0.05 if group_of[s] == group_of[t] else -0.01]]
    return pd.DataFrame(rows, columns=list(rundir.AFFINITY_COLUMNS))


@pytest.mark.parametrize("n_groups", [2, 5])  # 6 tasks: the exact solver's gate; 15: estimated totals
def test_selection_candidates_say_how_the_solver_chose(n_groups):
    from taskscout.grouping import selection_candidates
    from taskscout.grouping.subset_scores import sampled_predictor

    groups = [tuple(f"g{g}_t{i}" for i in range(3)) for g in range(n_groups)]
    tasks = [t for grp in groups for t in grp]
    affinity = _sampled_affinity(tasks, groups)
    found = selection_candidates(spec_tasks=tasks, affinity=affinity, depth_L=2,
                                 predict=sampled_predictor(affinity, tasks))
    how = "per-task gate" if len(tasks) <= 12 else "lowest estimated total"
    recommended = next(c for c in found if "recommended" in c.names)
    assert recommended.origin == f"the solver's choice ({how})"
    assert sorted(n.tasks for n in recommended.networks) == sorted(groups)
    fronts = [c for c in found if c.name.startswith("front:")]
    assert all(c.origin.endswith(f"({how})") for c in fronts)
