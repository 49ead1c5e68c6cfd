"""Sampled-subset affinities: what each task does to each other task, from random task subsets.

After Li, Ju, Sharma and Zhang (KDD 2023): with many tasks, all pairs (T(T-1)/2 models per seed)
cost too much and, with small tasks, carry little signal; larger groups carry it. So n random
subsets of k tasks each are trained (each with every seed), n growing linearly in T, and

    d(j -> i) = mean norm_loss_i over subsets holding i without j - mean over subsets holding i and j

where norm_loss_i is task i's loss in the subset over its single-task loss, paired per seed, then
averaged over seeds. With subsets drawn uniformly among the k-subsets, under the additive model
norm_loss_i(S) = 1 - sum_{j in S, j != i} a(j -> i) the contrast has expectation
a(j -> i) - A_i'/(T - 2), A_i' the sum of i's other partners' effects (holding j leaves one seat
fewer for the others). The level A_i = sum_j a(j -> i) follows from i's mean normalised loss over
its subsets, E = 1 - (k - 1) / (T - 1) A_i, so

    gain(j -> i) = ((T - 2) d(j -> i) + A_i) / (T - 1)

estimates a(j -> i), in the units of a measured pairwise gain (i's gain with j as its only
partner, under that model). Intervals: percentile bootstrap over subsets (`n_boot` resamples of
the n subsets with replacement), the same resamples for every pair, so sums over a group have
intervals too (`SampledAffinity.group_norm_loss`).

Design (`subset_design`): n = min(SUBSETS_PER_TASK * T, max_models // S) subsets, and k the
smallest size at which an average pair shares PAIR_COVERAGE subsets, k(k - 1) >= PAIR_COVERAGE
T(T - 1) / n (at least 2, at most T): with n = 4T that is k(k - 1) >= T - 1, about sqrt(T)
(11 at 100 tasks, 13 at 139): models grow linearly in T and each pair is still seen.

This module is a library over tables (subset observations); the search package plans and trains
the subsets.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from taskscout import rundir
from taskscout.device import one_blas_thread
from taskscout.errors import DataError, SpecError

SUBSETS_PER_TASK = 4  # n = 4 T subsets (each trained with every seed): models linear in T
PAIR_COVERAGE = 4  # subsets an average pair of tasks shares; k is chosen to give at least this
METHOD = "sampled"  # the `method` of its affinity.csv rows


@dataclass(frozen=True)
class SubsetDesign:
    """How many random subsets of which size, and the subsets themselves (study order inside)."""

    tasks: tuple[str, ...]
    size: int
    subsets: tuple[tuple[str, ...], ...]

    def to_dict(self) -> dict:
        return {"tasks": list(self.tasks), "size": self.size, "subsets": [list(s) for s in self.subsets]}

    @classmethod
    def from_dict(cls, d: dict) -> SubsetDesign:
        return cls(tuple(d["tasks"]), int(d["size"]), tuple(tuple(s) for s in d["subsets"]))


def design_counts(n_tasks: int, *, seeds: int, max_models: int | None = None) -> tuple[int, int]:
    """(n subsets, size k) for `n_tasks` tasks trained with `seeds` seeds each, within
    `max_models` subset models when given (module docstring)."""
    if n_tasks < 3:
        raise SpecError(f"sampled subsets need at least 3 tasks. Got {n_tasks} instead.")
    if seeds < 1:
        raise SpecError(f"seeds must be an int >= 1. Got {seeds!r} instead.")
    n = SUBSETS_PER_TASK * n_tasks
    if max_models is not None:
        n = min(n, max_models // seeds)
    if n < 1:
        raise SpecError(f"a budget of {max_models} models cannot train one subset with {seeds} seeds; raise search.max_models")
    need = PAIR_COVERAGE * n_tasks * (n_tasks - 1) / n
    k = 2
    while k < n_tasks and k * (k - 1) < need:
        k += 1
    return n, k


def subset_design(tasks: Sequence[str], *, seeds: int, max_models: int | None = None, seed: int = 0) -> SubsetDesign:
    """The subsets to train: `design_counts` of them, each k tasks drawn uniformly without
    replacement (seeded), distinct where the space allows."""
    tasks = tuple(tasks)
    n, k = design_counts(len(tasks), seeds=seeds, max_models=max_models)
    rng = np.random.default_rng(seed)
    space = math.comb(len(tasks), k)
    chosen: list[tuple[str, ...]] = []
    seen: set[tuple[int, ...]] = set()
    while len(chosen) < min(n, space):
        pick = tuple(sorted(int(x) for x in rng.choice(len(tasks), size=k, replace=False)))
        if pick in seen:
            continue
        seen.add(pick)
        chosen.append(tuple(tasks[x] for x in pick))
    return SubsetDesign(tasks, k, tuple(chosen))


@dataclass(frozen=True, eq=False)
class SampledAffinity:
    """gain(j -> i) estimated from sampled subsets, with bootstrap draws for intervals.

    `gain[j, i]` is the estimate for source j and target i (NaN on the diagonal and where i and j
    never shared a subset); `draws[b, j, i]` the same from bootstrap resample b; `together[j, i]`
    the number of subsets holding both.
    """

    tasks: tuple[str, ...]
    gain: np.ndarray
    draws: np.ndarray
    together: np.ndarray
    level: float = 0.95

    def interval(self) -> tuple[np.ndarray, np.ndarray]:
        """Percentile bootstrap interval of every gain (low, high)."""
        return _quantiles(self.draws, (1 - self.level) / 2)

    def affinity_rows(self) -> pd.DataFrame:
        """`affinity.csv` rows, method "sampled"; `n_seeds` holds the subsets sharing the pair."""
        low, high = self.interval()
        rows = [(s, t, float(self.gain[j, i]), float(low[j, i]), float(high[j, i]), int(self.together[j, i]), METHOD)
                for j, s in enumerate(self.tasks) for i, t in enumerate(self.tasks)
                if i != j and self.together[j, i] > 0]
        return pd.DataFrame(rows, columns=list(rundir.AFFINITY_COLUMNS))

    def symmetric(self) -> np.ndarray:
        """(gain[j, i] + gain[i, j]) / 2, zero where unknown and on the diagonal: the graph to cluster."""
        g = np.nan_to_num(self.gain, nan=0.0)
        s = (g + g.T) / 2
        np.fill_diagonal(s, 0.0)
        return s

    def group_norm_loss(self, group: Sequence[str], task: str) -> tuple[float, float, float, int]:
        """Task's predicted normalised loss in `group` under the additive model, 1 - sum of its
        partners' gains, with the bootstrap interval of that sum and the fewest subsets any of
        its pairs shared (mean, low, high, n)."""
        index = {t: k for k, t in enumerate(self.tasks)}
        i = index[task]
        js = [index[t] for t in group if t != task]
        if not js:
            return 1.0, 1.0, 1.0, 0
        mean = 1.0 - float(np.sum(self.gain[js, i]))
        sums = 1.0 - np.sum(self.draws[:, js, i], axis=1)
        low, high = _quantiles(sums, (1 - self.level) / 2)
        return mean, float(low), float(high), int(np.min(self.together[js, i]))


def _quantiles(draws: np.ndarray, q: float) -> tuple[np.ndarray, np.ndarray]:
    """The q and 1 - q quantiles over the first axis, ignoring NaN; NaN where every draw is NaN
    (a pair that never shared a subset), without numpy's all-NaN warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanquantile(draws, q, axis=0), np.nanquantile(draws, 1 - q, axis=0)


