"""Every registered generator through the same checks: stable names, labels where values are,
values aligned with rows, no leakage into model inputs, caps respected."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from taskscout.auxgen import (
    AUX_TYPES,
    GENERATORS,
    dropped_features,
    encode_aux,
    generate_candidates,
)
from taskscout.spec import AUX_KINDS

from .conftest import contract_frame, contract_study

LEAK_CORR = 0.999  # a target this correlated with a feature its model sees would be a copy


@pytest.fixture(scope="module")
def study():
    ds, spec = contract_study()
    return ds, spec, generate_candidates(ds, spec)


def _of_kind(cands, kind, *, kept=False):
    """The candidates of `kind` (`kept`: those screening kept); never none, or the checks over them
    would pass without checking anything."""
    out = [c for c in cands if c.kind == kind and (not kept or c.dropped is None)]
    assert out, f"the contract data yields no {'kept ' if kept else ''}{kind} candidate"
    return out


def test_every_kind_has_a_generator():
    assert set(GENERATORS) == set(AUX_KINDS)
    assert all(g.kind == k for k, g in GENERATORS.items())


@pytest.mark.parametrize("kind", AUX_KINDS)
def test_generator_applies_and_is_deterministic(study, kind):
    ds, spec, _ = study
    gen = GENERATORS[kind]
    applies = [m for m in spec.main_tasks if gen.why_not(ds, spec, m) is None]
    assert applies, f"{kind} should apply to the contract data"
    for main in applies:
        first, second = gen.propose(ds, spec, main), gen.propose(ds, spec, main)
        assert first, f"{kind} proposed nothing for {main}"
        assert [a.name for a in first] == [a.name for a in second]
        assert len({a.name for a in first}) == len(first)
        for a, b in zip(first, second, strict=True):
            assert a.kind == kind and a.serves == (main,)
            np.testing.assert_array_equal(pd.isna(pd.DataFrame(a.values)), pd.isna(pd.DataFrame(b.values)))


@pytest.mark.parametrize("kind", AUX_KINDS)
def test_candidate_list_is_stable(study, kind):
    ds, spec, cands = study
    again = _of_kind(generate_candidates(ds, spec), kind)
    cands = _of_kind(cands, kind)
    assert [(c.name, c.serves, c.dropped) for c in cands] == [(c.name, c.serves, c.dropped) for c in again]


@pytest.mark.parametrize("kind", AUX_KINDS)
def test_record_fields(study, kind):
    ds, spec, cands = study
    all_names = [c.name for c in cands]
    assert len(set(all_names)) == len(all_names)
    for c in _of_kind(cands, kind):
        assert c.type in AUX_TYPES
        assert set(c.serves) <= set(spec.main_tasks) and c.serves
        assert c.adversarial == (kind == "adversarial")
        assert c.provenance["columns"] and c.provenance["transform"]
        json.dumps(c.provenance)  # JSON-able
        assert c.dropped is None or (isinstance(c.dropped, str) and c.dropped)


@pytest.mark.parametrize("kind", AUX_KINDS)
def test_values_are_labels_aligned_with_rows(study, kind):
    ds, spec, cands = study
    n = len(ds.frame)
    assert all(len(c.values) == n for c in _of_kind(cands, kind))
    for c in _of_kind(cands, kind, kept=True):
        coded, info = encode_aux(ds, c)
        assert coded.shape == (n, c.values.shape[1] if c.type == "soft" else 1)
        # A coded target is finite exactly where the candidate holds a label: no NaN where a label exists.
        np.testing.assert_array_equal(np.isfinite(coded).all(axis=1), c.labelled_mask)
        assert not np.isnan(coded[c.labelled_mask]).any()
        if c.type == "soft":
            np.testing.assert_allclose(coded[c.labelled_mask].sum(axis=1), 1.0)


@pytest.fixture(scope="module")
def shuffled():
    frame = contract_frame()
    perm = np.random.default_rng(1).permutation(len(frame))
    ds, spec = contract_study(frame.iloc[perm].reset_index(drop=True))
    return perm, generate_candidates(ds, spec)


@pytest.mark.parametrize("kind", AUX_KINDS)
def test_values_follow_the_rows_when_the_rows_are_shuffled(study, shuffled, kind):
    ds, spec, cands = study
    perm, cands2 = shuffled
    other = {c.name: c for c in _of_kind(cands2, kind)}
    common = [c for c in _of_kind(cands, kind) if c.name in other]
    assert common
    for c in common:
        moved, mine = c.values[perm], other[c.name].values
        assert_same_values(moved, mine, c.name)


def assert_same_values(a: np.ndarray, b: np.ndarray, name: str) -> None:
    """Equal labels at equal places; floats up to rounding (statistics summed in another order)."""
    np.testing.assert_array_equal(pd.isna(pd.DataFrame(a)), pd.isna(pd.DataFrame(b)), err_msg=name)
    if a.dtype == object:
        assert list(a[pd.notna(a)]) == list(b[pd.notna(b)]), name
    else:
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("kind", AUX_KINDS)
def test_no_leakage_into_model_inputs(study, kind):
    ds, spec, cands = study
    for c in _of_kind(cands, kind, kept=True):
        if c.training_only and not c.provenance.get("shift"):
            assert not set(c.provenance["columns"]) & set(ds.inputs), c.name
        assert set(c.drops_inputs) <= set(ds.inputs)
        hidden = dropped_features(ds, [c])
        assert set(hidden) == {i for i, s in enumerate(ds.feature_sources) if s in c.drops_inputs}
        seen = np.delete(ds.X.astype(float), hidden, axis=1)
        coded, _ = encode_aux(ds, c)
        for col in range(coded.shape[1]):
            y = coded[:, col]
            rows = np.isfinite(y)
            for j in range(seen.shape[1]):
                x = seen[rows, j]
                if np.std(x) > 0 and np.std(y[rows]) > 0:
                    r = abs(np.corrcoef(x, y[rows])[0, 1])
                    assert r < LEAK_CORR, f"{c.name} copies feature {j} (|corr| = {r:.4f}) of its own model"


@pytest.mark.parametrize("kind", AUX_KINDS)
def test_caps_are_respected(study, kind):
    ds, spec, cands = study
    cap = spec.aux.cap_for(kind)
    for main in spec.main_tasks:
        kept = [c for c in _of_kind(cands, kind, kept=True) if main in c.serves]
        assert len(kept) <= cap
    beyond = [c for c in _of_kind(cands, kind) if c.dropped and "cap" in c.dropped]
    if beyond:  # a binding cap keeps exactly cap candidates for some main task
        assert any(
            sum(c.dropped is None and m in c.serves for c in _of_kind(cands, kind)) == cap
            for m in spec.main_tasks
        )


@pytest.mark.parametrize("kind", AUX_KINDS)
def test_per_kind_cap_flag_changes_only_that_kind(kind):
    ds, spec = contract_study(aux={
        "kinds": [kind], "cap": 2, "caps": {kind: 1}, "adversarial": ["site"], "smooth_source": "level", "horizon": 2,
    })
    cands = _of_kind(generate_candidates(ds, spec), kind, kept=True)
    for main in spec.main_tasks:
        kept = [c for c in cands if main in c.serves]
        assert len(kept) <= 1
    assert spec.aux.cap_for(kind) == 1 and all(spec.aux.cap_for(k) == 2 for k in AUX_KINDS if k != kind)
