"""Quantization smoothing: cumulative targets, the smoothed label distribution, the smooth source."""

from __future__ import annotations

import numpy as np
import pandas as pd

from taskscout.auxgen import GENERATORS, encode_aux, generate_candidates
from taskscout.auxgen.quantization import SOFT_SIGMA, smoothed_distribution

from .conftest import make_study

GEN = GENERATORS["quantization"]


def _frame(y, n=200, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x0": rng.normal(size=n), "x1": rng.normal(size=n), "y": y})


def test_ordinal_0_to_4_gives_four_cumulative_targets_with_the_right_values():
    y = np.tile(np.arange(5.0), 40)
    y[::7] = np.nan  # unlabelled rows stay unlabelled in every companion
    ds, spec = make_study(_frame(y), tasks=["y"], aux={"kinds": ["quantization"], "cap": 10})
    assert ds.task("y").type == "ordinal"
    cands = generate_candidates(ds, spec)
    cumulative = sorted((c for c in cands if c.name.startswith("y__ge_")), key=lambda c: c.name)
    assert [c.name for c in cumulative] == ["y__ge_1", "y__ge_2", "y__ge_3", "y__ge_4"]
    for k, c in enumerate(cumulative, start=1):
        assert c.type == "binary" and c.training_only and c.dropped is None and c.serves == ("y",)
        expected = np.where(np.isnan(y), np.nan, (y >= k).astype(float))
        np.testing.assert_array_equal(c.values, expected)
    assert {c.name for c in cands} == {"y__smoothed", *(c.name for c in cumulative)}


def test_smoothed_distribution_matches_hand_computed_probabilities():
    # class 2 of 5, sigma 0.75: weights exp(-(k-2)^2 / 1.125) = e^-3.5556, e^-0.8889, 1, ...
    p = smoothed_distribution(np.array([2.0, np.nan]), 5)
    assert SOFT_SIGMA == 0.75
    np.testing.assert_allclose(p[0], [0.015202, 0.218750, 0.532096, 0.218750, 0.015202], atol=1e-5)
    assert np.isnan(p[1]).all()


def test_smoothed_candidate_is_soft_with_one_column_per_class():
    y = np.tile(np.arange(4.0), 50)
    ds, spec = make_study(_frame(y), tasks=["y"], aux={"kinds": ["quantization"]})
    soft = next(c for c in generate_candidates(ds, spec) if c.name == "y__smoothed")
    coded, info = encode_aux(ds, soft)
    assert soft.type == "soft" and coded.shape == (200, 4) and info.type == "soft"
    assert info.classes == ("0", "1", "2", "3")
    np.testing.assert_array_equal(coded.argmax(axis=1), y.astype(int))


def test_multiclass_with_numeric_classes_is_ordered():
    y = np.tile([10.0, 20.0, 30.0], 70)[:200]
    ds, spec = make_study(_frame(y), tasks=["y"], task_types={"y": "multiclass"}, aux={"kinds": ["quantization"]})
    names = [c.name for c in generate_candidates(ds, spec)]
    assert set(names) == {"y__smoothed", "y__ge_20", "y__ge_30"}


def test_unordered_multiclass_has_no_candidates_and_says_why():
    y = np.tile(["sun", "rain", "fog"], 70)[:200]
    ds, spec = make_study(_frame(y), tasks=["y"], aux={"kinds": ["quantization"]})
    reason = GEN.why_not(ds, spec, "y")
    assert reason is not None and "unordered classes" in reason and "fog" in reason
    assert generate_candidates(ds, spec) == []


def test_coarse_regression_target_gets_cumulative_targets_by_level():
    y = np.tile([0.0, 0.5, 1.0, 1.5], 50)
    ds, spec = make_study(_frame(y), tasks=["y"], task_types={"y": "regression"}, aux={"kinds": ["quantization"], "cap": 5})
    ge = {c.name: c for c in generate_candidates(ds, spec) if "__ge_" in c.name}
    assert set(ge) == {"y__ge_0.5", "y__ge_1", "y__ge_1.5"}
    np.testing.assert_array_equal(ge["y__ge_1"].values, (y >= 1.0).astype(float))


def test_continuous_regression_target_says_why_none():
    y = np.random.default_rng(3).normal(size=200)
    ds, spec = make_study(_frame(y), tasks=["y"], aux={"kinds": ["quantization"]})
    assert "continuous" in GEN.why_not(ds, spec, "y")


def test_binary_target_takes_its_smooth_source_as_a_regression_target():
    rng = np.random.default_rng(4)
    frame = _frame(np.zeros(200))
    frame["level"] = rng.normal(size=200)
    frame["y"] = (frame["level"] > 0.2).astype(float)
    ds, spec = make_study(frame, tasks=["y"], aux={"kinds": ["quantization"], "smooth_source": "level"})
    assert "level" not in ds.inputs
    (cand,) = generate_candidates(ds, spec)
    assert cand.name == "level__source" and cand.type == "regression" and cand.training_only
    assert cand.dropped is None and cand.score > 0.3
    np.testing.assert_array_equal(cand.values, frame["level"].to_numpy())


def test_binary_target_without_smooth_source_says_how_to_get_one():
    frame = _frame(np.tile([0.0, 1.0], 100))
    ds, spec = make_study(frame, tasks=["y"], aux={"kinds": ["quantization"]})
    assert "--smooth-source" in GEN.why_not(ds, spec, "y")
