"""The search's `subsets` and `estimators` phases: what `run_search` calls, and the tables they give.

Both run after the single and pairs phases, on the search's own problem (main tasks first, then
the screened auxiliaries) and seeds:

- `run_subsets_phase`: Optuna proposes `spec.search.subsets` task subsets of the main tasks
  (`taskscout.affinity.subsets`, proposer study "<study name>:subsets" in the search's storage, so
  a rerun resumes it), each trained with every seed and pruned on intermediate losses; then the
  groups of 3+ tasks that a recommendation could rest on but nobody measured
  (`grouping.groups_to_measure`) are queued in the same study and trained, unpruned, in up to
  CONFIRM_ROUNDS rounds, with CONFIRM_EXTRA_SEEDS more seeds than the rest; the surrogate (`taskscout.affinity.surrogate`) is fitted on all of them
  plus the single-task anchors and the measured pairs. The grouping stage is consulted here (and
  only here) because what is worth measuring is what it would decide on.
- `run_estimators_phase`: the cheap estimators (`tag`, `gradcos`, `rsa` by default) on the same
  problem.
- `estimator_tables`: the run-directory tables from those results: affinity rows to add to
  affinity.csv (one `method` each), compute rows ("estimator:<method>", "subsets"), agreement.csv
  (against the measured rows and the single + pairs compute), rsa_layers.csv (the branch-layer
  fallback) and subset_observations.csv (what the surrogate is fitted on; `fit_surrogate` on it
  rebuilds the surrogate for grouping).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from taskscout import rundir
from taskscout.affinity.agreement import agreement_table
from taskscout.affinity.base import AffinityProblem, Compute, EstimatorResult, make_estimator
from taskscout.affinity.compare import CHEAP
from taskscout.affinity.measured import group_scores, paired_with_alone, single_task_losses
from taskscout.affinity.measured_estimator import own_best_loss
from taskscout.affinity.subsets import (
    SubsetProposer,
    SubsetRun,
    enqueue_subsets,
    proposer_study,
    run_subsets,
    stored_compute,
)
from taskscout.affinity.surrogate import Surrogate, fit_surrogate
from taskscout.grouping import groups_to_measure
from taskscout.search.halving import gain_floor, pairs_sd_bound
from taskscout.search.plan import model_seeds
from taskscout.spec import StudySpec

# The estimators phase runs the cheap estimators but the surrogate, which the subsets phase fits.
PHASE_ESTIMATORS = tuple(name for name in CHEAP if name != "surrogate")
# Confirmation: after the sampled subsets, the groups a recommendation could rest on that nobody
# measured (grouping.groups_to_measure) are trained too, at most CONFIRM_LIMIT per round, until
# none is left or CONFIRM_ROUNDS rounds have run (each round's measurements can change the next
# round's groupings).
CONFIRM_ROUNDS = 3
CONFIRM_LIMIT = 6
# Confirmed groups are trained with this many seeds beyond the search's (with single-task models on
# the new seeds as their normalisers): with 3 seeds a 95% t interval is 4.30 / sqrt(3) = 2.5 standard
# deviations wide on each side, with 5 it is 2.78 / sqrt(5) = 1.2, so a gain of the size the pairs
# show can be told from noise where the decision rests on it.
CONFIRM_EXTRA_SEEDS = 2
# The normalisers (each main task alone on the extra seeds) are kept in the proposer study's user
# attributes as [[task, seed, loss], ...], so a resumed run does not train them again.
NORMALISERS_ATTR = "confirmation_normalisers"
# ... and what they cost to train, [models, epochs, seconds]: the phase's compute counts them.
NORMALISERS_COMPUTE_ATTR = "confirmation_normalisers_compute"


def affinity_problem(problem: Any, spec: StudySpec) -> AffinityProblem:
    """The estimators' view of a `search.problem.SearchProblem`: its heads, main tasks first."""
    index = problem.head_index
    return AffinityProblem(
        X=problem.X, Y=problem.Y, heads=tuple(problem.heads), split=problem.split,
        main=tuple(index[t] for t in problem.main), model=spec.model, training=spec.training,
        seeds=model_seeds(spec), device=spec.device,
    )


def missing_normalisers(losses: pd.DataFrame, tasks: Sequence[str], seeds: Sequence[int]) -> list[tuple[str, int]]:
    """The (task, seed) pairs of `tasks` x `seeds` without a single-task loss in `losses`: the
    subsets phase normalises by them and cannot score a subset without them."""
    single = single_losses(losses)
    return [(t, int(s)) for t in tasks for s in seeds if (t, int(s)) not in single]


