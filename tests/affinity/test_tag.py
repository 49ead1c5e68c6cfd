"""TAG and gradient cosine know the answer on data where two tasks share one target."""

from __future__ import annotations

import numpy as np
import pytest

from taskscout.affinity import AffinityProblem, make_estimator
from taskscout.data import TRAIN, VAL, Head
from taskscout.spec import ModelSettings, TrainingSettings


@pytest.fixture(scope="module")
def twins() -> AffinityProblem:
    """a and b label the same target on disjoint rows (sparse labels); c is an unrelated target."""
    rng = np.random.default_rng(0)
    n, d = 600, 10
    X = rng.normal(size=(n, d)).astype(np.float32)
    shared = np.tanh(X[:, 0] + X[:, 1]) + 0.5 * X[:, 2]
    other = np.tanh(X[:, 5] - X[:, 6]) + 0.5 * X[:, 7]
    Y = np.full((n, 3), np.nan)
    owner = rng.integers(0, 2, size=n)  # each row labelled for a or for b, never both
    Y[owner == 0, 0] = shared[owner == 0]
    Y[owner == 1, 1] = shared[owner == 1]
    keep_c = rng.random(n) < 0.5
    Y[keep_c, 2] = other[keep_c]
    Y = (Y - np.nanmean(Y, axis=0)) / np.nanstd(Y, axis=0)
    split = np.where(rng.random(n) < 0.75, TRAIN, VAL).astype(np.int8)
    heads = (Head("a", "regression"), Head("b", "regression"), Head("c", "regression"))
    return AffinityProblem(X=X, Y=Y, heads=heads, split=split, main=(0, 1, 2),
                           model=ModelSettings(depth=2, width=16),
                           training=TrainingSettings(epochs=6, batch_size=64), seeds=(0, 1), device="cpu")


def gains(result) -> dict[tuple[str, str], float]:
    return {(s, t): g for s, t, g in zip(result.rows["source"], result.rows["target"], result.rows["gain"], strict=True)}


@pytest.mark.parametrize("normalise", ["relative", "self"])
def test_tag_ranks_the_twin_above_the_unrelated_task(twins, normalise):
    z = gains(make_estimator("tag", every=2, probe_size=64, epochs=6, normalise=normalise).estimate(twins))
    assert z[("b", "a")] > z[("c", "a")]
    assert z[("a", "b")] > z[("c", "b")]
    assert z[("a", "b")] > 0 and z[("b", "a")] > 0  # a step on the twin lowers the loss
    assert max(z[("a", "c")], z[("b", "c")]) < min(z[("a", "b")], z[("b", "a")])


def test_gradient_cosine_of_twins_is_high_and_symmetric(twins):
    c = gains(make_estimator("gradcos", every=2, probe_size=64, epochs=6).estimate(twins))
    assert c[("a", "b")] == pytest.approx(c[("b", "a")])
    assert c[("a", "b")] > 0.1 + max(abs(c[("a", "c")]), abs(c[("b", "c")]))
