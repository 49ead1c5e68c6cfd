"""How far each cheap estimator can be trusted on this data: agreement with the measured gains.

For every estimator, over the ordered pairs (source, target) that both it and `measured` cover:

- `spearman`: Spearman rank correlation between the estimator's values and the measured mean
  gains (ties get average ranks);
- `negative_transfer_recall`: of the measured negative transfers (pairs whose measured interval
  lies entirely below 0: `ci_high < 0`), the fraction the estimator flags. The estimator flags a
  pair when its value is below 0, or when the value is among the estimator's lowest
  `ceil(quantile * n_pairs)` values (ties with the last of those included). The quantile rule is
  there because several estimators are not centred on zero (a representation similarity is
  rarely negative); the "< 0" rule because a zero-centred estimator says "hurts" by its sign.
  NaN when the measured phase found no negative transfer;
- `relative_compute`: the estimator's wall seconds divided by the measured phase's wall seconds
  (single-task baselines plus all pairs), both measured on the same machine.

How high can an estimator's Spearman be? The measured gains are means over a few seeds and carry
seed noise. `seed_reliability` estimates how reproducible they are: r = the mean Spearman
correlation between the per-seed gains of two seeds (over every pair of seeds), and the
Spearman-Brown reliability of the S-seed mean, S r / (1 + (S - 1) r). An estimator that knew the
true expected gains would correlate with the measured means at about sqrt(reliability); a
`spearman` near that ceiling is as good as the measurement allows.

`agreement.csv` holds these columns (`rundir.AGREEMENT_COLUMNS`) followed by `n_pairs`,
`n_negative`, `flagged` (pairs flagged), `relative_epochs` (model-epochs ratio, which does not
depend on machine load) and `spearman_per_target` (for each target with 3+ sources, the Spearman
correlation over its sources, averaged: does the estimator rank a task's partners right, leaving
aside how much each target gains or loses overall).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from taskscout import rundir
from taskscout.affinity.base import Compute, EstimatorResult
from taskscout.affinity.measured import paired_with_alone
from taskscout.errors import MissingResultsError

MEASURED = "measured"
EXTRA_COLUMNS = ("n_pairs", "n_negative", "flagged", "relative_epochs", "spearman_per_target")


@dataclass(frozen=True)
class Agreement:
    """One estimator's agreement with the measured gains (one row of agreement.csv)."""

    method: str
    spearman: float
    negative_transfer_recall: float
    relative_compute: float
    n_pairs: int
    n_negative: int
    flagged: int
    relative_epochs: float
    spearman_per_target: float


def flag_negative(values: np.ndarray, *, quantile: float = 0.25) -> np.ndarray:
    """Bool mask of the values an estimator calls a negative transfer: below 0 or in its bottom quantile."""
    v = np.asarray(values, dtype=float)
    if not 0 <= quantile < 1:
        raise ValueError(f"quantile must be in [0, 1); got {quantile}")
    flags = v < 0
    k = math.ceil(quantile * len(v))
    if k > 0:
        threshold = np.sort(v)[k - 1]
        flags |= v <= threshold
    return flags


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy import stats

    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(stats.spearmanr(a, b).statistic)


def agreement(
    measured: pd.DataFrame,
    estimated: pd.DataFrame,
    *,
    method: str | None = None,
    estimator_compute: Compute | None = None,
    measured_compute: Compute | None = None,
    quantile: float = 0.25,
) -> Agreement:
    """Agreement of `estimated` affinity rows with `measured` rows (both `AFFINITY_COLUMNS`).

    Pairs are matched on (source, target); pairs missing a finite value on either side are left
    out. Compute ratios are NaN when a compute is not given or the measured one is zero.
    """
    method = method or (str(estimated["method"].iloc[0]) if len(estimated) else "?")
    m = measured[["source", "target", "gain", "ci_high"]].rename(columns={"gain": "measured"})
    e = estimated[["source", "target", "gain"]].rename(columns={"gain": "estimate"})
    both = m.merge(e, on=["source", "target"], how="inner")
    both = both[np.isfinite(both["measured"].astype(float)) & np.isfinite(both["estimate"].astype(float))]
    est = both["estimate"].to_numpy(float)
    negative = (both["ci_high"].astype(float) < 0).to_numpy()
    flags = flag_negative(est, quantile=quantile) if len(est) else np.zeros(0, bool)
    recall = float(flags[negative].mean()) if negative.any() else math.nan

    def ratio(a: float | None, b: float | None) -> float:
        if a is None or b is None or not b:
            return math.nan
        return float(a) / float(b)

    per_target = [_spearman(g["measured"].to_numpy(float), g["estimate"].to_numpy(float))
                  for _, g in both.groupby("target") if len(g) >= 3]
    per_target = [v for v in per_target if np.isfinite(v)]
    return Agreement(
        method=method,
        spearman=_spearman(both["measured"].to_numpy(float), est),
        negative_transfer_recall=recall,
        relative_compute=ratio(
            estimator_compute.seconds if estimator_compute else None,
            measured_compute.seconds if measured_compute else None,
        ),
        n_pairs=len(both),
        n_negative=int(negative.sum()),
        flagged=int(flags.sum()),
        relative_epochs=ratio(
            estimator_compute.epochs if estimator_compute else None,
            measured_compute.epochs if measured_compute else None,
        ),
        spearman_per_target=float(np.mean(per_target)) if per_target else math.nan,
    )


