"""Tests for taskscout.grouping.graph: edges, strongest partners, negative transfer, GraphML."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from taskscout import rundir
from taskscout.errors import MissingResultsError, SpecError
from taskscout.grouping import (
    build_graph,
    load_graphml,
    negative_transfer_edges,
    recommend,
    save_graphml,
    strongest_partners,
)

from .conftest import _affinity, _planted_affinity


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
