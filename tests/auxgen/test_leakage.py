"""Leakage guards on data where a leak would be fatal: the future of an input IS the main target.

y at time t is x at time t+1 (per entity). A model that saw x's future value as an input would
predict y perfectly on every split, and its scores would be worthless. The guards: future values
are training-only targets, never features of X; one that copies the main target is dropped as a
leak; predict-inputs columns are hidden from every model that trains on them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from taskscout.auxgen import dropped_features, encode_aux, generate_candidates

from .conftest import make_study


@pytest.fixture(scope="module")
def fatal():
    rng = np.random.default_rng(0)
    parts = []
    for e in range(2):
        n = 200
        x = rng.normal(size=n + 1)
        parts.append(pd.DataFrame({
            "t": np.arange(n), "unit": f"u{e}", "x": x[:n], "z": rng.normal(size=n),
            "w": rng.normal(size=n), "y": x[1:],
        }))
    frame = pd.concat(parts, ignore_index=True)
    ds, spec = make_study(
        frame, tasks=["y"], time_column="t", entity_column="unit",
        aux={"kinds": ["future", "predict_inputs"], "cap": 5},
    )
    x_before = ds.X.copy()
    return ds, spec, generate_candidates(ds, spec), x_before


def _r2(features: np.ndarray, y: np.ndarray) -> float:
    rows = np.isfinite(y)
    A = np.column_stack([features[rows], np.ones(rows.sum())])
    coef, *_ = np.linalg.lstsq(A, y[rows], rcond=None)
    resid = y[rows] - A @ coef
    return 1 - resid.var() / y[rows].var()


def test_the_future_value_would_be_a_fatal_leak_and_is_dropped(fatal):
    ds, spec, cands, _ = fatal
    leak = next(c for c in cands if c.name == "x__future_1")
    y = ds.frame["y"].to_numpy()
    both = np.isfinite(leak.values) & np.isfinite(y)
    np.testing.assert_array_equal(leak.values[both], y[both])  # the future of x is the target
    assert _r2(np.column_stack([ds.X, np.nan_to_num(leak.values)])[both], y[both]) > 0.999
    assert leak.training_only
    assert leak.dropped is not None and leak.dropped.startswith("near-copy of main task 'y' (|corr| = 1.000")


def test_no_model_input_is_derived_from_a_training_only_target(fatal):
    ds, spec, cands, x_before = fatal
    np.testing.assert_array_equal(ds.X, x_before)  # generating candidates never touches the inputs
    assert set(ds.feature_sources) == {"x", "z", "w"}
    assert _r2(ds.X.astype(float), ds.Y[:, 0]) < 0.1  # what models see cannot reproduce y
    for c in cands:
        if not c.training_only:
            continue
        coded, _ = encode_aux(ds, c)
        rows = np.isfinite(coded[:, 0])
        for j in range(ds.X.shape[1]):
            r = abs(np.corrcoef(ds.X[rows, j], coded[rows, 0])[0, 1])
            assert r < 0.5, f"feature {ds.feature_names[j]} carries {c.name} (|corr| = {r:.3f})"


def test_kept_future_targets_are_training_only_and_hide_nothing(fatal):
    ds, spec, cands, _ = fatal
    kept = [c for c in cands if c.kind == "future" and c.dropped is None]
    assert "y__future_1" in {c.name for c in kept}
    for c in kept:
        assert c.training_only and c.provenance["shift"] == 1
        # shifted values are not inputs of row t, so nothing of X needs hiding for them
        assert dropped_features(ds, [c]) == ()


def test_predict_inputs_columns_are_hidden_from_models_that_predict_them(fatal):
    ds, spec, cands, _ = fatal
    moved = [c for c in cands if c.kind == "predict_inputs" and c.dropped is None]
    assert moved
    for c in moved:
        (col,) = c.drops_inputs
        hidden = dropped_features(ds, [c])
        assert hidden == ds.features_of(col)
        seen = np.delete(ds.X.astype(float), hidden, axis=1)
        assert _r2(seen, c.values.astype(float)) < 0.1, f"{c.name} is still visible to its model"
        assert _r2(ds.X.astype(float), c.values.astype(float)) > 0.999  # without the guard it would be


def test_a_training_only_target_is_hidden_even_if_screening_was_bypassed(fatal):
    ds, spec, cands, _ = fatal
    from dataclasses import replace

    leak = next(c for c in cands if c.kind == "predict_inputs")
    unshifted = replace(leak, drops_inputs=(), training_only=True)
    assert dropped_features(ds, [unshifted]) == ds.features_of(leak.provenance["columns"][0])
