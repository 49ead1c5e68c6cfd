"""The selection stage: retrain the finalist groupings with fresh seeds and score them on held-out rows.

The candidates come from `grouping.selection_candidates` (over the run directory's tables), the rule
from `grouping.select`; this module plans and trains their networks through the same machinery as
every phase (stored models are reused, so the stage resumes) and writes selection.json.

Held-out rows (search.selection_rows):
- "crossfit" (default): the training split is cut into CROSSFIT_FOLDS folds; the k-th selection seed
  trains every candidate without fold k mod CROSSFIT_FOLDS and scores it on that fold. Those rows
  were training rows of the search's models, never used to measure a gain or to stop training,
  and the search keeps its whole validation split. All folds train in one problem
  (`folded_problem`): each head is repeated once per fold, the copy for fold k unlabelled on fold
  k's training rows and labelled, on a copy of the training rows coded as test rows, on fold k
  only; a model of fold k trains that fold's copies. A model reads only the rows labelled for its
  targets, so it trains on the same rows, stops on the same rows and is scored on the same rows as
  in a problem of its own fold (in another order: the seed's permutation runs over all training
  rows), and all seeds share the trainer's stacks instead of one small training call per fold.
- "carve": CARVE_FRACTION of the validation split is set aside before the search starts (its
  phases never read those rows); the selection models train on the whole training split, stop on
  the rest of the validation split and are scored on the carved rows.
The test split is never read: `taskscout verify` keeps it for its own check.

Seeds: SELECTION_SEED_OFFSET + 100 * study seed + k, never among the search's (100 * study seed +
0..99) or verify's. Their number fits the budget: BUDGET_FRACTION of the training compute of the
single and pairs phases (row-epochs: training rows a model reads times the epochs it ran), over
the estimated compute of one seed of the candidates' distinct networks; at least MIN_SEEDS
(optional finalists are dropped first to fit; MIN_SEEDS = CROSSFIT_FOLDS, so that every training
row is scored once and the paired interval has 4 degrees of freedom, see docs/guide/selection.md)
and at most MAX_SEEDS.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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
MIN_SEEDS = 5
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


@dataclass(frozen=True, eq=False)
class FoldedProblem(SearchProblem):
    """Every crossfit fold in one problem (module docstring): heads repeated once per fold; a
    model's targets are the copies of its seed's fold."""

    base: SearchProblem | None = None
    fold_of_seed: Mapping[int, int] = field(default_factory=dict)  # seed -> position of its fold's copies

    def model_plan(self, model: PlannedModel, key: str | None = None) -> Any:
        assert self.base is not None
        plan = self.base.model_plan(model, key)
        shift = self.fold_of_seed[model.seed] * len(self.base.heads)
        return dataclasses.replace(plan, targets=tuple(t + shift for t in plan.targets),
                                   main=tuple(t + shift for t in plan.main))


def folded_problem(problem: SearchProblem, split: np.ndarray, study_seed: int, seeds: Sequence[int]) -> FoldedProblem:
    """The crossfit problem of `seeds` (the j-th seed holds out fold j mod CROSSFIT_FOLDS): the
    data's training and validation rows, then a copy of the training rows coded as test rows."""
    keep, train = split != _TEST, np.flatnonzero(split == _TRAIN)
    folds = crossfit_folds(split, study_seed)
    used = sorted({j % CROSSFIT_FOLDS for j in range(len(seeds))})
    kept_folds, held_folds = folds[keep], folds[train]
    columns = []
    for k in used:
        fit, held = problem.Y[keep].copy(), problem.Y[train].copy()
        fit[kept_folds == k] = np.nan  # fold k: never a training row of its models
        held[held_folds != k] = np.nan  # scored on fold k only
        columns.append(np.concatenate([fit, held]))
    position = {k: i for i, k in enumerate(used)}
    return FoldedProblem(
        X=np.concatenate([problem.X[keep], problem.X[train]]), Y=np.concatenate(columns, axis=1),
        split=np.concatenate([split[keep], np.full(len(train), _TEST)]), heads=problem.heads * len(used),
        main=problem.main, serves=problem.serves, dropped=problem.dropped, base=problem,
        fold_of_seed={s: position[j % CROSSFIT_FOLDS] for j, s in enumerate(seeds)},
    )


