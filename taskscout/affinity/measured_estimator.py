"""`measured`: the ground truth as an estimator: train the pairs, compute paired gains.

For every head a single-task model per seed; for every pair (source, target) with the target a
main task, one model per seed trained on both (one model serves both directions when both are
main tasks; a non-main source is an auxiliary: only the target selects the best epoch). The gains
and their Student t intervals are those of `taskscout.affinity.measured` (this file only trains
and tabulates; the arithmetic lives there).

`selection` says which epoch of a pair model gives a task's loss (see `loss_table`): "own" (the
default, as the search reads its models) takes the task's own best epoch; "joint" penalises a task
whose partner peaks at another epoch.

Inside `taskscout search` the single and pairs phases produce the same rows; there the measured
result is `EstimatorResult("measured", <affinity rows>, <compute of those phases>)` and nothing is
trained twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from taskscout.affinity.base import (
    AffinityEstimator,
    AffinityProblem,
    Compute,
    EstimatorResult,
    register_estimator,
)
from taskscout.affinity.measured import LOSS_COLUMNS, group_scores, measured_affinity


def own_best_loss(result: Any, head: int, name: str) -> float:
    """Head `head` (named `name`) of a trainer result at its own best epoch: its lowest finite
    validation loss over the model's epochs, as the search reads every model
    (`search.tables.losses_frame`); its loss at the model's joint best epoch when the result
    kept no validation curve for it."""
    curves = result.curves
    if curves is not None and len(curves) and {"task", "split", "loss"} <= set(curves.columns):
        own = curves.loc[(curves["task"] == name) & (curves["split"] == "val"), "loss"].astype(float)
        own = own[np.isfinite(own)]
        if len(own):
            return float(own.min())
    return float(result.loss["val"][head])


def loss_table(results: Sequence, problem: AffinityProblem, *, selection: str = "own") -> pd.DataFrame:
    """The `measured.LOSS_COLUMNS` table of trainer results: one row per (model, main task).

    `selection="own"`: the task's lowest validation loss over the model's epochs (its own best
    epoch), as the search reads its models (`search.tables.losses_frame`). `"joint"`: the task's
    validation loss at its model's best epoch (lowest summed loss of the model's main tasks). For
    a single-task model the two agree.
    """
    if selection not in ("joint", "own"):
        raise ValueError(f"selection must be 'joint' or 'own'; got {selection!r}")
    names = problem.names
    main = set(problem.main)
    rows = []
    for r in results:
        tasks = tuple(names[t] for t in r.plan.targets if t in r.plan.main)
        aux = tuple(names[t] for t in r.plan.targets if t not in r.plan.main)
        for t in r.plan.main:
            if t in main or len(r.plan.targets) == 1:
                loss = float(r.loss["val"][t]) if selection == "joint" else own_best_loss(r, t, names[t])
                rows.append((tasks, aux, int(r.plan.branch_layer), int(r.plan.seed), names[t], loss))
    return pd.DataFrame(rows, columns=list(LOSS_COLUMNS))


def single_curves(results: Sequence, problem: AffinityProblem) -> pd.DataFrame:
    """Learning curves of the single-task models: task, seed, epoch, split, loss."""
    parts = []
    for r in results:
        if len(r.plan.targets) == 1:
            c = r.curves.copy()
            c.insert(1, "seed", int(r.plan.seed))
            parts.append(c[["task", "seed", "epoch", "split", "loss"]])
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["task", "seed", "epoch", "split", "loss"])


def pair_plans(problem: AffinityProblem, seeds: Sequence[int]) -> list:
    """Single-task plans for every head and pair plans for every (source, main target), per seed."""
    from taskscout.training import ModelPlan

    depth = problem.model.depth
    main = set(problem.main)
    plans = [ModelPlan(targets=(h,), main=(h,), seed=s, branch_layer=depth) for s in seeds for h in range(len(problem.heads))]
    pairs = sorted({tuple(sorted((s, t))) for s, t in problem.ordered_pairs()})
    for s in seeds:
        for a, b in pairs:
            if a in main and b in main:
                plans.append(ModelPlan(targets=(a, b), main=(a, b), seed=s, branch_layer=depth))
            else:
                target, source = (a, b) if a in main else (b, a)
                plans.append(ModelPlan(targets=(target, source), main=(target,), seed=s, branch_layer=depth))
    return plans


@register_estimator
class MeasuredEstimator(AffinityEstimator):
    """Pairwise gains from trained pairs, paired per seed, with Student t intervals."""

    name = "measured"

    def __init__(self, *, stack_size: int = 64, selection: str = "own") -> None:
        self.stack_size = stack_size
        self.selection = selection

    def estimate(self, problem: AffinityProblem, *, progress: Callable[[int], None] | None = None) -> EstimatorResult:
        from taskscout.training import train_models

        plans = pair_plans(problem, problem.seeds)
        start = time.perf_counter()
        results = train_models(problem.X, problem.Y, problem.heads, problem.split, plans, model=problem.model,
                               training=problem.training, device=problem.device, progress=progress,
                               stack_size=self.stack_size)
        seconds = time.perf_counter() - start
        losses = loss_table(results, problem, selection=self.selection)
        depth = problem.model.depth
        rows = measured_affinity(losses, full_layer=depth)
        compute = Compute(len(results), sum(r.epochs_run for r in results), seconds)
        return EstimatorResult(self.name, rows, compute, tables={
            "losses": losses, "group_scores": group_scores(losses, full_layer=depth, order=problem.names),
            "single_curves": single_curves(results, problem),
        })