def single_losses(losses: pd.DataFrame) -> dict[tuple[str, int], float]:
    """(task, seed) -> single-task validation loss, from a `measured.LOSS_COLUMNS` table."""
    return {(t, s): v for t, per_seed in single_task_losses(losses).items() for s, v in per_seed.items()}


def pair_observations(losses: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """Surrogate observations (group, task, seed, norm_loss) from every model of 2+ main tasks
    without auxiliaries (the pairs and the all-together model), paired per seed with the single-task losses."""
    rows = paired_with_alone(losses)
    groups = [rundir.group_key(tasks, order) for tasks in rows["tasks"]]
    return pd.DataFrame({"group": pd.Series(groups, dtype=object), "task": rows["task"], "seed": rows["seed"],
                         "norm_loss": rows["loss"] / rows["alone"]})


@dataclass(frozen=True, eq=False)
class SubsetsPhase:
    """The subsets phase's outcome: the run, the fitted surrogate and the observations behind it."""

    run: SubsetRun
    surrogate: Surrogate
    observations: pd.DataFrame  # group, task, seed, norm_loss: anchors, pairs, subsets
    normalisers: int = 0  # single-task models behind the confirmation's extra seeds (trained once, then kept)
    stored_models: int = 0  # subset models the proposer study holds, this run's and earlier runs', pruned ones too
    # What the models the phase rests on cost, reused ones included (run.compute: this run's training alone)
    compute: Compute = Compute()


def run_subsets_phase(
    spec: StudySpec,
    problem: Any,
    *,
    losses: pd.DataFrame,
    storage: str | None,
    prune: bool = True,
    train_fn: Callable[..., list] | None = None,
    progress: Callable[[int], None] | None = None,
    planned: Callable[[int], None] | None = None,
    halving: bool = False,
) -> SubsetsPhase:
    """Train the proposed subsets (resuming the proposer study in `storage`) and fit the surrogate.
    `halving`: successive halving instead of `prune`, in every round (`_halving_floors`).

    `losses` is the search's loss table so far (`measured.LOSS_COLUMNS`: single and pairs phases);
    its single-task losses normalise, its pair and all-together models join the surrogate's data.
    After the sampled subsets come the confirmation rounds (module docstring); `planned(n)` is
    called before a round trains n models beyond those announced (its subsets times its seeds),
    `progress(n)` as models finish.
    """
    aproblem = affinity_problem(problem, spec)
    single = single_losses(losses)
    study = proposer_study(storage=storage, name=f"{spec.name}:subsets", seed=spec.seed)
    floors = _halving_floors(halving, losses, len(aproblem.seeds))
    run = run_subsets(aproblem, single=single, n_subsets=spec.search.subsets, study=study, prune=prune and not halving,
                      seed=spec.seed, train_fn=train_fn, progress=progress, halving_floor=floors[0])
    main = tuple(problem.main)
    anchors = pd.DataFrame([(t, t, s, 1.0) for (t, s) in single if t in main], columns=["group", "task", "seed", "norm_loss"])
    pairs = pair_observations(losses, main)
    measured = group_scores(losses, full_layer=spec.model.depth, order=main)
    observations = pd.concat([anchors, pairs, run.observations], ignore_index=True)
    normalisers = 0
    if spec.search.subsets > 0:
        extra = confirmation_seeds(aproblem.seeds)
        confirm = dataclasses.replace(aproblem, seeds=(*aproblem.seeds, *extra))
        extra_single: dict[tuple[str, int], float] = {}

        def done() -> int:  # as run_subsets counts: unscorable subsets are spent too
            return SubsetProposer(study, main).spent()

        def confirmed(n_subsets: int) -> SubsetRun:  # trains up to n_subsets, returns every stored one
            more = run_subsets(confirm, single={**single, **extra_single}, n_subsets=n_subsets, study=study,
                               prune=False, seed=spec.seed, train_fn=train_fn, progress=progress, halving_floor=floors[1])
            return _after(run, more)

        for round_ in range(CONFIRM_ROUNDS + 1):
            # a resumed study already holds confirmed subsets on the extra seeds: their normalisers first
            wanted = [] if round_ == 0 else groups_to_measure(
                main, group_scores=measured, observations=observations, networks=spec.search.networks, fdr=spec.search.fdr,
                limit=CONFIRM_LIMIT)
            enqueue_subsets(study, main, wanted)
            queued = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
            if round_ == 0 and not (queued or run.losses["seed"].isin(extra).any()):
                continue
            if not queued and round_ > 0:
                break
            if not extra_single:
                extra_single = _stored_normalisers(study, confirm, extra)
                if extra_single is None:
                    if planned is not None:
                        planned(len(extra) * len(confirm.main))
                    extra_single, cost = _single_losses(confirm, extra, train_fn=train_fn, progress=progress)
                    study.set_user_attr(NORMALISERS_ATTR, [[t, s, v] for (t, s), v in extra_single.items()])
                    study.set_user_attr(NORMALISERS_COMPUTE_ATTR, [cost.models, cost.epochs, cost.seconds])
                    run = dataclasses.replace(run, compute=run.compute + cost)
                normalisers = len(extra_single)
                anchors = pd.DataFrame([(t, t, s, 1.0) for (t, s) in {**single, **extra_single} if t in main],
                                       columns=["group", "task", "seed", "norm_loss"])
            if planned is not None:
                planned(queued * len(confirm.seeds))
            run = confirmed(done() + queued)
            observations = pd.concat([anchors, pairs, run.observations], ignore_index=True)
    compute = stored_compute(study)
    if normalisers:
        models, epochs, seconds = study.user_attrs.get(NORMALISERS_COMPUTE_ATTR, (0, 0, 0.0))
        compute = compute + Compute(int(models), int(epochs), float(seconds))
    return SubsetsPhase(run, fit_surrogate(observations, tasks=main), observations, normalisers,
                        _stored_models(run, len(aproblem.seeds)), compute)


def _halving_floors(halving: bool, losses: pd.DataFrame, seeds: int) -> tuple[float | None, float | None]:
    """The first-seed gain floors (`search.halving.gain_floor`) of the sampled subsets (`seeds`
    seeds) and of the confirmation rounds (CONFIRM_EXTRA_SEEDS more), the seed spread bounded by
    the pairs' in `losses`; None: every seed of every subset."""
    if not halving:
        return None, None
    sd = pairs_sd_bound(losses)
    return gain_floor(seeds, sd), gain_floor(seeds + CONFIRM_EXTRA_SEEDS, sd)


def _after(run: SubsetRun, more: SubsetRun) -> SubsetRun:
    """A confirmation round's run `more` with the cost, pruning, results and halving counts of the
    rounds before it (`run`) added."""
    return dataclasses.replace(more, compute=run.compute + more.compute, pruning=run.pruning,
                               results=[*run.results, *more.results], dropped=run.dropped + more.dropped,
                               halved=run.halved + more.halved)


def _stored_models(run: SubsetRun, seeds: int) -> int:
    """Models behind the proposer study's trials: one per (subset, seed) with losses, and `seeds`
    per pruned subset without them (no objective kept; pruning applies to the sampled subsets, on
    the base seeds)."""
    models = run.losses[["tasks", "aux", "seed"]].drop_duplicates()
    obj = run.objectives
    return len(models) + seeds * int(((obj["state"] == "pruned") & obj["objective"].isna()).sum())


def _stored_normalisers(study: optuna.Study, problem: AffinityProblem,
                        seeds: Sequence[int]) -> dict[tuple[str, int], float] | None:
    """The confirmation's normalisers a previous run stored in the proposer study, when they
    cover every main task on every one of `seeds` (else None: they are trained)."""
    stored = {(str(t), int(s)): float(v) for t, s, v in study.user_attrs.get(NORMALISERS_ATTR, [])}
    wanted = {(problem.names[i], int(s)) for s in seeds for i in problem.main}
    return {k: stored[k] for k in wanted} if wanted <= set(stored) else None


def confirmation_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    """The CONFIRM_EXTRA_SEEDS seeds that confirmation adds to the search's `seeds`: the next
    ones after the largest."""
    top = max(seeds)
    return tuple(top + 1 + k for k in range(CONFIRM_EXTRA_SEEDS))


def _single_losses(problem: AffinityProblem, seeds: Sequence[int], *, train_fn: Callable[..., list] | None,
                   progress: Callable[[int], None] | None = None) -> tuple[dict[tuple[str, int], float], Compute]:
    """Each main task trained alone with each of `seeds`: (task, seed) -> validation loss at the
    task's best epoch (the confirmation's normalisers; training is deterministic per seed, so a
    resumed run that trains them again gets the same numbers), and their compute."""
    from taskscout.training import ModelPlan, train_models

    train_fn = train_fn or train_models
    plans = [ModelPlan(targets=(i,), main=(i,), seed=int(s), branch_layer=problem.model.depth, key=f"confirm:{i}:{s}")
             for s in seeds for i in problem.main]
    start = time.perf_counter()
    results = train_fn(problem.X, problem.Y, problem.heads, problem.split, plans, model=problem.model,
                       training=problem.training, device=problem.device, stack_size=max(1, len(plans)),
                       progress=progress)
    seconds = time.perf_counter() - start
    names = problem.names
    losses = {(names[r.plan.main[0]], int(r.plan.seed)): own_best_loss(r, r.plan.main[0], names[r.plan.main[0]])
              for r in results}
    return losses, Compute(len(results), sum(r.epochs_run for r in results), seconds)


def run_estimators_phase(
    spec: StudySpec,
    problem: Any,
    *,
    names: Sequence[str] = PHASE_ESTIMATORS,
    params: Mapping[str, Mapping] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, EstimatorResult]:
    """Every named estimator on the search's problem and seeds."""
    aproblem = affinity_problem(problem, spec)
    params = params or {}
    return {n: make_estimator(n, **dict(params.get(n, {}))).estimate(aproblem, progress=progress) for n in names}


# An estimator's result is kept in the search study's user attributes under this prefix and its
# name, with the heads and seeds it was computed on: the same search run again reuses it.
ESTIMATOR_ATTR = "estimator_result:"


def _frame_record(frame: pd.DataFrame) -> dict[str, Any]:
    return {"columns": [str(c) for c in frame.columns], "data": frame.astype(object).values.tolist()}


def _record_frame(record: Mapping[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(record["data"], columns=record["columns"]).infer_objects()


def _estimated_on(problem: Any, spec: StudySpec) -> dict[str, Any]:
    return {"heads": [h.name for h in problem.heads], "main": list(problem.main), "seeds": list(model_seeds(spec))}


def store_estimator(study: optuna.Study, result: EstimatorResult, problem: Any, spec: StudySpec) -> None:
    """Keep `result` in `study` (see ESTIMATOR_ATTR)."""
    c = result.compute
    study.set_user_attr(ESTIMATOR_ATTR + result.method, {
        **_estimated_on(problem, spec), "rows": _frame_record(result.rows),
        "compute": [c.models, c.epochs, c.seconds],
        "tables": {name: _frame_record(t) for name, t in result.tables.items()},
    })


def stored_estimators(study: optuna.Study, problem: Any, spec: StudySpec) -> dict[str, EstimatorResult]:
    """The estimator results `study` keeps that were computed on this problem's heads and seeds."""
    wanted = _estimated_on(problem, spec)
    out = {}
    rank = {n: i for i, n in enumerate(PHASE_ESTIMATORS)}
    for key, value in sorted(study.user_attrs.items(), key=lambda kv: (rank.get(kv[0][len(ESTIMATOR_ATTR):], len(rank)), kv[0])):
        if not key.startswith(ESTIMATOR_ATTR) or any(value.get(k) != v for k, v in wanted.items()):
            continue
        name = key[len(ESTIMATOR_ATTR):]
        models, epochs, seconds = value["compute"]
        out[name] = EstimatorResult(name, _record_frame(value["rows"]), Compute(int(models), int(epochs), float(seconds)),
                                    tables={n: _record_frame(t) for n, t in value["tables"].items()})
    return out


def estimator_tables(
    *,
    measured: pd.DataFrame,
    measured_compute: Compute,
    results: Mapping[str, EstimatorResult] | None = None,
    subsets: SubsetsPhase | None = None,
) -> dict[str, pd.DataFrame]:
    """Run-directory tables from the phases' results (file name -> frame; "affinity_rows" are rows
    to add to affinity.csv next to the measured ones).

    `measured` are the measured affinity rows and `measured_compute` the single + pairs phases'
    compute. The surrogate's compute is that of the subsets phase alone (the subset models it rests
    on, trained by this run or an earlier one): it reuses the single and pairs models the measured
    phase trained anyway.
    """
    results = dict(results or {})
    compute_rows = [r.compute.row(f"estimator:{m}") for m, r in results.items()]
    if subsets is not None:
        results["surrogate"] = EstimatorResult("surrogate", subsets.surrogate.affinity_rows(), subsets.compute,
                                               tables={"coefficients": subsets.surrogate.coefficients()})
        compute_rows.append(subsets.compute.row("subsets"))
    tables: dict[str, pd.DataFrame] = {
        "affinity_rows": pd.concat([r.rows for r in results.values()], ignore_index=True)
        if results else pd.DataFrame(columns=list(rundir.AFFINITY_COLUMNS)),
        rundir.COMPUTE: pd.DataFrame(compute_rows, columns=list(rundir.COMPUTE_COLUMNS)),
        rundir.AGREEMENT: agreement_table(measured, list(results.values()), measured_compute=measured_compute),
    }
    if "rsa" in results and "rsa_layers" in results["rsa"].tables:
        tables[rundir.RSA_LAYERS] = results["rsa"].tables["rsa_layers"]
    if subsets is not None:
        tables[rundir.SUBSET_OBSERVATIONS] = subsets.observations
    return tables