def agreement_table(
    measured: EstimatorResult | pd.DataFrame,
    estimates: Mapping[str, EstimatorResult] | list[EstimatorResult],
    *,
    measured_compute: Compute | None = None,
    quantile: float = 0.25,
) -> pd.DataFrame:
    """One row per estimator (the measured one excluded): agreement.csv as a frame.

    `measured` is the measured estimator's result (its compute is used) or its affinity rows
    (then pass `measured_compute`).
    """
    if isinstance(measured, EstimatorResult):
        measured_rows, measured_compute = measured.rows, measured_compute or measured.compute
    else:
        measured_rows = measured
    items = list(estimates.values()) if isinstance(estimates, Mapping) else list(estimates)
    rows = [
        asdict(agreement(measured_rows, r.rows, method=r.method, estimator_compute=r.compute,
                         measured_compute=measured_compute, quantile=quantile))
        for r in items if r.method != MEASURED
    ]
    return pd.DataFrame(rows, columns=[*rundir.AGREEMENT_COLUMNS, *EXTRA_COLUMNS])


def write_agreement(run_dir: str | Path, table: pd.DataFrame) -> Path:
    """Write agreement.csv atomically into the run directory."""
    missing = [c for c in rundir.AGREEMENT_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"agreement table lacks columns {missing}")
    return rundir.write_csv(Path(run_dir) / rundir.AGREEMENT, table)


def agreement_from_run(run_dir: str | Path, *, quantile: float = 0.25) -> pd.DataFrame:
    """agreement.csv recomputed from a run directory's affinity.csv and compute.csv.

    compute.csv phases are matched by name: the measured phase is the sum of the phases named
    `single` and `pairs`; an estimator's compute is the phase named `estimator:<method>`.
    """
    d = rundir.require(run_dir, rundir.AFFINITY)
    aff = pd.read_csv(d / rundir.AFFINITY)
    measured = aff[aff["method"] == MEASURED]
    if measured.empty:
        raise MissingResultsError(f"{d / rundir.AFFINITY} has no measured gains; run the pairs phase of `taskscout search`")
    compute = pd.read_csv(d / rundir.COMPUTE) if (d / rundir.COMPUTE).exists() else pd.DataFrame(columns=list(rundir.COMPUTE_COLUMNS))

    def phase(*names: str) -> Compute | None:
        rows = compute[compute["phase"].isin(names)]
        if rows.empty:
            return None
        return Compute(int(rows["models"].sum()), int(rows["epochs"].sum()), float(rows["seconds"].sum()))

    results = [
        EstimatorResult(method=str(m), rows=g, compute=phase(f"estimator:{m}") or Compute(0, 0, math.nan))
        for m, g in aff.groupby("method", sort=True) if m != MEASURED
    ]
    return agreement_table(measured, results, measured_compute=phase("single", "pairs"), quantile=quantile)


def per_seed_gains(losses: pd.DataFrame) -> pd.DataFrame:
    """source, target, seed, gain for every two-task model without auxiliaries in a
    `measured.LOSS_COLUMNS` table, paired per seed with the single-task losses."""
    rows = paired_with_alone(losses, sizes=(2,))
    sources = [a if b == t else b for (a, b), t in zip(rows["tasks"], rows["task"], strict=True)]
    return pd.DataFrame({"source": pd.Series(sources, dtype=object), "target": rows["task"], "seed": rows["seed"],
                         "gain": (rows["alone"] - rows["loss"]) / rows["alone"]})


def seed_reliability(gains: pd.DataFrame) -> tuple[float, float, int]:
    """(r, reliability, S) of per-seed gains (columns source, target, seed, gain): the mean
    Spearman correlation between two seeds' gains over the pairs both have, and the Spearman-Brown
    reliability S r / (1 + (S - 1) r) of the mean over the S seeds (NaN with fewer than 2 seeds)."""
    wide = gains.pivot_table(index=["source", "target"], columns="seed", values="gain")
    seeds = list(wide.columns)
    rs = []
    for i, a in enumerate(seeds):
        for b in seeds[i + 1:]:
            both = wide[[a, b]].dropna()
            rs.append(_spearman(both[a].to_numpy(float), both[b].to_numpy(float)))
    rs = [v for v in rs if np.isfinite(v)]
    if not rs:
        return math.nan, math.nan, len(seeds)
    r = float(np.mean(rs))
    n = len(seeds)
    return r, n * r / (1 + (n - 1) * r), n
