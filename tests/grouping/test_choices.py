"""Tests for taskscout.grouping.choices (branch layer, auxiliaries) and the baselines."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from taskscout import rundir
from taskscout.grouping import (
    RSA_SHARE_THRESHOLD,
    baselines_from_trials,
    choose_auxiliaries,
    choose_branch_layer,
    recommend,
    with_subset_scores,
)

from .conftest import _affinity, _measured_pairs, _observations, _pair_observations


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
