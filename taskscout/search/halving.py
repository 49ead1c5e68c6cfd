"""Successive halving in the aux and depth phases: one seed first, the other seeds only for the
candidates whose gain could still be real.

A candidate is a model of a phase without its seed: its main tasks, auxiliaries and branch layer.
Its gain on main task i at seed s is (L_i[alone, s] - L_i[candidate, s]) / L_i[alone, s], paired
per seed as `affinity.measured` pairs them, and the search calls a gain real and positive when the
95% Student-t interval over the S seeds lies above zero: mean m > t s / sqrt(S), with s the sample
standard deviation and t = t_{0.975, S-1}.

The rule. Of S values with mean m and sample standard deviation s, none lies further below m than
s (S - 1) / sqrt(S) (Samuelson's inequality). So every per-seed gain of a candidate with a real
positive gain exceeds s (t - (S - 1)) / sqrt(S). For S <= 4, t >= S - 1 and that bound is >= 0
whatever s is: a candidate whose first-seed gain is <= 0 on every one of its main tasks can never
end with a real positive gain on any of them, and gets no further seeds. For S >= 5 the bound is
negative and scales with s, which is not known before the other seeds are trained: s is bounded by
SD_MARGIN times the largest seed standard deviation of the pairs phase's gains (measured on every
seed), and without pairs nothing is dropped. A candidate whose first-seed gain cannot be computed
(no single-task loss, a non-finite loss) keeps every seed.

The seeds are the search's own, in order, and training is deterministic per seed: a candidate that
keeps its seeds is trained exactly as a full run trains it, so every real positive gain a full run
finds is found with the same interval (docs/guide/search-cost.md has the measured recall). Dropped
candidates stay in the tables with their one seed: an interval of (-inf, inf), never called real.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from taskscout.affinity.measured import paired_with_alone, single_task_losses
from taskscout.search.plan import PlannedModel

HALVED_PHASES: tuple[str, ...] = ("aux", "depth")
# S >= 5 only: how far above the pairs phase's largest seed standard deviation a candidate's may be.
SD_MARGIN = 1.5


@dataclass(frozen=True)
class Rungs:
    """A phase's models split by successive halving."""

    first: tuple[PlannedModel, ...]  # every candidate on the first seed
    later: tuple[PlannedModel, ...]  # the other seeds of the candidates that are kept
    candidates: int
    dropped: int  # candidates left at one seed

    @property
    def note(self) -> str:
        if not self.dropped:
            return ""
        return (f"successive halving: {self.dropped} of {self.candidates} candidates lost on their first seed and "
                f"were not trained further (no real gain possible; --set search.halving=false trains every seed)")


def gain_floor(seeds: int, sd_bound: float | None) -> float | None:
    """The first-seed gain at or below which a candidate cannot end with a real positive gain over
    `seeds` seeds (module docstring); None when no such floor is known (nothing is dropped)."""
    if seeds < 2:
        return None
    from scipy import stats  # here, not at the top: scipy.stats takes a second to import

    t = float(stats.t.ppf(0.975, seeds - 1))
    if t >= seeds - 1:
        return 0.0
    if sd_bound is None or not math.isfinite(sd_bound):
        return None
    return -sd_bound * (seeds - 1 - t) / math.sqrt(seeds)


def pairs_sd_bound(losses: pd.DataFrame) -> float | None:
    """SD_MARGIN times the largest seed standard deviation of a pair's gain on one of its tasks
    (models of two main tasks, whole trunk shared or not), or None without two seeds of any."""
    rows = paired_with_alone(losses, sizes=(2,))
    if rows.empty:
        return None
    gains = (rows["alone"] - rows["loss"]) / rows["alone"]
    sds = gains.groupby([rows["tasks"].map(tuple), rows["task"]]).std(ddof=1).dropna()
    return float(SD_MARGIN * sds.max()) if len(sds) else None


def split_rungs(models: Sequence[PlannedModel], losses: pd.DataFrame, seeds: Sequence[int]) -> Rungs:
    """The first rung of `models` (seed seeds[0]) and, from the first-seed losses in `losses`
    (`affinity.measured.LOSS_COLUMNS`), the later seeds of the candidates that are kept."""
    first_seed = int(seeds[0])
    first = tuple(m for m in models if m.seed == first_seed)
    floor = gain_floor(len(seeds), pairs_sd_bound(losses))
    alone = single_task_losses(losses)
    got = {(tuple(r.tasks), tuple(r.aux), int(r.branch_layer), r.task): float(r.loss)
           for r in losses.itertuples(index=False) if int(r.seed) == first_seed}

    def kept(m: PlannedModel) -> bool:
        if floor is None:
            return True
        for task in m.tasks:
            base = alone.get(task, {}).get(first_seed, math.nan)
            loss = got.get((m.tasks, m.aux, m.branch_layer, task), math.nan)
            if not (np.isfinite(base) and base != 0 and np.isfinite(loss)) or (base - loss) / base > floor:
                return True
        return False

    keep = {_candidate(m) for m in first if kept(m)}
    later = tuple(m for m in models if m.seed != first_seed and _candidate(m) in keep)
    return Rungs(first, later, len(first), len(first) - len(keep))


def _candidate(m: PlannedModel) -> tuple:
    return (m.phase, m.tasks, m.aux, m.branch_layer)
