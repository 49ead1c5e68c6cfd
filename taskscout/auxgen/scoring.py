"""Mutual information with a main target, on training rows only, shared by the generators.

Scores use scikit-learn's nearest-neighbour estimators (`mutual_info_classif` for a discrete
target, `mutual_info_regression` for a continuous one) with a fixed random_state, on at most
`MI_MAX_ROWS` training rows chosen by a seeded draw, so a score is the same on every call and
never looks at validation or test labels.
"""

from __future__ import annotations

import weakref

import numpy as np
import pandas as pd
from sklearn.feature_selection import mutual_info_classif, mutual_info_regression

from taskscout.data import TRAIN, Dataset
from taskscout.data.prepare import ORDINAL_MAX_LEVELS

MI_MAX_ROWS = 2000  # enough for stable nearest-neighbour estimates; keeps each generator fast
MI_MIN_ROWS = 10  # below this an estimate is noise: the score is NaN
MI_NEIGHBOURS = 3


def column_view(values: pd.Series | np.ndarray) -> tuple[np.ndarray, bool]:
    """A column as floats (NaN = missing) and whether it is discrete.

    Non-numeric columns become category codes; numeric columns with few integer levels count as
    discrete, because the nearest-neighbour estimator is biased on heavily tied values.
    """
    s = pd.Series(values)
    if pd.api.types.is_bool_dtype(s):
        s = s.astype(float)
    if not pd.api.types.is_numeric_dtype(s):
        labelled = s.dropna()
        cats = sorted(pd.unique(labelled), key=lambda v: (str(type(v)), v))
        lookup = {c: float(i) for i, c in enumerate(cats)}
        return np.array([lookup.get(v, np.nan) if pd.notna(v) else np.nan for v in s]), True
    x = s.to_numpy(dtype=float)
    finite = x[np.isfinite(x)]
    discrete = bool(len(finite)) and bool(np.all(np.mod(finite, 1) == 0)) and len(np.unique(finite)) <= ORDINAL_MAX_LEVELS
    return x, discrete


def main_target(ds: Dataset, main: str) -> tuple[np.ndarray, bool]:
    """The coded main target (NaN = unlabelled) and whether it is discrete."""
    info = ds.task(main)
    return ds.Y[:, ds.task_names.index(main)], info.type != "regression"


def training_sample(ds: Dataset, mask: np.ndarray, seed: int, limit: int = MI_MAX_ROWS) -> np.ndarray:
    """Training rows where `mask` holds, at most `limit` of them, drawn with `seed` (sorted)."""
    rows = np.flatnonzero(mask & (ds.split == TRAIN))
    if len(rows) > limit:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=limit, replace=False))
    return rows


def mutual_information(
    ds: Dataset, x: np.ndarray, x_discrete: bool, y: np.ndarray, y_discrete: bool, *, seed: int,
    limit: int = MI_MAX_ROWS,
) -> float:
    """MI (nats) between column `x` and target `y` on (at most `limit`) training rows where both
    are present; NaN with fewer than MI_MIN_ROWS such rows, or, when exactly one of the two is
    discrete, fewer than MI_MIN_ROWS of them whose discrete value occurs more than once."""
    x = np.asarray(x, dtype=float)
    rows = training_sample(ds, np.isfinite(x) & np.isfinite(y), seed, limit)
    if len(rows) < MI_MIN_ROWS:
        return float("nan")
    xs, ys = x[rows][:, None], y[rows]
    if np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return 0.0
    if x_discrete != y_discrete:
        # The estimator for one discrete and one continuous column skips the rows whose discrete
        # value occurs once (an identifier leaves none): count only the rows it keeps.
        _, inverse, counts = np.unique(xs[:, 0] if x_discrete else ys, return_inverse=True, return_counts=True)
        if int((counts[inverse] > 1).sum()) < MI_MIN_ROWS:
            return float("nan")
    if y_discrete:
        mi = mutual_info_classif(
            xs, ys.astype(int), discrete_features=[x_discrete], n_neighbors=MI_NEIGHBOURS, random_state=0
        )
    else:
        mi = mutual_info_regression(
            xs, ys, discrete_features=[x_discrete], n_neighbors=MI_NEIGHBOURS, random_state=0
        )
    return float(mi[0])


def mi_with_main(ds: Dataset, main: str, x: np.ndarray, x_discrete: bool, *, seed: int) -> float:
    """Mutual information between column `x` and main task `main` on training rows."""
    y, y_discrete = main_target(ds, main)
    return mutual_information(ds, x, x_discrete, y, y_discrete, seed=seed)


# Several generators rank the inputs by importance; computed once per dataset, main and seed.
_IMPORTANCE: weakref.WeakKeyDictionary[Dataset, dict] = weakref.WeakKeyDictionary()


def input_importance(ds: Dataset, main: str, *, seed: int) -> dict[str, float]:
    """MI of every raw input column with main task `main` (the importance used to rank inputs).

    Marginal MI cannot see a column that matters only through an interaction with another; such
    a column may rank low here, and the search's measured gains are what judge a candidate.
    """
    cache = _IMPORTANCE.setdefault(ds, {})
    if (main, seed) not in cache:
        cache[main, seed] = {
            c: mi_with_main(ds, main, *column_view(ds.frame[c]), seed=seed) for c in ds.inputs
        }
    return dict(cache[main, seed])
