"""Which models each phase trains, and the stable key that identifies a model across runs.

A model is identified by its phase, its main tasks (study order), its auxiliaries, its seed and its
branch layer. The key is that tuple written as compact JSON, e.g. `["pairs",["a","b"],[],0,2]`, so
it is unambiguous whatever the task names contain, and the same plan on the same spec always gives
the same keys: that is what makes a search resumable (a key with a COMPLETE trial is never trained
again).

Phases (models of single, pairs and aux share the whole trunk: branch_layer = L):
- single: every main task alone, once per seed (the baselines every gain is measured against);
- pairs: every pair of main tasks, once per seed (one model serves both directions), and one model
  with all main tasks per seed (the all-together baseline; with two main tasks it is the pair);
- aux: every main task with each screened auxiliary that serves it, once per seed;
- depth: every pair with a real gain in either direction, at each branch layer 0..L-1 (L is the
  pairs phase itself).

Many tasks: when the pairs phase would train more than `search.max_models` models (all pairs
and the all-together model, times the seeds), or, with a time limit, would take more than half
the time left after the single phase (`pairs_fit_in_time`), it trains sampled task subsets instead
(`plan_sampled`, models of phase "sampled"): n = 4T random subsets of k tasks (fewer when
max_models // seeds is smaller, then larger k; `affinity.sampled.subset_design`) plus the
all-together model, each with every seed. Like every model they go through the storage, so
distributed workers share them and a rerun reuses them.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from taskscout.affinity.sampled import subset_design
from taskscout.spec import StudySpec

PHASE_ORDER: tuple[str, ...] = ("single", "pairs", "aux", "depth")
# The selection stage's models (search/selection.py) are stored under phase "selection-ROWS"
# (ROWS: how their held-out rows were chosen), apart from the measured phases' models.
SELECTION_PHASE = "selection"
SEED_STRIDE = 100  # model seeds of study seed k are k*100 .. k*100 + seeds - 1 (seeds <= 100)


@dataclass(frozen=True)
class PlannedModel:
    """One model a phase wants trained."""

    phase: str
    tasks: tuple[str, ...]  # main tasks, study order; their summed val loss selects the best epoch
    aux: tuple[str, ...]  # auxiliary task names trained alongside
    seed: int
    branch_layer: int

    @property
    def key(self) -> str:
        """Stable identifier of this model (compact JSON of phase, tasks, aux, seed, branch layer)."""
        return json.dumps([self.phase, list(self.tasks), list(self.aux), self.seed, self.branch_layer],
                          separators=(",", ":"))

    def attrs(self) -> dict[str, Any]:
        """The Optuna user attributes describing this model (what `from_attrs` reads back): the key,
        the phase and the rest in one attribute ("model": [tasks, aux, seed, branch_layer]), as
        each attribute costs the storage a write of its own."""
        return {"key": self.key, "phase": self.phase,
                "model": [list(self.tasks), list(self.aux), self.seed, self.branch_layer]}

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> PlannedModel:
        tasks, aux, seed, layer = attrs["model"]
        return cls(str(attrs["phase"]), tuple(tasks), tuple(aux), int(seed), int(layer))


def model_seeds(spec: StudySpec) -> tuple[int, ...]:
    """The S seeds every comparison of the search is paired on (S = spec.training.seeds)."""
    return tuple(spec.seed * SEED_STRIDE + s for s in range(spec.training.seeds))


def plan_single(main: Sequence[str], seeds: Sequence[int], depth: int) -> list[PlannedModel]:
    return [PlannedModel("single", (t,), (), s, depth) for s in seeds for t in main]


def plan_pairs(main: Sequence[str], seeds: Sequence[int], depth: int) -> list[PlannedModel]:
    groups = [tuple(p) for p in itertools.combinations(main, 2)]
    if len(main) > 2:
        groups.append(tuple(main))
    return [PlannedModel("pairs", g, (), s, depth) for s in seeds for g in groups]


def pair_models(n_tasks: int, seeds: int) -> int:
    """Models the pairs phase trains on `n_tasks` main tasks: all pairs and all-together, per seed."""
    pairs = n_tasks * (n_tasks - 1) // 2
    return (pairs + (1 if n_tasks > 2 else 0)) * seeds


def uses_sampled(spec: StudySpec, user_attrs: Mapping[str, Any] | None = None) -> bool:
    """Whether the pairs phase trains sampled subsets: all pairs x seeds exceed search.max_models,
    or the study's `user_attrs` record that the time limit chose them (`pairs_fit_in_time`)."""
    if len(spec.main_tasks) < 3:
        return False
    by_time = bool(user_attrs) and (user_attrs or {}).get(PAIRS_PLAN_ATTR, {}).get("plan") == "sampled"
    return by_time or pair_models(len(spec.main_tasks), spec.training.seeds) > spec.search.max_models


# The time limit's choice of plan for the pairs phase, kept in the study's user attributes when it
# is first made (before the pairs phase starts), so that a resumed search plans the same models.
PAIRS_PLAN_ATTR = "pairs_plan"
PAIRS_TIME_SHARE = 0.5  # the pairs phase may take at most this share of the time left: aux, depth and selection follow


def pairs_seconds(n_tasks: int, seeds: int, single_seconds: float) -> float:
    """Estimated seconds of all pairs and all-together, per seed, from a single-task model's mean
    seconds: a model's cost grows with its labelled rows, so a pair costs about two single models
    and all-together T of them: seeds x (T (T - 1) + T) x single_seconds = seeds x T^2 x single."""
    return seeds * n_tasks * n_tasks * single_seconds


def pairs_fit_in_time(n_tasks: int, seeds: int, single_seconds: float, seconds_left: float) -> bool:
    """Whether the pairs phase is expected to take at most PAIRS_TIME_SHARE of `seconds_left`."""
    return pairs_seconds(n_tasks, seeds, single_seconds) <= PAIRS_TIME_SHARE * seconds_left


def plan_sampled(
    main: Sequence[str], seeds: Sequence[int], depth: int, *, max_models: int, seed: int = 0
) -> list[PlannedModel]:
    """Sampled subsets (module docstring) and the all-together model, each with every seed; the
    subsets are drawn from `seed` (the study seed), so every worker plans the same ones."""
    design = subset_design(main, seeds=len(seeds), max_models=max_models - len(seeds), seed=seed)
    groups = [*design.subsets, tuple(main)]
    return [PlannedModel("sampled", tuple(g), (), s, depth) for s in seeds for g in groups]


def plan_aux(
    main: Sequence[str], serves: Mapping[str, Sequence[str]], seeds: Sequence[int], depth: int
) -> list[PlannedModel]:
    """`serves` maps each screened auxiliary name to the main tasks it serves."""
    return [
        PlannedModel("aux", (t,), (name,), s, depth)
        for s in seeds for t in main for name, tasks in serves.items() if t in tasks
    ]


def plan_depth(pairs: Sequence[tuple[str, str]], seeds: Sequence[int], depth: int) -> list[PlannedModel]:
    """Each pair at every branch layer below the full trunk, deepest first."""
    return [
        PlannedModel("depth", tuple(p), (), s, b)
        for b in range(depth - 1, -1, -1) for s in seeds for p in pairs
    ]
