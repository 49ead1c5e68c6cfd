"""The curve-feature gain predictor learns a planted rule and skips only once it can; the record adds up."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from taskscout import rundir
from taskscout.affinity.pruning import GainPredictor, pair_pruning_record

EPOCHS = 20


def features(n_tasks: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n_tasks):
        early = k % 2 == 0  # even tasks plateau early (and stop falling), odd ones keep learning
        plateau = rng.integers(3, 6) if early else rng.integers(15, 20)
        slopes = rng.normal(-0.05 if early else -0.8, 0.05, size=5)
        rows.append((f"t{k}", float(plateau), *slopes))
    return pd.DataFrame(rows, columns=list(rundir.CURVE_FEATURE_COLUMNS))


def measured(pairs, feats: pd.DataFrame) -> pd.DataFrame:
    """Bingel & Sogaard's finding planted: j helps i when i plateaus early and j is still learning."""
    plateau = feats.set_index("task")["plateau_epoch"]
    rows = []
    for s, t in pairs:
        real = plateau[t] < 10 and plateau[s] >= 10
        g = 0.1 if real else -0.02
        rows.append((s, t, g, g - 0.05, g + 0.05, 3, "measured"))
    return pd.DataFrame(rows, columns=list(rundir.AFFINITY_COLUMNS))


def test_predictor_learns_the_planted_rule_and_skips_hopeless_pairs():
    feats = features(10)
    names = list(feats["task"])
    pairs = [(s, t) for t in names for s in names if s != t]
    train, held = pairs[::2], pairs[1::2]
    pred = GainPredictor(threshold=0.2).fit(feats, measured(train, feats), epochs=EPOCHS)
    assert pred.ready
    truth = (measured(held, feats)["ci_low"] > 0).to_numpy()
    skip = pred.hopeless(held)
    assert skip.sum() > len(held) / 2  # most pairs are hopeless and get skipped
    assert not (skip & truth).any()  # no real gain is skipped
    p = pred.predict_proba(held)
    assert p[truth].min() > p[~truth].max()
    # one model serves both directions: skipped only when both directions are hopeless
    both = pred.hopeless_models([("t1", "t0"), ("t2", "t0")])
    assert both.tolist() == [False, True]


def test_predictor_skips_nothing_before_it_has_both_outcomes():
    feats = features(6)
    names = list(feats["task"])
    pairs = [(s, t) for t in names for s in names if s != t]
    rows = measured(pairs, feats)
    rows["ci_low"] = -0.1  # no real gain measured yet
    pred = GainPredictor().fit(feats, rows, epochs=EPOCHS)
    assert not pred.ready
    assert not pred.hopeless(pairs).any()
    assert pred.predict_proba(pairs[:3]).tolist() == [0.0, 0.0, 0.0]
    few = GainPredictor(min_train=50).fit(feats, measured(pairs, feats), epochs=EPOCHS)
    assert not few.ready


def test_record_counts_saved_compute_and_misses():
    gains = pd.DataFrame(
        [("a", "b", 0.2, 0.1, 0.3, 3, "measured"), ("c", "b", 0.0, -0.1, 0.1, 3, "measured")],
        columns=list(rundir.AFFINITY_COLUMNS),
    )
    rec = pair_pruning_record([("a", "b"), ("c", "b")], 10, models_per_pair=3, epochs_per_model=20,
                              seconds_per_model=0.5, measured_anyway=gains)
    assert (rec.skipped, rec.models_saved, rec.epochs_saved) == (2, 6, 120)
    assert rec.seconds_saved == pytest.approx(3.0)
    assert rec.would_be_chosen == 1 and rec.miss_rate == pytest.approx(0.5)
    blind = pair_pruning_record([("a", "b")], 10, models_per_pair=3, epochs_per_model=20, seconds_per_model=0.5)
    assert blind.would_be_chosen == -1 and math.isnan(blind.miss_rate)
