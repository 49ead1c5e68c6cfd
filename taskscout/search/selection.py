"""The selection stage: retrain the finalist groupings with fresh seeds and score them on held-out rows.

The candidates come from `grouping.selection_candidates` (over the run directory's tables), the rule
from `grouping.select`; this module plans and trains their networks through the same machinery as
every phase (stored models are reused, so the stage resumes) and writes selection.json.

Held-out rows (search.selection_rows):
- "crossfit" (default): the training split is cut into CROSSFIT_FOLDS folds; the k-th selection seed
  trains every candidate without fold k mod CROSSFIT_FOLDS and scores it on that fold. Those rows
  were training rows of the search's models, never used to measure a gain or to stop training,
  and the search keeps its whole validation split.
- "carve": CARVE_FRACTION of the validation split is set aside before the search starts (its
  phases never read those rows); the selection models train on the whole training split, stop on
  the rest of the validation split and are scored on the carved rows.
The test split is never read: `taskscout verify` keeps it for its own check.

Seeds: SELECTION_SEED_OFFSET + 100 * study seed + k, never among the search's (100 * study seed +
0..99) or verify's. Their number fits the budget: BUDGET_FRACTION of the models of the single and
pairs phases, spread over the distinct networks of the candidates; at least MIN_SEEDS (optional
finalists are dropped first to fit) and at most MAX_SEEDS.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from taskscout import rundir
from taskscout.grouping import select, selection_candidates_run
from taskscout.grouping.selection import RECOMMENDED, SEPARATE, TOGETHER
from taskscout.search.plan import SELECTION_PHASE, PlannedModel
from taskscout.search.problem import SearchProblem

SELECTION_SEED_OFFSET = 20_000
CROSSFIT_FOLDS = 5
CARVE_FRACTION = 0.5
BUDGET_FRACTION = 0.3
MIN_SEEDS = 3
MAX_SEEDS = 10
_TRAIN, _VAL, _TEST = 0, 1, 2


def selection_seeds(study_seed: int, n: int) -> tuple[int, ...]:
    """`n` model seeds that neither the search nor `verify` of a study with `study_seed` uses."""
    return tuple(SELECTION_SEED_OFFSET + 100 * study_seed + k for k in range(n))


def carved_rows(split: np.ndarray, study_seed: int) -> np.ndarray:
    """Boolean mask of the validation rows set aside for selection ("carve"): a seeded random
    CARVE_FRACTION of them."""
    val = np.flatnonzero(split == _VAL)
    rng = np.random.default_rng([study_seed, 18])
    picked = rng.permutation(val)[: int(round(CARVE_FRACTION * len(val)))]
    mask = np.zeros(len(split), dtype=bool)
    mask[picked] = True
    return mask


def search_split(split: np.ndarray, rows: str, study_seed: int) -> np.ndarray:
    """The split the search's phases train on: with "carve" the carved rows are coded as test
    rows, which the phases never evaluate; otherwise the data's own split."""
    if rows != "carve":
        return split
    out = split.copy()
    out[carved_rows(split, study_seed)] = _TEST
    return out


def crossfit_folds(split: np.ndarray, study_seed: int) -> np.ndarray:
    """Fold number (0..CROSSFIT_FOLDS-1) of every training row, -1 elsewhere; seeded."""
    train = np.flatnonzero(split == _TRAIN)
    rng = np.random.default_rng([study_seed, 18, 1])
    folds = np.full(len(split), -1, dtype=int)
    folds[rng.permutation(train)] = np.arange(len(train)) % CROSSFIT_FOLDS
    return folds


def held_out_problems(problem: SearchProblem, split: np.ndarray, rows: str, study_seed: int,
                      seeds: Sequence[int]) -> list[tuple[SearchProblem, tuple[int, ...], np.ndarray]]:
    """Per group of seeds sharing held-out rows: the training problem (test rows dropped; the
    held-out rows coded 2), those seeds, and the held-out rows' indices in the data."""
    keep = split != _TEST
    if rows == "carve":
        masks = [(tuple(seeds), carved_rows(split, study_seed))]
    else:
        folds = crossfit_folds(split, study_seed)
        masks = [(tuple(s for j, s in enumerate(seeds) if j % CROSSFIT_FOLDS == k), folds == k)
                 for k in range(min(CROSSFIT_FOLDS, len(seeds)))]
    out = []
    for group, mask in masks:
        coded = split.copy()
        coded[mask] = _TEST
        sub = dataclasses.replace(problem, X=problem.X[keep], Y=problem.Y[keep], split=coded[keep])
        out.append((sub, group, np.flatnonzero(mask)))
    return out