def _membership(observations: pd.DataFrame, tasks: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per subset (rows) and task (columns): membership and the mean normalised loss over seeds."""
    missing = [c for c in ("group", "task", "norm_loss") if c not in observations.columns]
    if missing:
        raise DataError(f"subset observations lack columns {missing}; expected group, task, seed, norm_loss")
    index = {t: k for k, t in enumerate(tasks)}
    obs = observations[np.isfinite(observations["norm_loss"].astype(float))]
    means = obs.groupby(["group", "task"], sort=True)["norm_loss"].mean()
    groups = sorted({g for g in means.index.get_level_values(0) if len(str(g).split(rundir.GROUP_SEP)) >= 2})
    row = {g: r for r, g in enumerate(groups)}
    member = np.zeros((len(groups), len(tasks)), bool)
    for g in groups:
        for t in str(g).split(rundir.GROUP_SEP):
            if t in index:
                member[row[g], index[t]] = True
    loss = np.full(member.shape, np.nan)
    for (g, t), v in means.items():
        if g in row and t in index:
            loss[row[g], index[t]] = float(v)
    return member & np.isfinite(loss), loss


def _estimate(member: np.ndarray, loss: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """gain[j, i] from subsets weighted by `weight` (bootstrap counts), and together[j, i]."""
    n_tasks = member.shape[1]
    p = member.astype(float) * weight[:, None]
    lw = np.where(member, loss, 0.0) * weight[:, None]
    together = member.T.astype(float) @ p  # [j, i]: weighted subsets holding both
    with_sum = member.T.astype(float) @ lw  # [j, i]: sum of i's loss over them
    count_i, sum_i = p.sum(axis=0), lw.sum(axis=0)
    size = (member.sum(axis=1).astype(float) * weight) @ member / np.maximum(count_i, 1e-12)  # mean k of i's subsets
    with np.errstate(invalid="ignore", divide="ignore"):
        d = (sum_i - with_sum) / (count_i - together) - with_sum / together
        level = (1.0 - sum_i / count_i) * (n_tasks - 1) / np.maximum(size - 1, 1e-12)
        gain = ((n_tasks - 2) * d + level[None, :]) / (n_tasks - 1)
    gain[(together <= 0) | ((count_i - together) <= 0)] = np.nan
    np.fill_diagonal(gain, np.nan)
    return gain, together


@one_blas_thread()
def sampled_affinity(
    observations: pd.DataFrame,
    tasks: Sequence[str],
    *,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> SampledAffinity:
    """The sampled-subset affinities of `tasks` from subset observations (columns group, task,
    seed, norm_loss; single-task rows are ignored), with percentile bootstrap draws over subsets."""
    tasks = tuple(tasks)
    if len(tasks) < 3:
        raise SpecError(f"sampled-subset affinities need at least 3 tasks. Got {len(tasks)} instead.")
    if not isinstance(n_boot, int) or n_boot < 1:
        raise SpecError(f"n_boot must be an int >= 1. Got {n_boot!r} instead.")
    member, loss = _membership(observations, tasks)
    if len(member) < 2:
        raise DataError(f"{len(member)} trained subset(s) of 2+ tasks; sampled affinities need at least 2")
    gain, together = _estimate(member, loss, np.ones(len(member)))
    rng = np.random.default_rng(seed)
    draws = np.empty((n_boot, len(tasks), len(tasks)))
    for b in range(n_boot):
        weight = np.bincount(rng.integers(0, len(member), len(member)), minlength=len(member)).astype(float)
        draws[b] = _estimate(member, loss, weight)[0]
    return SampledAffinity(tasks, gain, draws, together.astype(int), level)
