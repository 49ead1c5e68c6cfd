"""Related: every other task column (and unused label columns) as an extra target."""

from __future__ import annotations

import numpy as np
import pandas as pd

from taskscout.auxgen import GENERATORS, generate_candidates

from .conftest import make_study


def _frame(n=300, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    return pd.DataFrame({
        "x0": x[:, 0], "x1": x[:, 1], "x2": x[:, 2],
        "a": x[:, 0] + 0.5 * rng.normal(size=n),
        "b": np.where(x[:, 1] > 0, "up", "down"),
        "c": x[:, 0] + x[:, 2] + rng.normal(size=n),
    })


def test_every_other_task_column():
    frame = _frame()
    ds, spec = make_study(frame, tasks=["a", "b", "c"], main=["a"], aux={"kinds": ["related"], "cap": 10})
    cands = generate_candidates(ds, spec)
    assert sorted(c.name for c in cands) == ["b__related", "c__related"]
    by = {c.name: c for c in cands}
    assert by["b__related"].type == "binary" and list(by["b__related"].values) == list(frame["b"])
    np.testing.assert_array_equal(by["c__related"].values, frame["c"].to_numpy())
    assert all(c.training_only and c.serves == ("a",) for c in cands)
    # c shares x0 with a, b does not: c is scored higher and comes first
    assert cands[0].name == "c__related" and cands[0].score > cands[1].score


def test_a_column_related_to_several_main_tasks_is_one_candidate():
    ds, spec = make_study(_frame(), tasks=["a", "b", "c"], aux={"kinds": ["related"], "cap": 10})
    by = {c.name: c for c in generate_candidates(ds, spec)}
    assert set(by) == {"a__related", "b__related", "c__related"}
    assert by["c__related"].serves == ("a", "b")
    assert set(by["c__related"].provenance["scores"]) == {"a", "b"}


def test_unused_label_columns_of_the_data_are_related_too():
    frame = _frame()
    frame["spare"] = frame["a"] * 2 + 1
    frame.attrs["label_columns"] = ["a", "spare"]
    ds, spec = make_study(frame, tasks=["a", "c"], main=["c"], aux={"kinds": ["related"], "cap": 10})
    assert "spare" not in ds.inputs
    assert sorted(c.name for c in generate_candidates(ds, spec)) == ["a__related", "spare__related"]


def test_columns_named_adversarial_are_not_related():
    ds, spec = make_study(_frame(), tasks=["a", "b"], main=["a"], aux={"kinds": ["related"], "adversarial": ["b"]})
    assert GENERATORS["related"].why_not(ds, spec, "a") is not None


def test_many_related_columns_are_shortlisted_by_rank_correlation_before_mutual_information():
    """20 tasks: a main task's 19 related columns exceed the shortlist of max(12, 3 x cap 2) = 12,
    so only the 12 most rank-correlated with it are proposed (and scored); the 7 pure-noise
    columns, least correlated, are left out. Without the shortlist all 19 would be scored."""
    from taskscout.auxgen.related import shortlist

    rng = np.random.default_rng(0)
    n = 400
    base = rng.normal(size=n)
    cols = {f"x{i}": rng.normal(size=n) for i in range(2)}
    cols["main"] = base + 0.1 * rng.normal(size=n)
    for i in range(12):
        cols[f"near{i}"] = base + (0.3 + 0.1 * i) * rng.normal(size=n)
    for i in range(7):
        cols[f"noise{i}"] = rng.normal(size=n)
    tasks = ["main", *[f"near{i}" for i in range(12)], *[f"noise{i}" for i in range(7)]]
    ds, spec = make_study(pd.DataFrame(cols), tasks=tasks, main=["main"], aux={"kinds": ["related"], "cap": 2})
    related = [t for t in tasks if t != "main"]
    assert shortlist(ds, spec, "main", related) == [f"near{i}" for i in range(12)]
    assert shortlist(ds, spec, "main", related[:12]) == related[:12]  # up to 12: all of them
    proposed = GENERATORS["related"].propose(ds, spec, "main")
    assert sorted(c.name for c in proposed) == sorted(f"near{i}__related" for i in range(12))
