"""Predict inputs: the least informative inputs move from input to output."""

from __future__ import annotations

import numpy as np
import pandas as pd

from taskscout.auxgen import GENERATORS, dropped_features, generate_candidates

from .conftest import make_study


def _frame(n=800, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    frame = pd.DataFrame({f"x{i}": x[:, i] for i in range(6)})
    frame["noise_cat"] = rng.choice(["a", "b", "c"], size=n)
    frame["y"] = x[:, 0] + np.sin(2 * x[:, 1]) + x[:, 2] ** 2 + 0.2 * rng.normal(size=n)
    return frame


def test_picks_the_planted_irrelevant_inputs():
    ds, spec = make_study(_frame(), tasks=["y"], aux={"kinds": ["predict_inputs"], "cap": 4})
    cands = generate_candidates(ds, spec)
    kept = {c.provenance["columns"][0] for c in cands if c.dropped is None}
    assert kept == {"x3", "x4", "x5", "noise_cat"}
    relevant = {c.provenance["columns"][0] for c in cands if c.dropped is not None}
    assert relevant == {"x0", "x1"}  # x2 is the most informative: never proposed, so a model keeps an input
    for c in cands:
        assert c.drops_inputs == (c.provenance["columns"][0],) and not c.training_only
    assert next(c for c in cands if c.name == "noise_cat__input").type == "multiclass"


def test_dropped_features_cover_every_feature_of_a_moved_column():
    ds, spec = make_study(_frame(), tasks=["y"], aux={"kinds": ["predict_inputs"], "cap": 4})
    cands = {c.name: c for c in generate_candidates(ds, spec)}
    one_hot = dropped_features(ds, [cands["noise_cat__input"]])
    assert [ds.feature_names[i] for i in one_hot] == ["noise_cat=a", "noise_cat=b", "noise_cat=c"]
    both = dropped_features(ds, [cands["noise_cat__input"], cands["x4__input"]])
    assert [ds.feature_names[i] for i in both] == ["x4", "noise_cat=a", "noise_cat=b", "noise_cat=c"]
    assert dropped_features(ds, []) == ()


def test_a_single_input_is_never_moved():
    frame = pd.DataFrame({"x0": np.arange(50.0), "y": np.arange(50.0) % 2})
    ds, spec = make_study(frame, tasks=["y"], aux={"kinds": ["predict_inputs"]})
    assert "only one input" in GENERATORS["predict_inputs"].why_not(ds, spec, "y")
    assert generate_candidates(ds, spec) == []


def test_the_best_scored_input_stays_when_the_others_cannot_be_scored():
    # an identifier kept as an input (every value differs) has no importance score; the one
    # informative input was once moved to the outputs, leaving the model only the identifier
    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(n)], "x": rng.normal(size=n)})
    frame["y"] = frame["x"] + 0.1 * rng.normal(size=n)
    ds, spec = make_study(frame, tasks=["y"], inputs=["id", "x"], aux={"kinds": ["predict_inputs"]})
    assert generate_candidates(ds, spec) == []
