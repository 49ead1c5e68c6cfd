import math

import numpy as np
import pytest

from taskscout.curves import (
    SLOPE_NAMES,
    curve_features,
    curve_slopes,
    mean_curve_features,
    plateau_epoch,
)


def test_plateau_epoch_hand_computed():
    # running best:      10, 6, 4, 3, 2.9, 2.89, 2.88, 2.5
    curve = [10, 6, 4, 3, 2.9, 2.89, 2.88, 2.5]
    # window 2, epsilon 0.05:
    # e=1: best 10, ahead min(6,4)=4 -> 0.6 ; e=2: 6 vs 3 -> 0.5 ; e=3: 4 vs 2.9 -> 0.275
    # e=4: 3 vs 2.89 -> 0.0367 < 0.05 -> plateau at epoch 4
    assert plateau_epoch(curve, epsilon=0.05, window=2) == 4
    # window 4 sees the late drop to 2.5 from e=4: 3 vs 2.5 -> 0.167; e=4 is the last eligible (4+4=8)
    assert plateau_epoch(curve, epsilon=0.05, window=4) == 8
    # a tighter epsilon: e=4 -> 0.0367 >= 0.01; e=5: 2.9 vs min(2.89, 2.88)=2.88 -> 0.0069 < 0.01
    assert plateau_epoch(curve, epsilon=0.01, window=2) == 5


def test_plateau_epoch_uses_running_best_not_last_value():
    # a noisy bump at epoch 3 must not count as an improvement of 50%
    curve = [2.0, 1.0, 1.5, 0.999, 0.998, 0.997]
    assert plateau_epoch(curve, epsilon=0.01, window=2) == 2


def test_plateau_epoch_edge_cases():
    assert plateau_epoch([3.0, 2.0, 1.0], epsilon=0.01, window=3) == 3  # too short: no plateau
    assert plateau_epoch([1.0, 0.5, 0.25, 0.125], epsilon=0.01, window=1) == 4  # still halving
    assert plateau_epoch([0.0, 0.0, 0.0], epsilon=0.01, window=1) == 1
    with pytest.raises(ValueError):
        plateau_epoch([], epsilon=0.01, window=1)
    with pytest.raises(ValueError):
        plateau_epoch([1.0, math.nan], epsilon=0.01, window=1)


def test_slopes_hand_computed_on_a_linear_and_a_quadratic_curve():
    n = 10
    linear = 2.0 - 0.1 * np.arange(1, n + 1)  # L_1 = 1.9, falls 0.1 per epoch
    # per fraction of training: -0.1 per epoch * n epochs / L_1
    expected = -0.1 * n / 1.9
    for v in curve_slopes(linear).values():
        assert v == pytest.approx(expected)
    quad = (np.arange(1, n + 1) - 11.0) ** 2  # 100, 81, ..., 1
    s = curve_slopes(quad)
    # 10%: c = 1, one-sided (L2 - L1) / 100 / (1/10) = (81 - 100) / 10 = -1.9
    assert s["slope_10"] == pytest.approx(-1.9)
    # 30%: c = 3, (L4 - L2) / 100 / (2/10) = (49 - 81) / 20 = -1.6
    assert s["slope_30"] == pytest.approx(-1.6)
    # 70%: c = 7, (L8 - L6) / 100 / 0.2 = (9 - 25) / 20 = -0.8
    assert s["slope_70"] == pytest.approx(-0.8)
    assert tuple(s) == SLOPE_NAMES


def test_slopes_round_half_up_and_short_curves():
    # n = 5, 30%: p * n = 1.5 -> c = 2: (L3 - L1) / L1 / (2/5)
    curve = [4.0, 3.0, 1.0, 1.0, 1.0]
    assert curve_slopes(curve)["slope_30"] == pytest.approx((1.0 - 4.0) / 4.0 / 0.4)
    assert curve_slopes([5.0]) == {name: 0.0 for name in SLOPE_NAMES}


def test_curve_features_combines_val_plateau_and_train_slopes():
    f = curve_features([2.0, 1.0, 0.5, 0.25], [3.0, 2.0, 2.0, 2.0], epsilon=0.01, window=2)
    assert f["plateau_epoch"] == 2
    assert f["slope_50"] == pytest.approx((0.5 - 2.0) / 2.0 / 0.5)


def test_features_are_averaged_over_a_tasks_models_in_the_given_order():
    train_a0, val_a0 = [4.0, 3.0, 2.0, 1.0, 1.0], [4.0, 3.0, 3.0, 3.0, 3.0]
    train_a1, val_a1 = [2.0, 2.0, 2.0, 2.0, 2.0], [5.0, 4.0, 3.0, 2.0, 1.0]
    models = [("a", train_a0, val_a0), ("b", [1.0, 1.0], [1.0, 1.0]), ("a", train_a1, val_a1), ("c", [1.0], [])]
    rows = mean_curve_features(models, epsilon=0.01, window=1, order=["b", "a", "c"])
    assert [r["task"] for r in rows] == ["b", "a"]  # c has no validation curve
    f0, f1 = curve_features(train_a0, val_a0, epsilon=0.01, window=1), curve_features(train_a1, val_a1, epsilon=0.01, window=1)
    assert f0["plateau_epoch"] != f1["plateau_epoch"]
    assert rows[1] == {"task": "a", **{k: (f0[k] + f1[k]) / 2 for k in f0}}
