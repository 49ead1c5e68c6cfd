"""Hints: derived features that matter for the main task but are hard to learn, as targets.

From the numeric input columns, standardised on the training rows (centred, so a product is an
interaction and not a rescaled main effect), it builds pairwise products, squares, absolute
values and quartile bins. Each is scored by mutual information with the main target on training
rows; the best become regression targets. With many inputs, a cheap linear screen (squared
correlation with a regression target, correlation ratio with a class target) first keeps the
`SCREEN_MAX` strongest, so the nearest-neighbour MI estimates stay few. Derived features that
are a linear copy of an input (|corr| > 0.98, e.g. the square of a two-valued column) teach
nothing and are left out, and so is the weaker of two derived features that copy each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

from taskscout.auxgen.base import AuxGenerator, AuxTask, register
from taskscout.auxgen.scoring import main_target, mutual_information, training_sample
from taskscout.auxgen.values import best_first
from taskscout.data import TRAIN, Dataset
from taskscout.spec import StudySpec

COPY_CORR = 0.98  # |corr| above which a derived feature counts as a copy of another column
SCREEN_MAX = 40  # derived features scored by MI; more are first cut by the linear screen
HINT_MI_ROWS = 1500  # training rows for the MI estimates of hints (there are many of them)


@dataclass(frozen=True)
class Derived:
    """One derived feature: its name, source columns and transform (values built on demand)."""

    name: str
    columns: tuple[str, ...]
    transform: str  # "product" | "square" | "abs" | "quartile"


def numeric_inputs(ds: Dataset) -> list[str]:
    """Raw input columns that are numeric (or boolean) and vary on the training rows."""
    out = []
    for c in ds.inputs:
        s = ds.frame[c]
        if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)):
            continue
        x = s.to_numpy(dtype=float)[ds.split == TRAIN]
        x = x[np.isfinite(x)]  # missing and infinite values count as missing (data.prepare)
        if len(x) > 1 and np.std(x) > 0:
            out.append(c)
    return out


def _train_stats(ds: Dataset, col: str) -> tuple[np.ndarray, float, float]:
    x = ds.frame[col].to_numpy(dtype=float)
    train = x[(ds.split == TRAIN) & np.isfinite(x)]
    return x, float(train.mean()), float(train.std())


def derived_features(ds: Dataset) -> list[Derived]:
    """Every derived feature of the numeric inputs, in a fixed order."""
    cols = numeric_inputs(ds)
    out = [Derived(f"{a}*{b}__product", (a, b), "product") for a, b in combinations(cols, 2)]
    for c in cols:
        x = ds.frame[c].to_numpy(dtype=float)
        levels = len(np.unique(x[np.isfinite(x)]))
        if levels <= 2:  # square, |.| and bins of a two-valued column are copies of it
            continue
        out += [Derived(f"{c}__square", (c,), "square"), Derived(f"{c}__abs", (c,), "abs")]
        if levels > 4:
            out.append(Derived(f"{c}__quartile", (c,), "quartile"))
    return out


def derived_values(ds: Dataset, d: Derived) -> tuple[np.ndarray, dict]:
    """The values of `d` on every row (NaN where a source value is missing) and its provenance."""
    stats = {c: _train_stats(ds, c) for c in d.columns}
    z = {c: (x - mean) / std for c, (x, mean, std) in stats.items()}
    prov: dict = {"columns": list(d.columns)}
    if d.transform == "product":
        a, b = d.columns
        prov.update(transform="product of standardised columns",
                    mean=[stats[a][1], stats[b][1]], std=[stats[a][2], stats[b][2]])
        return z[a] * z[b], prov
    (c,) = d.columns
    x, mean, std = stats[c]
    if d.transform == "square":
        prov.update(transform="square of standardised column", mean=mean, std=std)
        return z[c] ** 2, prov
    if d.transform == "abs":
        prov.update(transform="absolute value of standardised column", mean=mean, std=std)
        return np.abs(z[c]), prov
    edges = np.quantile(x[(ds.split == TRAIN) & np.isfinite(x)], [0.25, 0.5, 0.75])
    prov.update(transform="quartile bin (0..3) on training quantiles", edges=edges.tolist())
    return np.where(np.isfinite(x), np.searchsorted(edges, x, side="right").astype(float), np.nan), prov


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


def _strengths(feats: np.ndarray, y: np.ndarray, discrete: bool) -> np.ndarray:
    """Squared correlation (continuous y) or correlation ratio (class y) of each column of
    `feats` (m, k) with y (m,); 0 for constant columns."""
    f = feats - feats.mean(axis=0)
    var = (f**2).mean(axis=0)
    if discrete:
        between = sum((y == k).mean() * f[y == k].mean(axis=0) ** 2 for k in np.unique(y))
    else:
        yc = y - y.mean()
        between = (f * yc[:, None]).mean(axis=0) ** 2 / max(float((yc**2).mean()), 1e-300)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 1e-12, between / var, 0.0)


def linear_screen(ds: Dataset, main: str, feats: list[Derived], rows: np.ndarray, keep: int) -> list[Derived]:
    """The `keep` derived features most linearly related to the main target on `rows`, found
    without building all of them (products are screened in blocks), in their original order."""
    y, discrete = main_target(ds, main)
    yr = y[rows]
    cols = numeric_inputs(ds)
    where = {c: i for i, c in enumerate(cols)}
    Z = np.column_stack([(x[rows] - mean) / std for x, mean, std in (_train_stats(ds, c) for c in cols)])
    Z = np.nan_to_num(Z)  # a missing value sits at the mean: fine for a screen
    strength = np.zeros(len(feats))
    products = [i for i, d in enumerate(feats) if d.transform == "product"]
    for start in range(0, len(products), 2048):
        block = products[start:start + 2048]
        a = [where[feats[i].columns[0]] for i in block]
        b = [where[feats[i].columns[1]] for i in block]
        strength[block] = _strengths(Z[:, a] * Z[:, b], yr, discrete)
    others = [i for i, d in enumerate(feats) if d.transform != "product"]
    if others:
        vals = np.column_stack([np.nan_to_num(derived_values(ds, feats[i])[0][rows]) for i in others])
        strength[others] = _strengths(vals, yr, discrete)
    best = np.argsort(-strength, kind="stable")[:keep]
    return [feats[i] for i in sorted(best)]


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
        rows = training_sample(ds, np.isfinite(y), spec.seed, limit=HINT_MI_ROWS)
        feats = derived_features(ds)
        if len(feats) > SCREEN_MAX:
            feats = linear_screen(ds, main, feats, rows, SCREEN_MAX)
        inputs = ds.X.astype(float)
        scored = []
        for d in feats:
            v, prov = derived_values(ds, d)
            if max_abs_corr(v, inputs, rows) > COPY_CORR:
                continue
            scored.append(AuxTask(
                name=d.name, kind=self.kind, serves=(main,), values=v, type="regression", provenance=prov,
                training_only=False,  # a function of the inputs: known at prediction time too
                score=mutual_information(ds, v, False, y, discrete, seed=spec.seed, limit=HINT_MI_ROWS),
            ))
        # Keep a short list beyond the cap so that screening can fall back on the next ones.
        cap = spec.aux.cap_for(self.kind)
        limit = max(2 * cap, cap + 3)
        chosen: list[AuxTask] = []
        for t in best_first(scored):
            if len(chosen) == limit:
                break
            kept = np.nan_to_num(np.stack([c.values for c in chosen], axis=1)) if chosen else np.zeros((len(y), 0))
            if max_abs_corr(t.values, kept, rows) <= COPY_CORR:
                chosen.append(t)
        return chosen
