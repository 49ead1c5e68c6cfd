"""Helpers shared by the grouping tests: score tables, a brute-force solver, planted affinities."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from taskscout import rundir
from taskscout.grouping import TaskScore


def _score(c: float, hw: float, source: str = "measured") -> TaskScore:
    return TaskScore(c, c - hw, c + hw, source, 3)


def _random_table(n_tasks: int, seed: int, n_groups: int = 9) -> tuple[tuple[str, ...], dict]:
    """A sparse random table of group -> task -> score; about half the memberships are real."""
    rng = np.random.default_rng(seed)
    tasks = tuple(f"t{i}" for i in range(n_tasks))
    all_groups = [g for k in range(2, n_tasks + 1) for g in itertools.combinations(tasks, k)]
    picked = rng.choice(len(all_groups), size=min(n_groups, len(all_groups)), replace=False)
    table = {}
    for gi in sorted(picked):
        g = all_groups[gi]
        table[g] = {t: _score(float(rng.uniform(0.5, 1.1)), float(rng.uniform(0.01, 0.15))) for t in g}
    return tasks, table


def _lookup(table: dict):
    return lambda group, task: table.get(tuple(group), {}).get(task)


def _brute_force(tasks, table, budget, only_real):
    """Optimal total by enumerating every set of at most `budget` networks (the definition itself)."""
    multi = [g for g, s in table.items() if all(x.real or not only_real for x in s.values())]
    networks = multi + [(t,) for t in tasks]
    best = (math.inf, 0)
    for k in range(1, budget + 1):
        for chosen in itertools.combinations(networks, k):
            total = 0.0
            for t in tasks:
                costs = [1.0 if len(g) == 1 else table[g][t].norm_loss for g in chosen if t in g]
                if not costs:
                    break
                total += min(costs)
            else:
                if total < best[0] - 1e-9:
                    best = (total, k)
    return best


def _affinity(rows):
    return pd.DataFrame(rows, columns=list(rundir.AFFINITY_COLUMNS))


def _planted_affinity(groups, inside=0.15, across=0.0, hw=0.05, extra=()):
    """Measured pairwise gains: `inside` within a group, `across` between groups, +-hw."""
    tasks = [t for g in groups for t in g]
    member = {t: i for i, g in enumerate(groups) for t in g}
    rows = []
    for s, t in itertools.permutations(tasks, 2):
        gain = inside if member[s] == member[t] else across
        rows.append((s, t, gain, gain - hw, gain + hw, 3, "measured"))
    rows.extend(extra)
    return tasks, _affinity(rows)


def _observations(rows):
    """Surrogate observations: (group, task, [norm loss per seed 0, 1, 2])."""
    return pd.DataFrame([(g, t, s, v) for g, t, vals in rows for s, v in enumerate(vals)],
                        columns=list(rundir.SUBSET_OBSERVATION_COLUMNS))


def _measured_pairs(tasks, helped, norm_in=0.85, norm_out=1.10, hw=0.05):
    """group_scores.csv rows: every task alone, every pair (norm_in inside `helped`, else norm_out)."""
    rows = [(t, t, 1.0, 1.0, 1.0, 3, "measured") for t in tasks]
    for a, b in itertools.combinations(tasks, 2):
        v = norm_in if {a, b} <= set(helped) else norm_out
        rows += [(f"{a}|{b}", t, v, v - hw, v + hw, 3, "measured") for t in (a, b)]
    return pd.DataFrame(rows, columns=list(rundir.GROUP_SCORE_COLUMNS))


def _pair_observations(tasks, helped, norm_in=0.85, norm_out=1.10):
    rows = [(t, t, [1.0, 1.0, 1.0]) for t in tasks]
    for a, b in itertools.combinations(tasks, 2):
        v = norm_in if {a, b} <= set(helped) else norm_out
        rows += [(f"{a}|{b}", t, [v - 0.02, v, v + 0.02]) for t in (a, b)]
    return _observations(rows)
