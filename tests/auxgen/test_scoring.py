"""Mutual information scores: known values, training rows only, deterministic samples."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from taskscout.auxgen.scoring import (
    column_view,
    input_importance,
    mi_with_main,
    mutual_information,
    training_sample,
)
from taskscout.data import TRAIN

from .conftest import make_study


def _study(n=400, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x0": rng.normal(size=n), "noise": rng.normal(size=n)})
    frame["y"] = (frame["x0"] > 0).astype(float)
    return make_study(frame, tasks=["y"])


def test_a_balanced_binary_target_shares_ln2_nats_with_itself():
    ds, spec = _study()
    y = ds.Y[:, 0]
    train = y[ds.split == TRAIN]
    p = train.mean()
    entropy = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    assert abs(mutual_information(ds, y, True, y, True, seed=0) - entropy) < 1e-9
    assert abs(entropy - np.log(2)) < 0.05


def test_scores_ignore_validation_and_test_labels():
    ds, spec = _study()
    before = mi_with_main(ds, "y", ds.frame["x0"].to_numpy(), False, seed=0)
    scrambled = ds.Y.copy()
    held_out = ds.split != TRAIN
    scrambled[held_out, 0] = 1 - scrambled[held_out, 0]
    ds2 = replace(ds, Y=scrambled)
    assert mi_with_main(ds2, "y", ds.frame["x0"].to_numpy(), False, seed=0) == before
    assert before > 0.3


def test_importance_ranks_the_informative_input_first():
    ds, spec = _study()
    imp = input_importance(ds, "y", seed=0)
    assert imp["x0"] > 0.3 > 0.05 > imp["noise"]


def test_training_sample_is_seeded_and_draws_training_rows_only():
    ds, spec = _study()
    mask = np.ones(len(ds.frame), bool)
    a, b = training_sample(ds, mask, 7, limit=50), training_sample(ds, mask, 7, limit=50)
    np.testing.assert_array_equal(a, b)
    assert len(a) == 50 and (ds.split[a] == TRAIN).all() and (np.diff(a) > 0).all()
    assert len(training_sample(ds, mask, 7)) == int((ds.split == TRAIN).sum())


def test_column_view_codes_categories_and_spots_discrete_numbers():
    codes, discrete = column_view(pd.Series(["b", "a", None, "b"]))
    assert discrete and codes[[0, 1, 3]].tolist() == [1.0, 0.0, 1.0] and np.isnan(codes[2])
    assert column_view(pd.Series([1.0, 2.0, 3.0, 2.0]))[1]
    assert not column_view(pd.Series([0.5, 1.7, 2.2]))[1]


def test_a_discrete_column_with_a_value_per_row_against_a_continuous_one_scores_nan():
    # The estimator for one discrete and one continuous column skips rows whose discrete value
    # occurs once; an identifier (a value per row) leaves no row, so there is no estimate.
    rng = np.random.default_rng(0)
    n = 200
    x = rng.normal(size=n)
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(n)], "x": x, "y": 2 * x + rng.normal(size=n)})
    ds, spec = make_study(frame, tasks=["y"], inputs=["id", "x"])
    ids, discrete = column_view(ds.frame["id"])
    assert discrete
    assert np.isnan(mi_with_main(ds, "y", ids, True, seed=0))
    # the same with the roles swapped: a continuous column against a class per row
    rows = np.arange(n, dtype=float)
    assert np.isnan(mutual_information(ds, x, False, rows, True, seed=0))
    # one repeated value leaves 2 rows, fewer than the 10 an estimate needs
    one_pair = rows.copy()
    one_pair[1] = 0.0
    assert np.isnan(mutual_information(ds, one_pair, True, ds.Y[:, 0], False, seed=0))
    # pairs of rows sharing a value are enough rows, and the score is a number again
    pairs = np.arange(n) // 2
    assert np.isfinite(mutual_information(ds, pairs.astype(float), True, ds.Y[:, 0], False, seed=0))
    assert np.isnan(input_importance(ds, "y", seed=0)["id"]) and input_importance(ds, "y", seed=0)["x"] > 0.3
