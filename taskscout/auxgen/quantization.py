"""Quantization smoothing: a smoother companion for a coarse, discrete main target.

For a main target with ordered classes c_0 < ... < c_{C-1} (an ordinal task, a multiclass task
whose classes are numbers, or a regression task with only 3..10 distinct values):

- cumulative binary targets `y >= c_k` for k = 1..C-1 (named `MAIN__ge_<c_k>`), which tell the
  network that neighbouring classes are alike;
- a Gaussian-smoothed label distribution (`MAIN__smoothed`, type "soft"): row i with class index
  j gets probabilities p_k proportional to exp(-(k - j)^2 / (2 sigma^2)) with sigma =
  `SOFT_SIGMA` class steps (0.75: about half the mass on the true class, a fifth on each
  neighbour).

For a binary main target that was made by thresholding a numeric column, the user names that
column (`--smooth-source COL`) and it becomes a regression target (`COL__source`).
Every target here is built from labels, so all are training-only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from taskscout.auxgen.base import AuxGenerator, AuxTask, register
from taskscout.auxgen.scoring import column_view, mi_with_main
from taskscout.auxgen.values import best_first, label_text
from taskscout.data import Dataset
from taskscout.data.prepare import ORDINAL_MAX_LEVELS
from taskscout.spec import StudySpec

SOFT_SIGMA = 0.75


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def ordered_levels(ds: Dataset, main: str) -> tuple[np.ndarray, tuple] | str:
    """The main target as class indices 0..C-1 (NaN = unlabelled) with its ordered class labels,
    or the reason its classes have no order."""
    info = ds.task(main)
    codes = ds.Y[:, ds.task_names.index(main)]
    if info.type == "ordinal":
        return codes, info.classes
    if info.type == "multiclass":
        if all(_is_number(c) for c in info.classes):
            return codes, info.classes
        shown = ", ".join(str(c) for c in info.classes[:6]) + (", ..." if info.n_classes > 6 else "")
        return f"'{main}' is multiclass with unordered classes ({shown}); cumulative targets need ordered classes"
    if info.type == "binary":
        return (
            f"'{main}' is binary: nothing to smooth between two classes; if it was made by thresholding "
            f"a numeric column, name that column with --smooth-source COL"
        )
    raw = pd.to_numeric(ds.frame[main], errors="coerce").to_numpy(dtype=float)
    levels = np.unique(raw[np.isfinite(raw)])
    if 3 <= len(levels) <= ORDINAL_MAX_LEVELS:  # a coarse, binned regression target
        index = np.searchsorted(levels, raw)
        return np.where(np.isfinite(raw), index, np.nan).astype(float), tuple(float(v) for v in levels)
    return f"'{main}' is a continuous regression target ({len(levels)} distinct values), not a coarse one"


def cumulative_targets(codes: np.ndarray, n_classes: int) -> list[np.ndarray]:
    """[y >= 1, ..., y >= C-1] as floats, NaN where y is unlabelled."""
    labelled = np.isfinite(codes)
    return [np.where(labelled, (codes >= k).astype(float), np.nan) for k in range(1, n_classes)]


def smoothed_distribution(codes: np.ndarray, n_classes: int, sigma: float = SOFT_SIGMA) -> np.ndarray:
    """(n, C) Gaussian-smoothed one-hot labels; rows without a label are all NaN."""
    k = np.arange(n_classes, dtype=float)
    filled = np.nan_to_num(codes, nan=0.0)[:, None]
    p = np.exp(-((k[None, :] - filled) ** 2) / (2 * sigma**2))
    p /= p.sum(axis=1, keepdims=True)
    p[~np.isfinite(codes)] = np.nan
    return p


def _smooth_source(ds: Dataset, spec: StudySpec, main: str) -> str | None:
    src = spec.aux.smooth_source
    if src is None or src == main or ds.task(main).type != "binary" or src not in ds.frame.columns:
        return None
    return src if pd.api.types.is_numeric_dtype(ds.frame[src]) else None


@register
class QuantizationGenerator(AuxGenerator):
    """Cumulative and smoothed companions of an ordered target; the numeric source of a binary one."""

    kind = "quantization"

    def why_not(self, ds: Dataset, spec: StudySpec, main: str) -> str | None:
        if ds.task(main).type == "binary" and spec.aux.smooth_source and spec.aux.smooth_source != main:
            if _smooth_source(ds, spec, main) is None:
                return f"--smooth-source column '{spec.aux.smooth_source}' is not numeric"
            return None
        levels = ordered_levels(ds, main)
        return levels if isinstance(levels, str) else None

    def propose(self, ds: Dataset, spec: StudySpec, main: str) -> list[AuxTask]:
        src = _smooth_source(ds, spec, main)
        if src is not None:
            return [AuxTask(
                name=f"{src}__source", kind=self.kind, serves=(main,),
                values=pd.to_numeric(ds.frame[src], errors="coerce").to_numpy(dtype=float), type="regression",
                provenance={"columns": [src], "transform": "continuous source of a thresholded target"},
                training_only=True,  # the column the main label was cut from: a leak as an input
                score=mi_with_main(ds, main, *column_view(ds.frame[src]), seed=spec.seed),
            )]
        levels = ordered_levels(ds, main)
        if isinstance(levels, str):
            return []
        codes, classes = levels
        labels = [label_text(c) for c in classes]
        soft = AuxTask(
            name=f"{main}__smoothed", kind=self.kind, serves=(main,),
            values=smoothed_distribution(codes, len(classes)), type="soft",
            provenance={"columns": [main], "transform": "gaussian label smoothing", "sigma": SOFT_SIGMA,
                        "classes": labels},
            training_only=True,
        )
        cumulative = [
            AuxTask(
                name=f"{main}__ge_{labels[k]}", kind=self.kind, serves=(main,), values=v, type="binary",
                provenance={"columns": [main], "transform": "cumulative", "threshold": labels[k], "classes": labels},
                training_only=True, score=mi_with_main(ds, main, v, True, seed=spec.seed),
            )
            for k, v in enumerate(cumulative_targets(codes, len(classes)), start=1)
        ]
        # The soft distribution carries every threshold at once; then the most informative splits.
        return [soft, *best_first(cumulative)]
