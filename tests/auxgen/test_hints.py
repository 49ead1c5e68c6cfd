"""Hints: derived features ranked by mutual information with the main target."""

from __future__ import annotations

import numpy as np
import pandas as pd

from taskscout.auxgen import GENERATORS, generate_candidates
from taskscout.auxgen.hints import derived_features

from .conftest import make_study

GEN = GENERATORS["hints"]


def _frame(n=600, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    return pd.DataFrame({f"x{i}": x[:, i] for i in range(4)}), rng


def test_planted_product_ranks_first_for_a_regression_target():
    frame, rng = _frame()
    frame["y"] = frame["x1"] * frame["x2"] + 0.3 * frame["x0"] + 0.5 * rng.normal(size=len(frame))
    ds, spec = make_study(frame, tasks=["y"], aux={"kinds": ["hints"], "cap": 3})
    cands = generate_candidates(ds, spec)
    assert cands[0].name == "x1*x2__product" and cands[0].dropped is None
    assert cands[0].score > 2 * cands[1].score
    assert cands[0].type == "regression" and not cands[0].training_only
    z1 = (frame["x1"] - frame["x1"][ds.split == 0].mean()) / frame["x1"][ds.split == 0].std(ddof=0)
    z2 = (frame["x2"] - frame["x2"][ds.split == 0].mean()) / frame["x2"][ds.split == 0].std(ddof=0)
    np.testing.assert_allclose(cands[0].values, z1 * z2)
    assert cands[0].provenance["columns"] == ["x1", "x2"]


def test_planted_product_ranks_first_for_a_binary_target():
    frame, rng = _frame(seed=1)
    frame["y"] = (frame["x1"] * frame["x2"] + 0.3 * rng.normal(size=len(frame)) > 0).astype(float)
    ds, spec = make_study(frame, tasks=["y"], aux={"kinds": ["hints"]})
    assert generate_candidates(ds, spec)[0].name == "x1*x2__product"


def test_planted_absolute_value_beats_products():
    frame, rng = _frame(seed=2)
    frame["y"] = np.abs(frame["x3"]) + 0.2 * rng.normal(size=len(frame))
    ds, spec = make_study(frame, tasks=["y"], aux={"kinds": ["hints"]})
    assert generate_candidates(ds, spec)[0].name in {"x3__abs", "x3__square"}


def test_two_valued_and_non_numeric_inputs_yield_no_copies_of_themselves():
    frame, rng = _frame(n=200)
    frame["b"] = (rng.random(200) > 0.5).astype(float)
    frame["colour"] = rng.choice(["red", "blue"], size=200)
    frame["y"] = frame["x0"] + rng.normal(size=200)
    ds, _ = make_study(frame, tasks=["y"])
    names = {d.name for d in derived_features(ds)}
    assert "x0*b__product" in names
    assert not {"b__square", "b__abs", "b__quartile"} & names
    assert not any("colour" in n for n in names)


def test_no_numeric_input_says_why():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"colour": rng.choice(["red", "blue"], size=100), "y": rng.normal(size=100)})
    ds, spec = make_study(frame, tasks=["y"], aux={"kinds": ["hints"]})
    assert "numeric" in GEN.why_not(ds, spec, "y")


def test_planted_product_survives_the_linear_screen_among_many_inputs():
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({f"x{i}": rng.normal(size=500) for i in range(12)})
    frame["y"] = frame["x4"] * frame["x9"] + 0.5 * rng.normal(size=500)
    ds, spec = make_study(frame, tasks=["y"], aux={"kinds": ["hints"]})
    assert len(derived_features(ds)) == 66 + 3 * 12  # more than the screen lets through
    assert generate_candidates(ds, spec)[0].name == "x4*x9__product"
