"""Tests for taskscout.affinity.sampled: sampled-subset affinities on data with known coefficients."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from taskscout import rundir
from taskscout.affinity.sampled import SubsetDesign, design_counts, sampled_affinity, subset_design
from taskscout.errors import SpecError


def _observations(tasks, design, effect, *, noise=0.01, seeds=3, seed=0):
    """norm_loss_i(S) = 1 - sum_{j in S, j != i} effect[j, i] + noise, per seed."""
    rng = np.random.default_rng(seed)
    index = {t: k for k, t in enumerate(tasks)}
    rows = []
    for subset in design.subsets:
        key = rundir.group_key(subset, tasks)
        for t in subset:
            i = index[t]
            mean = 1.0 - sum(effect[index[j], i] for j in subset if j != t)
            rows += [(key, t, s, mean + noise * rng.normal()) for s in range(seeds)]
    return pd.DataFrame(rows, columns=["group", "task", "seed", "norm_loss"])


def test_design_is_linear_in_tasks_and_sized_for_pair_coverage():
    assert design_counts(100, seeds=3) == (400, 11)  # k(k-1) >= 4 * 100 * 99 / 400 = 99
    assert design_counts(139, seeds=3) == (556, 13)  # 13 * 12 >= 138 > 12 * 11
    assert design_counts(100, seeds=3, max_models=300) == (100, 21)  # fewer subsets: larger ones
    d = subset_design([f"t{i}" for i in range(30)], seeds=3, seed=1)
    assert len(d.subsets) == 120 and {len(s) for s in d.subsets} == {d.size} and len(set(d.subsets)) == 120
    assert d == SubsetDesign.from_dict(d.to_dict())
    assert subset_design([f"t{i}" for i in range(30)], seeds=3, seed=1) == d  # seeded
    with pytest.raises(SpecError, match="at least 3 tasks"):
        design_counts(2, seeds=3)


def test_recovers_known_coefficients_with_intervals_that_cover_them():
    tasks = tuple(f"t{i}" for i in range(10))
    rng = np.random.default_rng(3)
    effect = rng.uniform(-0.05, 0.1, size=(10, 10))
    np.fill_diagonal(effect, 0.0)
    design = SubsetDesign(tasks, 4, tuple(tuple(tasks[x] for x in sorted(rng.choice(10, 4, replace=False)))
                                         for _ in range(3000)))
    aff = sampled_affinity(_observations(tasks, design, effect), tasks, n_boot=100)
    off = ~np.eye(10, dtype=bool)
    assert np.max(np.abs(aff.gain[off] - effect[off])) < 0.01
    low, high = aff.interval()
    covered = (low[off] <= effect[off]) & (effect[off] <= high[off])
    assert covered.mean() >= 0.85
    rows = aff.affinity_rows()
    assert list(rows.columns) == list(rundir.AFFINITY_COLUMNS) and len(rows) == 90
    r = rows[(rows["source"] == "t1") & (rows["target"] == "t2")].iloc[0]
    assert r["gain"] == pytest.approx(effect[1, 2], abs=0.01) and r["method"] == "sampled"
    mean, lo, hi, n = aff.group_norm_loss(("t0", "t1", "t2"), "t2")
    assert mean == pytest.approx(1 - effect[0, 2] - effect[1, 2], abs=0.02) and lo < mean < hi and n > 0


def test_planted_blocks_stand_out_on_the_default_design():
    """40 tasks in 4 blocks: partners in a block help (+0.03 each), others hurt slightly."""
    tasks = tuple(f"t{i:02d}" for i in range(40))
    block = np.arange(40) // 10
    effect = np.where(block[:, None] == block[None, :], 0.03, -0.005)
    np.fill_diagonal(effect, 0.0)
    design = subset_design(tasks, seeds=3, seed=0)
    aff = sampled_affinity(_observations(tasks, design, effect, noise=0.02), tasks, n_boot=50)
    sym = aff.symmetric()
    same = block[:, None] == block[None, :]
    off = ~np.eye(40, dtype=bool)
    assert sym[same & off].mean() == pytest.approx(0.03, abs=0.01)
    assert sym[~same].mean() == pytest.approx(-0.005, abs=0.01)
