"""Measured transfer: paired per-seed gains from trained models, with Student-t intervals.

Input is a long table of validation losses, one row per (model, main task of the model):

    tasks          tuple of the model's main tasks, in study order, e.g. ("a", "b")
    aux            tuple of the model's auxiliary tasks, () for none
    branch_layer   shared trunk layers of the model (L = the whole trunk)
    seed           the model's seed; models compared with each other share it
    task           a main task of the model
    loss           that task's validation loss at the model's best epoch

The baseline of task i is the model with tasks == (i,) and no auxiliaries ("alone"). For a model M
that contains i, per seed s that both were trained with:

    gain_s(M -> i)      = (L_i[alone, s] - L_i[M, s]) / L_i[alone, s]     (> 0: M's partners help i)
    norm_loss_s(M, i)   = L_i[M, s] / L_i[alone, s]                       (= 1 - gain)

Over the S paired seeds: the mean, and the 95% Student-t interval mean +- t(0.975, S-1) * sd / sqrt(S)
with the sample standard deviation (ddof = 1). With S = 1 the interval is (-inf, inf): one seed can
never show a real gain. A gain is real when its interval excludes zero.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from taskscout.rundir import AFFINITY_COLUMNS, DEPTH_COLUMNS, GROUP_SCORE_COLUMNS, group_key

LOSS_COLUMNS = ("tasks", "aux", "branch_layer", "seed", "task", "loss")
METHOD = "measured"


@dataclass(frozen=True)
class Interval:
    """A mean over seeds with its 95% Student-t interval."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def real(self) -> bool:
        """The interval excludes zero (a real gain or a real loss)."""
        return self.low > 0 or self.high < 0


def t_interval(values: Iterable[float], *, level: float = 0.95) -> Interval:
    """Mean and Student-t interval of `values` (non-finite values are dropped first).

    One value gives (-inf, inf); none gives NaNs with n = 0."""
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    n = len(v)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(v.mean())
    if n == 1:
        return Interval(mean, -math.inf, math.inf, 1)
    from scipy import stats  # here, not at the top: scipy.stats takes a second to import

    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return Interval(mean, mean - half, mean + half, n)


def _paired(alone: Mapping[int, float], other: Mapping[int, float]) -> list[int]:
    return sorted(s for s in other if s in alone and math.isfinite(alone[s]) and alone[s] != 0
                  and math.isfinite(other[s]))


def paired_gains(alone: Mapping[int, float], together: Mapping[int, float]) -> dict[int, float]:
    """Per seed present in both: (L_alone - L_together) / L_alone."""
    return {s: (alone[s] - together[s]) / alone[s] for s in _paired(alone, together)}


def paired_norm_losses(alone: Mapping[int, float], together: Mapping[int, float]) -> dict[int, float]:
    """Per seed present in both: L_together / L_alone."""
    return {s: together[s] / alone[s] for s in _paired(alone, together)}


def gain_interval(alone: Mapping[int, float], together: Mapping[int, float]) -> Interval:
    """Mean paired gain over the shared seeds with its Student-t interval."""
    return t_interval(paired_gains(alone, together).values())


# ---------------------------------------------------------------- tables


def _check(losses: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in LOSS_COLUMNS if c not in losses.columns]
    if missing:
        raise ValueError(f"the loss table lacks columns {missing}; expected {list(LOSS_COLUMNS)}")
    return losses


def single_task_losses(losses: pd.DataFrame) -> dict[str, dict[int, float]]:
    """task -> seed -> loss of the task trained alone (tasks == (task,), no auxiliaries)."""
    _check(losses)
    out: dict[str, dict[int, float]] = {}
    for row in losses.itertuples(index=False):
        if len(row.tasks) == 1 and len(row.aux) == 0 and row.task == row.tasks[0]:
            out.setdefault(row.task, {})[int(row.seed)] = float(row.loss)
    return out


def paired_with_alone(losses: pd.DataFrame, *, sizes: Sequence[int] | None = None) -> pd.DataFrame:
    """The rows of a `LOSS_COLUMNS` table from models of two or more main tasks without
    auxiliaries (of `sizes` tasks when given), each with its task's single-task loss on the same
    seed: columns tasks, task, seed, loss, alone. Rows with no usable single-task loss (missing,
    not finite, zero) or a non-finite loss are dropped: the pairing of `paired_gains`, row by row."""
    single = single_task_losses(losses)
    rows = []
    for r in losses.itertuples(index=False):
        n = len(r.tasks)
        if n < 2 or len(r.aux) or (sizes is not None and n not in sizes):
            continue
        alone = single.get(r.task, {})
        if _paired(alone, {int(r.seed): float(r.loss)}):
            rows.append((tuple(r.tasks), r.task, int(r.seed), float(r.loss), alone[int(r.seed)]))
    return pd.DataFrame(rows, columns=["tasks", "task", "seed", "loss", "alone"])


