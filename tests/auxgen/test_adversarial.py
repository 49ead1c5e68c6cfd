"""Adversarial: only the columns the user names, trained through gradient reversal."""

from __future__ import annotations

import numpy as np
import pandas as pd

from taskscout.auxgen import GENERATORS, generate_candidates

from .conftest import make_study


def _frame(n=300, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x0": rng.normal(size=n), "x1": rng.normal(size=n)})
    frame["site"] = rng.choice(["north", "south", "east"], size=n)
    frame["batch"] = rng.integers(0, 2, size=n).astype(float)
    frame["a"] = frame["x0"] + rng.normal(size=n)
    frame["b"] = (frame["x1"] > 0).astype(float)
    return frame


def test_needs_named_columns():
    ds, spec = make_study(_frame(), tasks=["a", "b"], aux={"kinds": ["adversarial"]})
    assert "--adversarial" in GENERATORS["adversarial"].why_not(ds, spec, "a")
    assert generate_candidates(ds, spec) == []


def test_named_columns_become_reversed_targets_serving_every_main_task():
    ds, spec = make_study(_frame(), tasks=["a", "b"], aux={"kinds": ["adversarial"], "adversarial": ["site", "batch"]})
    assert "site" not in ds.inputs and "batch" not in ds.inputs
    cands = generate_candidates(ds, spec)
    assert [c.name for c in cands] == ["site__adversarial", "batch__adversarial"]
    for c in cands:
        assert c.adversarial and c.training_only and c.dropped is None and c.serves == ("a", "b")
    assert cands[0].type == "multiclass" and cands[1].type == "binary"
    assert list(cands[0].values) == list(_frame()["site"])


def test_cap_keeps_the_first_columns_named():
    ds, spec = make_study(
        _frame(), tasks=["a"], aux={"kinds": ["adversarial"], "adversarial": ["batch", "site"], "cap": 1},
    )
    cands = generate_candidates(ds, spec)
    assert [(c.name, c.dropped is None) for c in cands] == [("batch__adversarial", True), ("site__adversarial", False)]
