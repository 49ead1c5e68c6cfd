"""Tests for taskscout.recommendation: recommendation.json as a typed, frozen result."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from taskscout import rundir
from taskscout.errors import MissingResultsError
from taskscout.grouping import recommend
from taskscout.recommendation import (
    AuxiliaryChoice,
    Group,
    GroupAuxiliary,
    Network,
    Recommendation,
    Selection,
    read_recommendation,
)

from .grouping.conftest import _planted_affinity

PLANTED = Path(__file__).parent / "planted_recommendation.json"


def test_real_search_output_round_trips_exactly():
    # recommendation.json of `taskscout search builtin:planted --budget small` (9 tasks, seed 0)
    raw = json.loads(PLANTED.read_text())
    rec = Recommendation.from_dict(raw)
    assert rec.to_dict() == raw
    assert rundir.json_text(rec.to_dict()) == PLANTED.read_text()  # the very same file, key order included
    assert [g.tasks for g in rec.groups] == [("g0_t0", "g0_t1", "g0_t2"), ("g1_t0", "g1_t1", "g1_t2"),
                                            ("g2_t0", "g2_t1", "g2_t2")]
    assert rec.served_by("g1_t2").tasks == ("g1_t0", "g1_t1", "g1_t2")
    assert rec.networks == 3 and rec.requested is None and not rec.provisional
    assert rec.auxiliaries["g1_t0"] == (AuxiliaryChoice("g1_t1__related", "related", 0.053511, (0.016616, 0.090407)),)
    assert rec.groups[0].ci["g0_t0"] == (0.12845, 0.275686)
    assert rec.pareto[0].used == 3 and rec.pareto[0].groups == tuple(g.tasks for g in rec.groups)


def test_recommend_output_round_trips_and_reads_back_from_a_run_directory(tmp_path):
    groups = [["a", "b"], ["c", "d"]]
    tasks, aff = _planted_affinity(groups, inside=0.12, across=-0.01, hw=0.04)
    raw = recommend(spec_tasks=tasks, affinity=aff, depth_L=2, networks=2,
                    baselines={"single_task_loss": {t: 0.5 for t in tasks}, "all_together_loss": {}})
    rec = Recommendation.from_dict(raw)
    assert rec.to_dict() == raw and rec.requested == 2
    assert [g.serves for g in rec.groups] == [("a", "b"), ("c", "d")]
    rundir.write_json(tmp_path / rundir.RECOMMENDATION, raw)
    assert read_recommendation(tmp_path) == rec


HAND_WRITTEN = {
    "schema_version": 1,
    "tasks": ["a", "b", "c"],
    "groups": [
        {"tasks": ["a", "b"], "serves": ["a", "b"], "branch_layer": 1, "branch_source": "depth",
         "score_source": "measured", "sources": {"a": "measured", "b": "measured"},
         "aux": [{"name": "a__ordinal", "kind": "quantization", "serves": ["a"], "expected_gain": {"a": 0.12},
                  "ci": {"a": [0.08, 0.16]}}],
         "expected_gain": {"a": 0.12, "b": 0.05}, "ci": {"a": [0.08, 0.16], "b": [0.01, 0.09]}},
        {"tasks": ["c"], "serves": ["c"], "branch_layer": 2, "branch_source": "default", "score_source": "single",
         "sources": {"c": None}, "aux": [], "expected_gain": {"c": None}, "ci": {"c": None}},
    ],
    "assignment": {"a": 0, "b": 0, "c": 1},
    "auxiliaries": {"a": [{"name": "a__ordinal", "kind": "quantization", "expected_gain": 0.12, "ci": [0.08, 0.16]}],
                    "b": [], "c": []},
    "baselines": {"single_task_loss": {"a": 0.4, "b": 0.3, "c": 0.2}, "all_together_loss": {"a": 0.45}},
    "budget": {"networks": 2, "requested": None},
    "pareto": [{"networks": 2, "used": 2, "total_normalised_loss": 2.83, "ci": [2.7, 2.96], "groups": [["a", "b"], ["c"]]}],
    "verdict": "Train 2 network(s): {a, b} branching after layer 1 of 2; c alone.",
    "reasons": ["chosen from 1 feasible budgets"],
}


def test_hand_written_json_round_trips_exactly():
    rec = Recommendation.from_dict(copy.deepcopy(HAND_WRITTEN))
    assert rec.to_dict() == HAND_WRITTEN
    assert rec.groups[0].aux == (GroupAuxiliary("a__ordinal", "quantization", ("a",), {"a": 0.12}, {"a": (0.08, 0.16)}),)
    assert rec.groups[1].expected_gain == {"c": None} and rec.groups[1].ci == {"c": None}
    assert rec.baselines["all_together_loss"] == {"a": 0.45}
    with_selection = {**HAND_WRITTEN, "selection": copy.deepcopy(SELECTION)}
    rec = Recommendation.from_dict(with_selection)
    assert rec.to_dict() == with_selection
    assert isinstance(rec.selection, Selection) and rec.selection.chosen == "recommended"
    assert rec.selection.candidate.networks == (Network(("a", "b"), ("a", "b"), 1, ("a__ordinal",)), Network(("c",), ("c",), 2))
    assert rec.selection.score("front:2").totals == {20000: 2.7, 20001: 2.8}
    assert math.isnan(rec.selection.compute_fraction) and rec.selection.budget_fraction == 0.21


def _network(tasks, branch=2, aux=()):
    return {"tasks": list(tasks), "serves": list(tasks), "branch_layer": branch, "aux": list(aux)}


SELECTION = {
    "rule": "total", "rows": "crossfit", "rows_detail": "cross-fitted over 5 folds", "seeds": [20000, 20001],
    "candidates": [
        {"name": "all-together", "aliases": [], "origin": "every task in one network",
         "networks": [_network("abc")], "totals": {"20000": 2.9, "20001": 3.1}, "total": [3.0, 1.7, 4.3],
         "vs_best_baseline": [0.0, 0.0, 0.0]},
        {"name": "recommended", "aliases": ["front:2"], "origin": "the solver's choice",
         "networks": [_network("ab", 1, ["a__ordinal"]), _network("c")], "totals": {"20000": 2.7, "20001": 2.8},
         "total": [2.75, 2.1, 3.4], "vs_best_baseline": [-0.25, -1.5, 1.0]},
        {"name": "all-separate", "aliases": [], "origin": "every task alone",
         "networks": [_network("a"), _network("b"), _network("c")], "totals": {"20000": 3.0, "20001": 3.0},
         "total": [3.0, None, None], "vs_best_baseline": [0.0, -1.3, 1.3]},
    ],
    "chosen": "recommended", "best_baseline": "all-together", "gain_vs_separate": [0.08, -0.1, 0.26],
    "gain_vs_together": [0.08, -0.3, 0.46], "reasons": ["start from the simplest admissible candidate"],
    "models": 12, "budget_fraction": 0.21, "compute_fraction": None,
}


@pytest.mark.parametrize("change, message", [
    ({"chosen": "ungated"}, "the chosen candidate 'ungated' is not among the candidates"),
    ({"rule": "vote"}, "rule must be one of"),
    ({"seeds": ["20000"]}, "expected an int"),
    ({"gain_vs_separate": [0.1, 0.2]}, "expected [mean, low, high]"),
    ({"extra": 1}, "unknown key 'extra'"),
])
def test_a_bad_selection_block_is_refused_in_one_line(change, message):
    bad = {**HAND_WRITTEN, "selection": {**copy.deepcopy(SELECTION), **change}}
    with pytest.raises(MissingResultsError) as e:
        Recommendation.from_dict(bad)
    assert message in str(e.value) and "\n" not in str(e.value) and str(e.value).startswith("selection in ")


def test_the_selection_block_without_its_candidates_is_refused():
    bad = {**HAND_WRITTEN, "selection": {k: v for k, v in SELECTION.items() if k != "candidates"}}
    with pytest.raises(MissingResultsError, match="no 'candidates'"):
        Recommendation.from_dict(bad)


def test_the_typed_selection_loads_without_scipy_or_torch():
    code = ("import sys; import taskscout.recommendation as r; "
            "print(sorted(m for m in ('scipy', 'torch', 'optuna', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_design_example_fills_the_defaults():
    # DESIGN.md's example names only what a person would write by hand
    rec = Recommendation.from_dict({
        "schema_version": 1, "tasks": ["a", "b"],
        "groups": [{"tasks": ["a", "b"], "branch_layer": 2, "aux": [{"name": "a__ordinal", "kind": "quantization"}],
                    "expected_gain": {"a": 0.12, "b": 0.05}, "ci": {"a": [0.08, 0.16], "b": [0.01, 0.09]}}],
        "assignment": {"a": 0, "b": 0},
        "baselines": {"single_task_loss": {"a": 0.4}, "all_together_loss": {"a": 0.45}},
        "budget": {"networks": 1},
    })
    assert rec.groups == (Group(tasks=("a", "b"), serves=("a", "b"), branch_layer=2,
                                aux=(GroupAuxiliary("a__ordinal", "quantization", (), {}, {}),),
                                expected_gain={"a": 0.12, "b": 0.05}, ci={"a": (0.08, 0.16), "b": (0.01, 0.09)}),)
    assert rec.verdict == "" and rec.reasons == () and rec.pareto == () and rec.requested is None
    again = rec.to_dict()
    assert again["groups"][0]["serves"] == ["a", "b"] and again["budget"] == {"networks": 1, "requested": None}
    assert Recommendation.from_dict(again) == rec


@pytest.mark.parametrize(("change", "says"), [
    (lambda d: d.update(schema_version=2), "schema_version in recommendation.json must be 1"),
    (lambda d: d.update(extra=1), "unknown key 'extra'"),
    (lambda d: d["assignment"].pop("c"), "assignment in recommendation.json must be a mapping from every task"),
    (lambda d: d["assignment"].update(c=5), "a group index in [0, 1]"),
    (lambda d: d["groups"][0].update(serves=["a"]), "groups[0].serves in recommendation.json must be the tasks"),
    (lambda d: d["groups"][0].update(branch_layer="2"), "groups[0].branch_layer in recommendation.json must be an int >= 0"),
    (lambda d: d["groups"][0]["ci"].update(a=[0.1]), "groups[0].ci.a in recommendation.json must be [low, high]"),
    (lambda d: d["groups"][1].update(tasks=["c", "z"]), "groups[1].tasks in recommendation.json must be a list drawn from"),
    (lambda d: d["auxiliaries"]["a"][0].update(expected_gain="big"), "auxiliaries.a[0].expected_gain"),
    (lambda d: d.update(tasks=[]), "tasks in recommendation.json must be a non-empty list"),
    (lambda d: d["groups"][0]["aux"].append(d["groups"][0]["aux"][0]), "groups[0].aux in recommendation.json must be a list naming each auxiliary once"),
    (lambda d: d["groups"][0]["aux"][0].update(serves="a"), "groups[0].aux[0].serves in recommendation.json must be a list of task names"),
])
def test_a_malformed_recommendation_is_named_key_by_key(change, says):
    raw = copy.deepcopy(HAND_WRITTEN)
    change(raw)
    with pytest.raises(MissingResultsError) as e:
        Recommendation.from_dict(raw)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_recommendation_is_frozen_and_read_errors_are_one_line(tmp_path):
    rec = Recommendation.from_dict(HAND_WRITTEN)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.verdict = "x"  # type: ignore[misc]
    with pytest.raises(MissingResultsError, match="has no recommendation.json"):
        read_recommendation(tmp_path)
    (tmp_path / rundir.RECOMMENDATION).write_text("{not json")
    with pytest.raises(MissingResultsError, match="is not valid JSON"):
        read_recommendation(tmp_path)