def held_out_problem(problem: SearchProblem, split: np.ndarray, rows: str, study_seed: int,
                     seeds: Sequence[int]) -> tuple[SearchProblem, list[int]]:
    """The problem all selection models train on (test rows dropped; held-out rows coded 2) and
    the number of held-out rows per fold (one entry for "carve")."""
    if rows == "carve":
        keep, mask = split != _TEST, carved_rows(split, study_seed)
        coded = split.copy()
        coded[mask] = _TEST
        return dataclasses.replace(problem, X=problem.X[keep], Y=problem.Y[keep], split=coded[keep]), [int(mask.sum())]
    folds = crossfit_folds(split, study_seed)
    scored = [int((folds == k).sum()) for k in sorted({j % CROSSFIT_FOLDS for j in range(len(seeds))})]
    return folded_problem(problem, split, study_seed, seeds), scored


def labelled_training_rows(problem: SearchProblem) -> dict[str, np.ndarray]:
    """Per target name, the mask of training rows labelled for it (what a model reads per epoch)."""
    out, col = {}, 0
    for h in problem.heads:
        out[h.name] = np.isfinite(problem.Y[:, col:col + h.width]).all(1) & (problem.split == _TRAIN)
        col += h.width
    return out


def row_epochs(labelled: dict[str, np.ndarray], names: Sequence[str], epochs: float,
               without: np.ndarray | None = None) -> float:
    """Training compute of one model: the rows labelled for any of `names` (less the rows of
    `without`) times `epochs`."""
    rows = np.any([labelled[n] for n in names if n in labelled], axis=0)
    if without is not None:
        rows = rows & ~without
    return float(rows.sum()) * epochs


