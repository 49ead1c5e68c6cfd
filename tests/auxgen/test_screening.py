"""Screening: too few labels, constant values, leaks (near-copies, inputs), caps; and coding."""

from __future__ import annotations

import numpy as np
import pandas as pd

from taskscout.auxgen import AuxTask, check, encode_aux, generate_candidates

from .conftest import make_study


def _frame(n=200, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x0": rng.normal(size=n), "x1": rng.normal(size=n)})
    frame["y"] = frame["x0"] + rng.normal(size=n)
    return frame, rng


def _related(frame, **aux):
    tasks = [c for c in frame.columns if not c.startswith("x")]
    return make_study(frame, tasks=tasks, main=["y"], aux={"kinds": ["related"], "cap": 10, **aux})


def _reason(cands, name):
    return next(c.dropped for c in cands if c.name == name)


def test_too_few_labelled_training_rows():
    frame, rng = _frame()
    sparse = rng.normal(size=200)
    sparse[30:] = np.nan  # 30 labelled rows, about 18 of them training rows
    frame["sparse"] = sparse
    ds, spec = _related(frame, min_labelled=25)
    n_train = int(((ds.split == 0) & np.isfinite(sparse)).sum())
    assert 10 <= n_train < 25
    assert _reason(generate_candidates(ds, spec), "sparse__related") == (
        f"only {n_train} labelled training rows (at least 25 needed)"
    )
    ds, spec = _related(frame, min_labelled=min(n_train, 10))
    assert _reason(generate_candidates(ds, spec), "sparse__related") is None


def test_constant_values():
    frame, _ = _frame()
    ds, spec = make_study(frame, tasks=["y"])
    const = AuxTask(name="c", kind="related", serves=("y",), values=np.where(ds.split == 0, 3.0, 4.0),
                    type="regression", provenance={"columns": ["c"], "transform": "identity"}, training_only=True)
    assert check(ds, spec, const, "y") == "constant on the labelled training rows"


def test_near_copy_of_the_main_target_is_a_leak():
    frame, rng = _frame()
    frame["twice"] = 2 * frame["y"] + 1 + 0.01 * rng.normal(size=200)
    frame["loose"] = frame["y"] + 0.5 * rng.normal(size=200)
    ds, spec = _related(frame)
    cands = generate_candidates(ds, spec)
    assert _reason(cands, "twice__related").startswith("near-copy of main task 'y' (|corr| = 1.000 > 0.98)")
    assert _reason(cands, "loose__related") is None


def test_identical_labels_up_to_renaming_is_a_leak():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x0": rng.normal(size=240)})
    frame["y"] = np.tile(["cat", "dog", "owl"], 80)
    frame["renamed"] = frame["y"].map({"cat": "B", "dog": "C", "owl": "A"})  # sorted codes differ
    frame["coarser"] = frame["y"].map({"cat": "x", "dog": "x", "owl": "z"})
    ds, spec = _related(frame)
    cands = generate_candidates(ds, spec)
    assert _reason(cands, "renamed__related") == "identical labels to main task 'y' up to renaming: a leak"
    assert _reason(cands, "coarser__related") is None


def test_training_only_target_built_from_an_input_is_dropped():
    frame, rng = _frame()
    frame["site"] = rng.choice(["a", "b"], size=200)
    ds, spec = make_study(frame, tasks=["y"], inputs=["x0", "x1", "site"],
                          aux={"kinds": ["adversarial"], "adversarial": ["site"]})
    (cand,) = generate_candidates(ds, spec)
    assert cand.dropped.startswith("built from model input 'site'")


def test_cap_drops_the_rest_in_the_generators_order():
    frame, rng = _frame()
    for k in range(4):
        frame[f"r{k}"] = frame["x0"] * (k + 1) * 0.3 + rng.normal(size=200)
    ds, spec = _related(frame, cap=2)
    cands = generate_candidates(ds, spec)
    kept = [c.name for c in cands if c.dropped is None]
    assert len(kept) == 2 and kept == [c.name for c in cands[:2]]
    assert all(c.dropped == "beyond the cap of 2 related candidates per main task" for c in cands[2:])


def test_encode_aux_standardises_regression_on_training_rows():
    frame, _ = _frame()
    ds, spec = make_study(frame, tasks=["y"])
    v = np.arange(200.0)
    aux = AuxTask(name="r", kind="hints", serves=("y",), values=v, type="regression",
                  provenance={"columns": ["x0"], "transform": "test"}, training_only=False)
    coded, info = encode_aux(ds, aux)
    train = v[ds.split == 0]
    assert coded.shape == (200, 1) and info.type == "regression"
    np.testing.assert_allclose(coded[:, 0], (v - train.mean()) / train.std())
    assert info.std == train.std()


def test_encode_aux_codes_classes_in_sorted_order():
    frame, _ = _frame()
    ds, spec = make_study(frame, tasks=["y"])
    v = np.array(["b", "a", np.nan, "c"] * 50, dtype=object)
    aux = AuxTask(name="m", kind="related", serves=("y",), values=v, type="multiclass",
                  provenance={"columns": ["m"], "transform": "identity"}, training_only=True)
    coded, info = encode_aux(ds, aux)
    assert info.classes == ("a", "b", "c")
    np.testing.assert_array_equal(coded[:4, 0], [1.0, 0.0, np.nan, 2.0])


def test_best_per_task_keeps_each_main_tasks_best_candidate_only():
    """Three kept candidates for mains a and b: a keeps its best (score 0.5 for a), b its best
    (0.4, from the candidate serving both); the third is dropped with the reason given, and a
    candidate dropped before keeps its own reason."""
    from taskscout.auxgen import AuxTask, best_per_task

    def aux(name, serves, scores, dropped=None):
        return AuxTask(name=name, kind="hints", serves=serves, values=np.zeros(3), type="regression",
                       provenance={"scores": scores}, training_only=False, dropped=dropped)

    cands = [aux("both", ("a", "b"), {"a": 0.2, "b": 0.4}), aux("for_a", ("a",), {"a": 0.5}),
             aux("weak_b", ("b",), {"b": 0.1}), aux("gone", ("a",), {"a": 9.0}, dropped="constant")]
    out = {c.name: c for c in best_per_task(cands, ["a", "b"], "one per task")}
    assert out["both"].serves == ("b",) and out["both"].dropped is None
    assert out["for_a"].serves == ("a",) and out["for_a"].dropped is None
    assert out["weak_b"].dropped == "one per task"
    assert out["gone"].dropped == "constant"
