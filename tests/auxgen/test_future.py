"""Future as target: t+1..t+h within each entity, never across entities or splits."""

from __future__ import annotations

import numpy as np
import pandas as pd

from taskscout.auxgen import GENERATORS, generate_candidates
from taskscout.auxgen.future import future_rows
from taskscout.data import TRAIN

from .conftest import make_study

GEN = GENERATORS["future"]


def _panel(n_entities=3, n_times=60, seed=0):
    """Rows shuffled; `code` = 1000 * entity + time tells exactly which row a value came from."""
    rng = np.random.default_rng(seed)
    rows = []
    for e in range(n_entities):
        signal = rng.normal(size=n_times)
        for t in range(n_times):
            rows.append({
                "when": f"2020-01-{1 + t // 24:02d} {t % 24:02d}:00", "shop": f"shop{e}",
                "code": 1000.0 * e + t, "x1": rng.normal(), "y": signal[t] + 0.1 * rng.normal(),
            })
    return pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def _study(frame, **aux):
    return make_study(
        frame, tasks=["y"], time_column="when", entity_column="shop",
        aux={"kinds": ["future"], "cap": 5, **aux},
    )


def test_future_never_crosses_entities_and_row_t_sees_t_plus_h():
    frame = _panel()
    ds, spec = _study(frame, horizon=2)
    cands = {c.name: c for c in generate_candidates(ds, spec)}
    code = frame["code"].to_numpy()
    for h in (1, 2):
        c = cands[f"code__future_{h}"]
        assert c.training_only and c.provenance["shift"] == h
        lab = np.isfinite(c.values)
        # the value at row t is the same entity's value h steps later: code + h, same thousand
        np.testing.assert_array_equal(c.values[lab], code[lab] + h)
        # the last h rows of each entity have no future row
        last = (code % 1000) >= 60 - h
        assert not lab[last].any()


def test_staggered_entities_do_not_continue_each_other():
    # unit a is observed at times 0..59, unit b at 100..159: in time order within entities, a's last
    # row and b's first row are neighbours and both training rows, yet b's start is not a's future
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({
        "t": np.r_[np.arange(60), np.arange(100, 160)], "unit": ["a"] * 60 + ["b"] * 60,
        "x1": rng.normal(size=120), "y": rng.normal(size=120),
    })
    ds, spec = make_study(frame, tasks=["y"], time_column="t", entity_column="unit", aux={"kinds": ["future"]})
    assert ds.split[59] == ds.split[60] == TRAIN
    c = next(c for c in generate_candidates(ds, spec) if c.name == "y__future_1")
    assert np.isnan(c.values[59])
    np.testing.assert_array_equal(c.values[:59], frame["y"].to_numpy()[1:60])


def test_future_of_the_main_target_is_the_next_label_of_the_same_entity():
    frame = _panel()
    ds, spec = _study(frame)
    c = next(c for c in generate_candidates(ds, spec) if c.name == "y__future_1")
    by_code = dict(zip(frame["code"], frame["y"], strict=True))
    for i in np.flatnonzero(np.isfinite(c.values)):
        assert c.values[i] == by_code[frame["code"][i] + 1]
    assert c.serves == ("y",) and c.type == "regression"


def test_future_labels_never_come_from_another_split():
    ds, spec = _study(_panel())
    nxt = future_rows(ds, 1)
    have = nxt >= 0
    assert (ds.split[have] == ds.split[nxt[have]]).all()
    # a training row whose next row is a validation row has no future label
    order_code = ds.frame["code"].to_numpy()
    boundary = [
        i for i in np.flatnonzero(ds.split == TRAIN)
        if not have[i] and (order_code[i] % 1000) < 59
    ]
    assert boundary, "the time split must cut some entity between train and validation"


def test_without_an_entity_column_rows_are_one_series():
    frame = pd.DataFrame({"t": np.arange(100.0), "x1": np.arange(100.0) ** 0.5, "y": np.sin(np.arange(100.0))})
    ds, spec = make_study(frame, tasks=["y"], time_column="t", aux={"kinds": ["future"]})
    c = next(c for c in generate_candidates(ds, spec) if c.name == "y__future_1")
    lab = np.isfinite(c.values)
    np.testing.assert_allclose(c.values[lab], np.sin(np.arange(100.0) + 1)[lab])


def test_no_time_column_means_no_future_and_says_why():
    frame = pd.DataFrame({"x1": np.arange(50.0), "y": np.arange(50.0) % 3})
    ds, spec = make_study(frame, tasks=["y"], aux={"kinds": ["future"]})
    assert "--time-column" in GEN.why_not(ds, spec, "y")
    assert generate_candidates(ds, spec) == []