def fit_budget(candidates: Sequence[Any], measured: float, cost: Callable[[Any], float],
               ) -> tuple[list[Any], int, list[str]]:
    """The candidates kept and the seed count within the budget (module docstring), and notes.
    `measured`: the single and pairs phases' compute; `cost`: one seed of a network's."""
    kept = list(candidates)
    notes = []
    while True:
        networks = list(dict.fromkeys(n for c in kept for n in c.networks))
        per_seed = sum(cost(n) for n in networks)
        seeds = int(BUDGET_FRACTION * measured // per_seed) if per_seed > 0 else MAX_SEEDS
        optional = [c for c in kept if not set(c.names) & {SEPARATE, TOGETHER, RECOMMENDED}]
        if seeds >= MIN_SEEDS or not optional:
            break
        kept.remove(optional[-1])
        notes.append(f"{optional[-1].name} left out to fit the budget")
    if seeds < MIN_SEEDS:
        share = MIN_SEEDS * per_seed / measured if measured > 0 else math.inf
        notes.append(f"{MIN_SEEDS} seeds of {len(networks)} networks take about {share:.0%} of the single and pairs "
                     f"phases' training compute, more than the {BUDGET_FRACTION:.0%} budget; fewer seeds would "
                     f"leave folds unscored and an interval too wide to tell the candidates apart")
    return kept, max(MIN_SEEDS, min(MAX_SEEDS, seeds)), notes


def _models(candidates: Sequence[Any], seeds: Sequence[int], rows: str) -> dict[Any, list[PlannedModel]]:
    networks = list(dict.fromkeys(n for c in candidates for n in c.networks))
    phase = f"{SELECTION_PHASE}-{rows}"
    return {n: [PlannedModel(phase, n.tasks, n.aux, s, n.branch_layer) for s in seeds] for n in networks}


def _held_out_losses(records: Sequence[Any], plans: dict[Any, list[PlannedModel]]) -> dict:
    by_key = {r.model.key: r for r in records}
    losses = {}
    for net, models in plans.items():
        for m in models:
            r = by_key.get(m.key)
            if r is not None:
                losses[(net, m.seed)] = {t: float(v) for t, v in r.result.get("held_out_loss", {}).items()}
    return losses


@dataclass(frozen=True)
class _Budget:
    """What the single and pairs phases cost (row-epochs and recorded seconds), and the masks to
    count a model's rows."""

    row_epochs: float
    seconds: float
    epochs: float  # mean epochs run by their models
    labelled: dict[str, np.ndarray]


def _measured_budget(records: Sequence[Any], problem: SearchProblem) -> _Budget:
    labelled = labelled_training_rows(problem)
    measured = [r for r in records if r.model.phase in ("single", "pairs")]
    epochs = [float(r.result.get("epochs", 0)) for r in measured]
    return _Budget(
        row_epochs=sum(row_epochs(labelled, (*r.model.tasks, *r.model.aux), e) for r, e in zip(measured, epochs, strict=True)),
        seconds=sum(float(r.result.get("seconds", 0.0)) for r in measured),
        epochs=float(np.mean(epochs)) if epochs else 0.0, labelled=labelled)


def _plan_seeds(spec: Any, run_dir: Path, budget: _Budget) -> tuple[list[Any], tuple[int, ...], list[str]]:
    """The candidates and seeds of the stage: the budget's (or the study's search.selection_seeds)."""
    share = 1 - 1 / CROSSFIT_FOLDS if spec.search.selection_rows == "crossfit" else 1.0

    def cost(net: Any) -> float:
        return share * row_epochs(budget.labelled, (*net.tasks, *net.aux), budget.epochs)

    candidates, n_seeds, notes = fit_budget(selection_candidates_run(run_dir), budget.row_epochs, cost)
    if spec.search.selection_seeds is not None:
        n_seeds = spec.search.selection_seeds
        notes = [f"{n_seeds} seeds as the study asks (search.selection_seeds)", *notes]
    return candidates, selection_seeds(spec.seed, n_seeds), notes


def _spent(records: Sequence[Any], plans: dict[Any, list[PlannedModel]], budget: _Budget, split: np.ndarray,
           rows: str, study_seed: int, seeds: Sequence[int]) -> tuple[float, float]:
    """The stage's recorded seconds and row-epochs, each over the single and pairs phases'."""
    by_key = {r.model.key: r for r in records}
    folds = crossfit_folds(split, study_seed)
    # rows of `labelled` are the search problem's, which keeps the test rows: the folds index the same rows
    fold_of = {s: j % CROSSFIT_FOLDS for j, s in enumerate(seeds)}
    seconds = work = 0.0
    for net, models in plans.items():
        for m in models:
            r = by_key.get(m.key)
            if r is None:
                continue
            seconds += float(r.result.get("seconds", 0.0))
            without = folds == fold_of[m.seed] if rows == "crossfit" else None
            work += row_epochs(budget.labelled, (*net.tasks, *net.aux), float(r.result.get("epochs", 0)), without)
    return (seconds / budget.seconds if budget.seconds > 0 else math.nan,
            work / budget.row_epochs if budget.row_epochs > 0 else math.nan)


def run_selection_phase(
    store: Any, problem: SearchProblem, split: np.ndarray, *, spec: Any, train_fn: Callable[..., Any],
    progress: Any, deadline: float | None, shared: bool = False,
) -> tuple[Any, Any]:
    """Train the finalists' networks (reusing stored ones), choose, write selection.json; the phase
    outcome and the Selection (None when the time limit stopped the stage)."""
    from taskscout.search.runner import run_phase
    from taskscout.search.storage import load_records

    run_dir = Path(spec.run_dir)
    budget = _measured_budget(load_records(store), problem)
    candidates, seeds, notes = _plan_seeds(spec, run_dir, budget)
    rows = spec.search.selection_rows
    plans = _models(candidates, seeds, rows)
    sub, scored = held_out_problem(problem, split, rows, spec.seed, seeds)
    outcome = run_phase(store, sub, "selection", [m for ms in plans.values() for m in ms], spec=spec,
                        train_fn=functools.partial(train_fn, eval_splits=("val", "test")), progress=progress,
                        deadline=deadline, shared=shared)
    if outcome.remaining:
        return outcome, None
    records = load_records(store)
    losses = _held_out_losses(records, plans)
    seconds, work = _spent(records, plans, budget, split, rows, spec.seed, seeds)
    sel = select(candidates, losses, seeds, rule=spec.search.selection_rule, rows=rows,
                 rows_detail=_rows_detail(rows, scored, split), models=outcome.planned, budget_fraction=seconds,
                 compute_fraction=work)
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
