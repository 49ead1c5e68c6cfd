"""Run the measured phase and every cheap estimator on one problem, and say how far each can be trusted.

`compare_estimators` trains the measured pairs (or takes a measured result), runs the named
estimators, scores them against the measured gains (`agreement`), and, in test mode, measures what
the two pruning devices would cost: the curve-feature gain predictor (half the pairs train it, the
other half are candidates; every pair was trained anyway) and Optuna pruning of subset trials
(the surrogate's subsets in shadow mode). `write_comparison` writes the tables to a directory.
This is the measurement behind the figures in the README; `taskscout estimators` runs it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from taskscout import rundir
from taskscout.affinity.agreement import agreement_table, per_seed_gains, seed_reliability
from taskscout.affinity.base import AffinityProblem, EstimatorResult, make_estimator
from taskscout.affinity.pruning import gain_predictor_test
from taskscout.curves import mean_curve_features

CHEAP = ("tag", "gradcos", "rsa", "surrogate")


@dataclass(frozen=True, eq=False)
class Comparison:
    """Measured gains, every estimator's result, their agreement, and the pruning account."""

    measured: EstimatorResult
    results: Mapping[str, EstimatorResult]
    agreement: pd.DataFrame  # agreement.csv
    pruning: pd.DataFrame  # one PruningRecord row per device tested
    figures: Mapping[str, float] = field(default_factory=dict)  # e.g. surrogate held-out R^2
    curve_features: pd.DataFrame = field(default_factory=pd.DataFrame)  # of the single-task models


def single_curve_features(curves: pd.DataFrame, *, epsilon: float, window: int) -> pd.DataFrame:
    """Per task: `curves.curve_features` of each seed's single-task curves (columns task, seed,
    epoch, split, loss), averaged over seeds."""
    def losses(g: pd.DataFrame, split: str) -> list[float]:
        return g[g["split"] == split].sort_values("epoch")["loss"].astype(float).tolist()

    models = ((str(task), losses(g, "train"), losses(g, "val"))
              for (task, _seed), g in curves.groupby(["task", "seed"], sort=True))
    rows = mean_curve_features(models, epsilon=epsilon, window=window)
    return pd.DataFrame(rows, columns=list(rundir.CURVE_FEATURE_COLUMNS))


def compare_estimators(
    problem: AffinityProblem,
    *,
    names: Sequence[str] = CHEAP,
    params: Mapping[str, Mapping] | None = None,
    measured: EstimatorResult | None = None,
    pruning_test: bool = True,
    plateau_epsilon: float = 0.01,
    plateau_window: int = 3,
    report: Callable[[str], None] | None = None,
) -> Comparison:
    """Measured gains (trained here unless given) and the named estimators, scored.

    With `pruning_test`, the surrogate runs its subsets in shadow pruning mode (everything trained,
    pruning decisions recorded) and the gain predictor is tested on the measured pairs.
    """
    params = {k: dict(v) for k, v in (params or {}).items()}
    say = report or (lambda _msg: None)
    if measured is None:
        say("measured: training every single task and every pair")
        measured = make_estimator("measured", **params.get("measured", {})).estimate(problem)
    results: dict[str, EstimatorResult] = {}
    for name in names:
        kw = dict(params.get(name, {}))
        if name == "surrogate" and pruning_test:
            kw.setdefault("prune", "shadow")
        say(f"{name}: estimating")
        results[name] = make_estimator(name, **kw).estimate(problem)
    agreement = agreement_table(measured, list(results.values()))

    records = []
    figures: dict[str, float] = {}
    if "losses" in measured.tables:
        r, reliability, n_seeds = seed_reliability(per_seed_gains(measured.tables["losses"]))
        figures.update({"measured_seed_spearman": r, "measured_reliability": reliability,
                        "spearman_ceiling": math.sqrt(reliability) if reliability > 0 else math.nan})
    sur = results.get("surrogate")
    if sur is not None and "heldout" in sur.tables:
        figures.update({f"surrogate_{k}": float(v) for k, v in sur.tables["heldout"].iloc[0].items()})
    if sur is not None and "pruning" in sur.tables:
        records.append(sur.tables["pruning"].iloc[0].to_dict())
    features = pd.DataFrame(columns=list(rundir.CURVE_FEATURE_COLUMNS))
    if "single_curves" in measured.tables:
        features = single_curve_features(measured.tables["single_curves"], epsilon=plateau_epsilon, window=plateau_window)
    if pruning_test and len(features) and len(measured.rows):
        c = measured.compute
        record, predictor = gain_predictor_test(
            measured.rows, features, epochs=problem.training.epochs, models_per_pair=len(problem.seeds),
            epochs_per_model=c.epochs / max(1, c.models), seconds_per_model=c.seconds / max(1, c.models),
        )
        records.append(record.row())
        figures["gain_predictor_ready"] = float(predictor.ready)
    pruning = pd.DataFrame(records)
    return Comparison(measured=measured, results=results, agreement=agreement, pruning=pruning, figures=figures,
                      curve_features=features)


def write_comparison(out: str | Path, comparison: Comparison) -> list[Path]:
    """Write affinity.csv (every method), agreement.csv, compute.csv, pruning.csv, the estimators'
    own tables (`<method>_<table>.csv`) and figures.json into `out`; the paths written."""
    out = Path(out)
    everything = [comparison.measured, *comparison.results.values()]
    written = [
        rundir.write_csv(out / rundir.AFFINITY, pd.concat([r.rows for r in everything], ignore_index=True)),
        rundir.write_csv(out / rundir.AGREEMENT, comparison.agreement),
        rundir.write_csv(out / rundir.COMPUTE, pd.DataFrame(
            [comparison.measured.compute.row("measured")] + [r.compute.row(f"estimator:{r.method}") for r in comparison.results.values()]
        )),
    ]
    if len(comparison.pruning):
        written.append(rundir.write_csv(out / "pruning.csv", comparison.pruning))
    for r in everything:
        for name, table in r.tables.items():
            if name == "single_curves":
                continue
            written.append(rundir.write_csv(out / f"{r.method}_{name}.csv", table))
    if "single_curves" in comparison.measured.tables:
        written.append(rundir.write_csv(out / rundir.CURVE_FEATURES, comparison.curve_features))
    figures = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in comparison.figures.items()}
    written.append(rundir.write_text(out / "figures.json", json.dumps(figures, indent=2) + "\n"))
    return written


def agreement_lines(comparison: Comparison) -> list[str]:
    """A short plain-text table of the agreement, for the terminal."""

    def fmt(v: float, pct: bool = False) -> str:
        if v is None or not np.isfinite(v):
            return "  n/a"
        return f"{v:5.0%}" if pct else f"{v:+.2f}"

    lines = [f"{'method':<10} {'spearman':>8} {'per-target':>10} {'neg. recall':>11} {'compute':>8}"]
    for r in comparison.agreement.itertuples(index=False):
        lines.append(f"{r.method:<10} {fmt(r.spearman):>8} {fmt(r.spearman_per_target):>10} "
                     f"{fmt(r.negative_transfer_recall, True):>11} {fmt(r.relative_compute, True):>8}")
    m = comparison.measured.compute
    lines.append(f"measured phase: {m.models} models, {m.epochs} epochs, {m.seconds:.1f} s")
    return lines
