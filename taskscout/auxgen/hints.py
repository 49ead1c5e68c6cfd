"""Hints: derived features that matter for the main task but are hard to learn, as targets.

From the numeric input columns, standardised on the training rows (centred, so a product is an
interaction and not a rescaled main effect), it builds pairwise products, squares, absolute
values and quartile bins. Each is scored by mutual information with the main target on training
rows; the best become regression targets. Derived features that are a linear copy of an input
(|corr| > 0.98, e.g. the square of a two-valued column) teach nothing and are left out, and so is
the weaker of two derived features that copy each other.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from taskscout.auxgen.base import AuxGenerator, AuxTask, register
from taskscout.auxgen.scoring import main_target, mutual_information, training_sample
from taskscout.auxgen.values import best_first
from taskscout.data import TRAIN, Dataset
from taskscout.spec import StudySpec

COPY_CORR = 0.98  # |corr| above which a derived feature counts as a copy of another column
SCREEN_MAX = 200  # derived features scored by MI; more are first cut by a linear screen


def numeric_inputs(ds: Dataset) -> list[str]:
    """Raw input columns that are numeric (or boolean) and vary on the training rows."""
    out = []
    for c in ds.inputs:
        s = ds.frame[c]
        if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)):
            continue
        x = s.to_numpy(dtype=float)[ds.split == TRAIN]
        if np.nanstd(x) > 0:
            out.append(c)
    return out


def _standardised(ds: Dataset, col: str) -> tuple[np.ndarray, float, float]:
    x = ds.frame[col].to_numpy(dtype=float)
    train = x[(ds.split == TRAIN) & np.isfinite(x)]
    mean, std = float(train.mean()), float(train.std())
    return (x - mean) / std, mean, std


def derived_features(ds: Dataset) -> list[tuple[str, np.ndarray, dict]]:
    """Every derived feature: (name, values with NaN where an input is missing, provenance)."""
    cols = numeric_inputs(ds)
    z, stats, levels = {}, {}, {}
    for c in cols:
        z[c], mean, std = _standardised(ds, c)
        stats[c] = {"mean": mean, "std": std}
        levels[c] = len(np.unique(z[c][np.isfinite(z[c])]))
    out: list[tuple[str, np.ndarray, dict]] = []
    for a, b in combinations(cols, 2):
        out.append((f"{a}*{b}__product", z[a] * z[b], {
            "columns": [a, b], "transform": "product of standardised columns",
            "mean": [stats[a]["mean"], stats[b]["mean"]], "std": [stats[a]["std"], stats[b]["std"]],
        }))
    for c in cols:
        if levels[c] <= 2:  # square, |.| and bins of a two-valued column are copies of it
            continue
        out.append((f"{c}__square", z[c] ** 2, {"columns": [c], "transform": "square of standardised column", **stats[c]}))
        out.append((f"{c}__abs", np.abs(z[c]), {"columns": [c], "transform": "absolute value of standardised column", **stats[c]}))
        if levels[c] > 4:
            x = ds.frame[c].to_numpy(dtype=float)
            edges = np.quantile(x[(ds.split == TRAIN) & np.isfinite(x)], [0.25, 0.5, 0.75])
            bins = np.where(np.isfinite(x), np.searchsorted(edges, x, side="right").astype(float), np.nan)
            out.append((f"{c}__quartile", bins, {
                "columns": [c], "transform": "quartile bin (0..3) on training quantiles", "edges": edges.tolist(),
            }))
    return out


def max_abs_corr(v: np.ndarray, others: np.ndarray, rows: np.ndarray) -> float:
    """The largest |Pearson correlation| between `v` and any column of `others` (n, k), on
    `rows` where `v` is finite (`others` has no NaN); 0 for a constant column."""
    if others.shape[1] == 0:
        return 0.0
    x = v[rows]
    ok = np.isfinite(x)
    if ok.sum() < 3:
        return 0.0
    x, m = x[ok] - x[ok].mean(), others[rows][ok]
    m = m - m.mean(axis=0)
    denom = np.sqrt((x**2).sum() * (m**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(denom > 0, np.abs(x @ m) / denom, 0.0)
    return float(r.max())


def _linear_screen(ds: Dataset, main: str, feats: list, rows: np.ndarray) -> list:
    """The SCREEN_MAX features with the largest squared correlation (regression target) or
    correlation ratio (class target) with the main target: a cheap cut before the MI estimates."""
    y, discrete = main_target(ds, main)
    yr = y[rows]

    def strength(v: np.ndarray) -> float:
        x = v[rows]
        ok = np.isfinite(x) & np.isfinite(yr)
        x, t = x[ok], yr[ok]
        if len(x) < 3 or np.std(x) == 0:
            return 0.0
        if not discrete:
            return float(np.corrcoef(x, t)[0, 1] ** 2) if np.std(t) > 0 else 0.0
        between = sum((t == k).sum() * (x[t == k].mean() - x.mean()) ** 2 for k in np.unique(t))
        return float(between / (len(x) * np.var(x)))

    ranked = sorted(range(len(feats)), key=lambda i: -strength(feats[i][1]))
    return [feats[i] for i in sorted(ranked[:SCREEN_MAX])]


@register
class HintsGenerator(AuxGenerator):
    """Derived features of the inputs ranked by mutual information with the main target."""

    kind = "hints"

    def why_not(self, ds: Dataset, spec: StudySpec, main: str) -> str | None:
        if not numeric_inputs(ds):
            return "no numeric input column varies on the training rows"
        return None

    def propose(self, ds: Dataset, spec: StudySpec, main: str) -> list[AuxTask]:
        y, discrete = main_target(ds, main)
        rows = training_sample(ds, np.isfinite(y), spec.seed)
        feats = derived_features(ds)
        if len(feats) > SCREEN_MAX:
            feats = _linear_screen(ds, main, feats, rows)
        inputs = ds.X.astype(float)
        pool = [(name, v, prov) for name, v, prov in feats if max_abs_corr(v, inputs, rows) <= COPY_CORR]
        scored = best_first([
            AuxTask(
                name=name, kind=self.kind, serves=(main,), values=v, type="regression", provenance=prov,
                training_only=False,  # a function of the inputs: known at prediction time too
                score=mutual_information(ds, v, False, y, discrete, seed=spec.seed),
            )
            for name, v, prov in pool
        ])
        # Keep a short list beyond the cap so that screening can fall back on the next ones.
        limit = max(2 * spec.aux.cap_for(self.kind), spec.aux.cap_for(self.kind) + 3)
        chosen: list[AuxTask] = []
        for t in scored:
            if len(chosen) == limit:
                break
            kept = np.nan_to_num(np.stack([c.values for c in chosen], axis=1)) if chosen else np.zeros((len(y), 0))
            if max_abs_corr(t.values, kept, rows) <= COPY_CORR:
                chosen.append(t)
        return chosen