def _models(losses: pd.DataFrame, keep) -> dict[tuple, dict[str, dict[int, float]]]:
    """(tasks, aux, branch_layer) -> task -> seed -> loss, for the models where keep(tasks, aux, layer)."""
    out: dict[tuple, dict[str, dict[int, float]]] = {}
    for row in losses.itertuples(index=False):
        tasks, aux = tuple(row.tasks), tuple(row.aux)
        if keep(tasks, aux, int(row.branch_layer)):
            out.setdefault((tasks, aux, int(row.branch_layer)), {}).setdefault(row.task, {})[int(row.seed)] = float(row.loss)
    return out


def measured_affinity(losses: pd.DataFrame, *, full_layer: int) -> pd.DataFrame:
    """affinity.csv rows (method "measured"): for each two-task model at `full_layer` without
    auxiliaries, gain(j -> i) and gain(i -> j); for each one-task model with one auxiliary a,
    gain(a -> i). Rows without a single paired seed are left out."""
    _check(losses)
    alone = single_task_losses(losses)
    rows = []
    pairs = _models(losses, lambda t, a, b: b == full_layer and ((len(t) == 2 and not a) or (len(t) == 1 and len(a) == 1)))
    for (tasks, aux, _), per_task in pairs.items():
        for target in tasks:
            source = aux[0] if aux else next(t for t in tasks if t != target)
            iv = gain_interval(alone.get(target, {}), per_task.get(target, {}))
            if iv.n:
                rows.append((source, target, iv.mean, iv.low, iv.high, iv.n, METHOD))
    return pd.DataFrame(rows, columns=list(AFFINITY_COLUMNS))


def group_scores(losses: pd.DataFrame, *, full_layer: int, order: Sequence[str]) -> pd.DataFrame:
    """group_scores.csv rows (source "measured"): every task alone (norm_loss 1, interval [1, 1]) and
    every model of two or more tasks at `full_layer` without auxiliaries (each of its tasks'
    normalised loss L_i[group] / L_i[alone] over the paired seeds)."""
    _check(losses)
    alone = single_task_losses(losses)
    rows = [(task, task, 1.0, 1.0, 1.0, len(seeds), METHOD) for task, seeds in alone.items()]
    groups = _models(losses, lambda t, a, b: b == full_layer and len(t) >= 2 and not a)
    for (tasks, _, _), per_task in groups.items():
        name = group_key(tasks, order)
        for task in tasks:
            iv = t_interval(paired_norm_losses(alone.get(task, {}), per_task.get(task, {})).values())
            if iv.n:
                rows.append((name, task, iv.mean, iv.low, iv.high, iv.n, METHOD))
    frame = pd.DataFrame(rows, columns=list(GROUP_SCORE_COLUMNS))
    rank = {t: i for i, t in enumerate(order)}
    frame["_n"] = frame["group"].str.count(r"\|")
    frame["_t"] = frame["task"].map(lambda t: rank.get(t, len(rank)))
    return frame.sort_values(["_n", "group", "_t"], kind="stable").drop(columns=["_n", "_t"]).reset_index(drop=True)


def depth_gains(losses: pd.DataFrame, *, order: Sequence[str]) -> pd.DataFrame:
    """depth.csv rows: for every two-task model without auxiliaries trained at more than one branch
    layer, each task's gain over training alone at each of those layers."""
    _check(losses)
    alone = single_task_losses(losses)
    models = _models(losses, lambda t, a, b: len(t) == 2 and not a)
    layers: dict[tuple, list[int]] = {}
    for tasks, _, layer in models:
        layers.setdefault(tasks, []).append(layer)
    rows = []
    for tasks, found in layers.items():
        if len(found) < 2:
            continue
        for layer in sorted(found):
            per_task = models[(tasks, (), layer)]
            for task in tasks:
                iv = gain_interval(alone.get(task, {}), per_task.get(task, {}))
                if iv.n:
                    rows.append((group_key(tasks, order), layer, task, iv.mean, iv.low, iv.high, iv.n))
    return pd.DataFrame(rows, columns=list(DEPTH_COLUMNS))


def positive_pairs(affinity: pd.DataFrame, tasks: Sequence[str]) -> list[tuple[str, str]]:
    """The pairs of `tasks` (in study order) with a real positive gain (ci_low > 0) in either direction."""
    among = set(tasks)
    found = set()
    for row in affinity.itertuples(index=False):
        if row.source in among and row.target in among and row.ci_low > 0:
            found.add(frozenset((row.source, row.target)))
    rank = {t: i for i, t in enumerate(tasks)}
    return sorted((tuple(sorted(p, key=rank.__getitem__)) for p in found), key=lambda p: (rank[p[0]], rank[p[1]]))
