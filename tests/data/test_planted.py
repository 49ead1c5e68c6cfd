"""`builtin:planted`: tasks of a group share latent directions, groups share nothing, labels are sparse."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from taskscout.data.planted import planted_frame, planted_groups


def _mean_abs_correlation(frame, groups):
    """Mean |Pearson r| over task pairs on rows labelled for both: (within groups, across groups)."""
    within, across = [], []
    for a, b in itertools.combinations(groups, 2):
        both = frame[a].notna() & frame[b].notna()
        r = abs(np.corrcoef(frame.loc[both, a], frame.loc[both, b])[0, 1])
        (within if groups[a] == groups[b] else across).append(r)
    return float(np.mean(within)) if within else float("nan"), float(np.mean(across))


def test_tasks_of_a_group_are_correlated_and_groups_are_not():
    frame = planted_frame(n_rows=4000, groups=3, tasks_per_group=3, label_fraction=0.5, seed=0)
    groups = planted_groups(frame)
    assert sorted(set(groups.values())) == ["g0", "g1", "g2"] and len(groups) == 9
    within, across = _mean_abs_correlation(frame, groups)
    # groups read orthogonal directions of independent inputs: across-group r is sampling noise
    # (about 0.03 on ~1000 shared rows); tasks of a group read the same two directions
    assert across < 0.06
    assert within > 0.2
    assert within > 4 * across


def test_a_shared_read_out_ties_the_tasks_of_a_group_together():
    options = {"n_rows": 4000, "label_fraction": 0.5, "classification": False, "seed": 0}
    unrelated = _mean_abs_correlation(f := planted_frame(shared=0.0, **options), planted_groups(f))
    tied = _mean_abs_correlation(f := planted_frame(shared=0.9, **options), planted_groups(f))
    # read-outs 0.9 * common + 0.44 * own: tasks of a group correlate about 0.8
    assert tied[0] > 0.7 and tied[0] > unrelated[0] + 0.3
    assert tied[1] < 0.06  # groups still share nothing


def test_groups_zero_gives_independent_tasks():
    frame = planted_frame(n_rows=4000, groups=0, independent_tasks=6, label_fraction=0.5, seed=0)
    groups = planted_groups(frame)
    assert sorted(groups) == [f"ind_t{i}" for i in range(6)]
    assert len(set(groups.values())) == 6  # every task alone
    _, across = _mean_abs_correlation(frame, groups)
    assert across < 0.06


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.6])
def test_label_fraction_is_respected(fraction):
    frame = planted_frame(n_rows=4000, label_fraction=fraction, seed=2)
    for task in planted_groups(frame):
        # binomial sd of the labelled fraction is below 0.008 on 4000 rows
        assert frame[task].notna().mean() == pytest.approx(fraction, abs=0.03)
    # only the tasks are sparse: every input is present on every row
    assert frame.filter(like="x").notna().all().all()


def test_every_second_task_of_a_group_is_binary():
    frame = planted_frame(n_rows=300, groups=2, tasks_per_group=3, seed=0)
    for g in range(2):
        assert set(frame[f"g{g}_t1"].dropna().unique()) == {0.0, 1.0}
        for i in (0, 2):
            assert frame[f"g{g}_t{i}"].dropna().nunique() > 50
    regression_only = planted_frame(n_rows=300, classification=False, seed=0)
    assert regression_only["g0_t1"].dropna().nunique() > 50


def test_same_seed_same_frame_other_seed_other_frame():
    a = planted_frame(n_rows=200, seed=5)
    assert a.equals(planted_frame(n_rows=200, seed=5))
    assert not a.equals(planted_frame(n_rows=200, seed=6))
    assert list(a.columns[:3]) == ["x0", "x1", "x2"] and a.shape == (200, 48 + 9)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_inputs": 4}, "too small"),
        ({"label_fraction": 0.0}, "label_fraction must be"),
        ({"groups": 1.5}, "groups must be an int"),
        ({"n_rows": 3}, "n_rows must be an int >= 10"),
        ({"classification": "yes"}, "classification must be true or false"),
        ({"shared": 1.5}, "shared must be a number in"),
    ],
)
def test_impossible_parameters_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        planted_frame(**options)
