"""Small helpers for building target values aligned with Dataset rows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from taskscout.auxgen.base import AuxTask


def raw_values(series: pd.Series) -> np.ndarray:
    """A column's values as a 1-D array: floats with NaN for numeric columns, objects with NaN
    (never None or pd.NA) otherwise, so `labelled_mask` and `encode_target` read them alike."""
    if pd.api.types.is_bool_dtype(series):
        return series.astype(float).to_numpy()
    if pd.api.types.is_numeric_dtype(series):
        return pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
    return np.array([v if pd.notna(v) else np.nan for v in series], dtype=object)


def label_text(value: object) -> str:
    """A class label as it should read inside a name: 3.0 -> "3", "rain" -> "rain"."""
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return str(value)


def best_first(tasks: list[AuxTask]) -> list[AuxTask]:
    """Highest score first; unknown (NaN) scores last; ties keep their order."""
    return sorted(tasks, key=lambda t: (math.isnan(t.score), -t.score if not math.isnan(t.score) else 0.0))
