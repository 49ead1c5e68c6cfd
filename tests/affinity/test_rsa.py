"""Representation similarity: RDM invariances, seed pairing, and the branch layer it gives."""

from __future__ import annotations

import numpy as np
import pytest

from taskscout.affinity.rsa import layer_similarities, rdm, rdm_similarity
from taskscout.grouping import choose_branch_layer


def test_rdm_ignores_unit_order_and_scale_and_dead_rows():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(12, 5))
    assert rdm_similarity(rdm(r), rdm(3.0 * r[:, ::-1])) == pytest.approx(1.0)
    assert abs(rdm_similarity(rdm(r), rdm(rng.normal(size=(12, 5))))) < 0.5
    dead = r.copy()
    dead[3] = 0.0  # a row with no active unit is uncorrelated with everything
    d = rdm(dead)
    assert d[3, 5] == 1.0 and d[3, 3] == 0.0
    assert np.allclose(d, d.T)


def test_layer_table_and_branch_layer_follow_the_planted_layers():
    rng = np.random.default_rng(1)
    n = 30
    base1, base2 = rng.normal(size=(n, 6)), rng.normal(size=(n, 6))

    def noisy(x: np.ndarray) -> np.ndarray:
        return x + 0.05 * rng.normal(size=x.shape)

    # a and b share layer 1 but not layer 2; c shares nothing with them
    reps = {
        "a": {s: [noisy(base1), noisy(base2)] for s in (0, 1)},
        "b": {s: [noisy(base1[:, ::-1]), rng.normal(size=(n, 6))] for s in (0, 1)},
        "c": {s: [rng.normal(size=(n, 6)), rng.normal(size=(n, 6))] for s in (0, 1)},
    }
    order = ("a", "b", "c")
    table = layer_similarities(reps, order=order).set_index(["pair", "layer"])
    assert table.loc[("a|b", 1), "similarity"] > 0.9
    assert abs(table.loc[("a|b", 2), "similarity"]) < 0.3
    assert abs(table.loc[("a|c", 1), "similarity"]) < 0.3
    assert table.loc[("a|a", 2), "similarity"] > 0.9  # the within-task ceiling, across seeds
    assert table.loc[("a|b", 1), "n"] == 2  # two seeds: only the cross-seed pairs (0, 1) and (1, 0)
    # without depth-phase rows the recommendation branches where the similarity says: a and b
    # share layer 1 and split before layer 2
    flat = table.reset_index()
    choice = choose_branch_layer(["a", "b"], order=order, depth=None, similarity=flat, depth_L=2)
    assert (choice.layer, choice.source) == (1, "rsa")
