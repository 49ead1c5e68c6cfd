"""The surrogate recovers planted subset effects, predicts held-out subsets, and its uncertainty shrinks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from taskscout import rundir
from taskscout.affinity.surrogate import fit_surrogate, heldout_r2

TASKS = ("a", "b", "c", "d", "e", "f")
# effect of adding source j on target i's normalised loss (negative = helps)
MAIN = {
    ("b", "a"): -0.20, ("c", "a"): 0.10, ("d", "a"): -0.05,
    ("a", "b"): -0.15, ("e", "b"): 0.08,
    ("f", "c"): -0.12,
}
PAIR = {"a": ("b", "d", 0.12)}  # on task a: b and d together give back 0.12 (diminishing returns)


def true_loss(task: str, members: set[str]) -> float:
    v = 1.0 + sum(MAIN.get((j, task), 0.0) for j in members if j != task)
    if task in PAIR:
        j, k, c = PAIR[task]
        v += c * (j in members and k in members)
    return v


def synthetic(n_subsets: int, *, seeds: int = 2, noise: float = 0.02, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    subsets = [{t} for t in TASKS]
    while len(subsets) < len(TASKS) + n_subsets:
        s = {t for t in TASKS if rng.random() < 0.5}
        if len(s) >= 2:
            subsets.append(s)
    for s in subsets:
        key = rundir.group_key(s, TASKS)
        for t in sorted(s):  # sorted: set order depends on the hash seed
            for k in range(seeds):
                eps = 0.0 if len(s) == 1 else noise * rng.normal()
                rows.append((key, t, k, true_loss(t, s) + eps))
    return pd.DataFrame(rows, columns=["group", "task", "seed", "norm_loss"])


def test_recovers_planted_main_and_interaction_coefficients():
    sur = fit_surrogate(synthetic(80), tasks=TASKS)
    coef = sur.coefficients().set_index(["task", "term"])
    for (j, i), b in MAIN.items():
        m, lo, hi = coef.loc[(i, j), ["coef", "ci_low", "ci_high"]]
        assert abs(m - b) < 0.03, (j, i, m, b)
        assert lo <= b <= hi
    # the planted interaction was offered and kept for task a
    assert "b*d" in sur.per_task["a"].terms
    assert coef.loc[("a", "b*d"), "coef"] == pytest.approx(0.12, abs=0.04)
    # a task with no interaction keeps the simpler main-effects model (evidence)
    assert not any("*" in t for t in sur.per_task["f"].terms)
    # affinity rows are the negated main effects
    aff = sur.affinity_rows().set_index(["source", "target"])
    assert aff.loc[("b", "a"), "gain"] == pytest.approx(-coef.loc[("a", "b"), "coef"])
    assert set(aff["method"]) == {"surrogate"}


def test_heldout_subsets_are_predicted():
    obs = synthetic(60, seed=1)
    singles = [rundir.group_key([t]) for t in TASKS]
    out = heldout_r2(obs, tasks=TASKS, folds=5, keep=singles)
    assert out["r2"] > 0.8
    assert out["n"] > 100


def test_uncertainty_shrinks_with_data():
    query = ["a", "c", "e", "f"]  # task c has no planted interaction: the main-effects model is right
    widths = []
    for n in (12, 40, 160):
        sur = fit_surrogate(synthetic(n, seed=3), tasks=TASKS, interactions=False)
        m, lo, hi = sur.predict(query)["c"]
        widths.append(hi - lo)
        assert lo <= true_loss("c", set(query)) <= hi
    assert widths[0] > widths[1] > widths[2]


def test_group_scores_format():
    sur = fit_surrogate(synthetic(30), tasks=TASKS)
    scores = sur.group_scores([["a", "b"], ["c", "f", "a"]])
    assert list(scores.columns) == list(rundir.GROUP_SCORE_COLUMNS)
    assert set(scores["group"]) == {"a|b", "a|c|f"}
    assert (scores["ci_low"] <= scores["norm_loss"]).all() and (scores["norm_loss"] <= scores["ci_high"]).all()