def fit_budget(candidates: Sequence[Any], measured_models: int) -> tuple[list[Any], int, list[str]]:
    """The candidates kept and the seed count within the budget (module docstring), and notes."""
    kept = list(candidates)
    notes = []
    while True:
        networks = len({n for c in kept for n in c.networks})
        seeds = int(BUDGET_FRACTION * measured_models // max(networks, 1))
        optional = [c for c in kept if not set(c.names) & {SEPARATE, TOGETHER, RECOMMENDED}]
        if seeds >= MIN_SEEDS or not optional:
            break
        kept.remove(optional[-1])
        notes.append(f"{optional[-1].name} left out to fit the budget")
    if seeds < MIN_SEEDS:
        notes.append(f"{MIN_SEEDS} seeds of {networks} networks exceed {BUDGET_FRACTION:.0%} of the "
                     f"{measured_models} single and pairs models; an interval needs them")
    return kept, max(MIN_SEEDS, min(MAX_SEEDS, seeds)), notes


def _models(candidates: Sequence[Any], seeds: Sequence[int], rows: str) -> dict[Any, list[PlannedModel]]:
    networks = list(dict.fromkeys(n for c in candidates for n in c.networks))
    phase = f"{SELECTION_PHASE}-{rows}"
    return {n: [PlannedModel(phase, n.tasks, n.aux, s, n.branch_layer) for s in seeds] for n in networks}


def _held_out_losses(records: Sequence[Any], plans: dict[Any, list[PlannedModel]]) -> tuple[dict, float]:
    by_key = {r.model.key: r for r in records}
    losses, seconds = {}, 0.0
    for net, models in plans.items():
        for m in models:
            r = by_key.get(m.key)
            if r is not None:
                losses[(net, m.seed)] = {t: float(v) for t, v in r.result.get("held_out_loss", {}).items()}
                seconds += float(r.result.get("seconds", 0.0))
    return losses, seconds


class _OneBar:
    """Shows the stage's several training calls (one per group of seeds) as one phase."""

    def __init__(self, progress: Any, total: int) -> None:
        self.progress, self.total, self.started = progress, total, False

    def phase_started(self, phase: str, *, total: int, done: int) -> None:
        if not self.started:
            self.progress.phase_started(phase, total=self.total, done=0)
            self.started = True
        if done:
            self.progress.reused(done)

    def advance(self, n: int) -> None:
        self.progress.advance(n)

    def extend(self, n: int) -> None:
        self.progress.extend(n)

    def reused(self, n: int) -> None:
        self.progress.reused(n)

    def phase_finished(self, phase: str) -> None:
        pass


def run_selection_phase(
    store: Any, problem: SearchProblem, split: np.ndarray, *, spec: Any, train_fn: Callable[..., Any],
    progress: Any, deadline: float | None, shared: bool = False,
) -> tuple[Any, Any]:
    """Train the finalists' networks (reusing stored ones), choose, write selection.json; the phase
    outcome and the Selection (None when the time limit stopped the stage)."""
    from taskscout.search.runner import PhaseOutcome, run_phase
    from taskscout.search.storage import load_records
    from taskscout.search.tables import measured_compute

    began = time.monotonic()
    run_dir = Path(spec.run_dir)
    import pandas as pd

    measured = measured_compute(pd.read_csv(run_dir / rundir.COMPUTE))
    candidates, n_seeds, notes = fit_budget(selection_candidates_run(run_dir), measured.models)
    if spec.search.selection_seeds is not None:
        n_seeds = spec.search.selection_seeds
        notes = [f"{n_seeds} seeds as the study asks (search.selection_seeds)", *notes]
    rows = spec.search.selection_rows
    seeds = selection_seeds(spec.seed, n_seeds)
    plans = _models(candidates, seeds, rows)
    bar = _OneBar(progress, sum(len(v) for v in plans.values()))
    held_train = functools.partial(train_fn, eval_splits=("val", "test"))
    planned = reused = trained = remaining = 0
    scored: list[int] = []
    for sub, group, held in held_out_problems(problem, split, rows, spec.seed, seeds):
        models = [m for ms in plans.values() for m in ms if m.seed in group]
        o = run_phase(store, sub, "selection", models, spec=spec, train_fn=held_train, progress=bar,
                      deadline=deadline, shared=shared)
        planned, reused, trained, remaining = (planned + o.planned, reused + o.reused, trained + o.trained,
                                               remaining + o.remaining)
        scored.append(len(held))
    progress.phase_finished("selection")
    status = "stopped" if remaining else "done"
    outcome = PhaseOutcome("selection", planned, reused, trained, remaining, time.monotonic() - began, status)
    if remaining:
        return outcome, None
    losses, seconds = _held_out_losses(load_records(store), plans)
    detail = _rows_detail(rows, scored, split)
    sel = select(candidates, losses, seeds, rule=spec.search.selection_rule, rows=rows, rows_detail=detail,
                 models=planned, budget_fraction=seconds / measured.seconds if measured.seconds > 0 else math.nan)
    if notes:
        sel = dataclasses.replace(sel, reasons=(*sel.reasons, *notes))
    rundir.write_json(run_dir / rundir.SELECTION, rundir.json_safe(sel.to_dict()))
    return outcome, sel


def _rows_detail(rows: str, scored: Sequence[int], split: np.ndarray) -> str:
    if rows == "carve":
        return (f"{scored[0]} of the {int((split == _VAL).sum())} validation rows, set aside before the search "
                f"(the search measured gains and stopped training on the other {int((split == _VAL).sum()) - scored[0]})")
    return (f"cross-fitted over {CROSSFIT_FOLDS} folds of the {int((split == _TRAIN).sum())} training rows: each "
            f"seed trains without one fold and is scored on it ({', '.join(map(str, scored))} rows per fold used)")
