"""Helpers for target values: raw columns, label text in names, ordering by score."""

from __future__ import annotations

import numpy as np
import pandas as pd

from taskscout.auxgen import AuxTask, labelled_mask
from taskscout.auxgen.values import best_first, label_text, raw_values


def test_raw_values_use_nan_for_missing_in_every_dtype():
    text = raw_values(pd.Series(["a", None, "b"], dtype="str"))
    assert text.dtype == object and text[0] == "a" and isinstance(text[1], float) and np.isnan(text[1])
    nums = raw_values(pd.Series([1, None, 3], dtype="Int64"))
    assert nums.dtype == float and np.isnan(nums[1])
    np.testing.assert_array_equal(raw_values(pd.Series([True, False])), [1.0, 0.0])
    np.testing.assert_array_equal(labelled_mask(text), [True, False, True])


def test_labelled_mask_of_soft_values_needs_a_whole_row():
    soft = np.array([[0.5, 0.5], [np.nan, np.nan], [1.0, 0.0]])
    np.testing.assert_array_equal(labelled_mask(soft), [True, False, True])


def test_label_text():
    assert [label_text(v) for v in (3.0, 2.5, "rain", 4)] == ["3", "2.5", "rain", "4"]


def test_best_first_puts_unknown_scores_last_and_keeps_ties_in_order():
    def task(name, score):
        return AuxTask(name=name, kind="hints", serves=("y",), values=np.zeros(1), type="regression",
                       provenance={}, training_only=False, score=score)

    ordered = best_first([task("a", 0.1), task("b", float("nan")), task("c", 0.5), task("d", 0.1)])
    assert [t.name for t in ordered] == ["c", "a", "d", "b"]
