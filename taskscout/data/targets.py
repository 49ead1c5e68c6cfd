"""What a target column is, before any data set is built: the split codes, the inferred task type,
and the check that a text column is not numbers with stray cells. Shared by the wide path
(prepare.py) and the long format (segments.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from taskscout.errors import DataError

TRAIN, VAL, TEST = 0, 1, 2
SPLIT_NAMES = ("train", "val", "test")
ORDINAL_MAX_LEVELS = 10  # integer targets with 3..10 levels are inferred ordinal
# A text task column with at least this share of cells that are numbers is taken for a numeric
# column with stray cells (a typo, "n/a"), not for classes: its type is not guessed.
NUMERIC_TASK_MIN_SHARE = 0.9


def infer_task_type(values: pd.Series) -> str:
    """binary for two values, multiclass for non-numeric, ordinal for few integer levels, else regression."""
    labelled = values.dropna()
    uniq = pd.unique(labelled)
    if len(uniq) <= 2:
        return "binary"
    if not pd.api.types.is_numeric_dtype(labelled) or pd.api.types.is_bool_dtype(labelled):
        return "multiclass"
    as_float = labelled.astype(float)
    if np.all(np.mod(as_float, 1) == 0) and len(uniq) <= ORDINAL_MAX_LEVELS:
        return "ordinal"
    return "regression"


def stray_text(values: pd.Series) -> pd.Series | None:
    """The non-empty cells of a text column that do not parse as numbers, when the column is
    otherwise numbers (NUMERIC_TASK_MIN_SHARE of its non-empty cells); None for any other column."""
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return None
    present = values.dropna()
    stray = pd.to_numeric(present, errors="coerce").isna()
    if len(present) and stray.any() and 1 - stray.mean() >= NUMERIC_TASK_MIN_SHARE:
        return present[stray]
    return None


def refuse_stray_text(values: pd.Series, *, name: str, source: str = "the data") -> None:
    """Raise DataError when a text task column is nearly all numbers (NUMERIC_TASK_MIN_SHARE of its
    non-empty cells): inferring classes would make a class of every number."""
    stray = stray_text(values)
    if stray is not None:
        raise DataError(
            f"column {name!r} of {source} holds numbers except {len(stray)} of its {int(values.notna().sum())} non-empty cells, "
            f"such as {stray.iloc[0]!r}; clean those cells (an empty cell means unlabelled), "
            f"or pass --task-type {name}=multiclass if its values are categories"
        )
