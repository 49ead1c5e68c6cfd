"""Task subsets for the surrogate: Optuna proposes them, they are trained, pruned on intermediate losses.

The search's subsets phase (`search.estimators.run_subsets_phase`) drives this with the search's
storage; the surrogate estimator (`affinity.surrogate`) calls it in memory. It lives in the
affinity stage so that both can use it without affinity importing the search.

Higher-order effects need models of more than two tasks, but all subsets are 2^T. Following Li,
Nguyen and Zhang (2023), a number of subsets that grows with T (not T^2) is trained and a surrogate
(`taskscout.affinity.surrogate`) is fitted to them.

Proposals. An Optuna study (the "proposer", one trial per subset) suggests every free task of the
universe as in (1) or out (0); `fixed` tasks are always in (for auxiliary subsets: the main task).
The default sampler is Sobol quasi-Monte Carlo (`QMCSampler`, scrambled, seeded): a space-filling
design, which is what a regression over membership needs; an optimiser's sampler (TPE) would
cluster the proposals around good subsets. A proposal with fewer than two tasks, or one already
proposed, is told FAIL and another is asked for. A subset whose objective is not finite is told
FAIL too, counts as proposed and is never proposed again.

Training. Each subset is trained with every seed (one model per seed, the whole trunk shared),
its `main` targets selecting the best epoch (task subsets: all of them; auxiliary subsets: the
fixed main task). The objective of a subset is the mean over its main tasks of the normalised loss
L_i[subset] / L_i[alone], paired per seed, then averaged over seeds.

Pruning. With `prune`, subsets are trained `stack_subsets` at a time and each epoch every running
subset reports to its proposer trial the best normalised validation loss of its main tasks so far
(sum of their val losses over the sum of their single-task losses, mean over its seeds); Optuna's
pruner (default `PercentilePruner(75)`: stop a subset whose value is worse than the 75th percentile
of the completed subsets at the same epoch, after a warm-up of a quarter of the epochs and one
stack of completed subsets) decides, and the trainer's `on_epoch` callback stops that subset's
models. A pruned subset has no final loss and is not used by the surrogate. In `shadow` (test) mode
the pruner decides the same way but nothing is stopped: the subsets are trained to the end, told
PRUNED all the same (so later decisions are those of a real run), their losses are kept (the
surrogate sees every subset, as without pruning), and the record says how much compute pruning
would have saved and how many pruned subsets would have been among the `top` best.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from taskscout import rundir
from taskscout.affinity.base import AffinityProblem, Compute
from taskscout.affinity.measured import LOSS_COLUMNS
from taskscout.affinity.measured_estimator import own_best_loss
from taskscout.affinity.pruning import PruningRecord
from taskscout.errors import SpecError

PHASE = "subsets"
TASKS_ATTR = "tasks"
LOSSES_ATTR = "losses"  # [[task, seed, val loss], ...] of a finished subset, so a resumed run reuses it
SHADOW_ATTR = "shadow_value"  # shadow mode: the final objective of a subset told PRUNED
COMPUTE_ATTR = "compute"  # [models, epochs, seconds] of a trained subset, so a resumed run can total the phase


def default_sampler(seed: int = 0) -> optuna.samplers.BaseSampler:
    """Scrambled Sobol sampling: a balanced, space-filling design of in/out memberships."""
    with warnings.catch_warnings():  # QMCSampler is marked experimental; its interface is all we use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed,
                                          warn_independent_sampling=False, warn_asynchronous_seeding=False)


def default_pruner(epochs: int, n_startup: int) -> optuna.pruners.BasePruner:
    """Stop subsets worse than 75% of completed ones at the same epoch, after warm-up."""
    return optuna.pruners.PercentilePruner(75.0, n_startup_trials=n_startup, n_warmup_steps=max(1, epochs // 4))


def proposer_study(*, storage: str | optuna.storages.BaseStorage | None = None, name: str = "subsets",
                   seed: int = 0, pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """The proposer study (created, or loaded to resume); in memory without `storage`."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(storage=storage, study_name=name, direction="minimize", load_if_exists=True,
                               sampler=default_sampler(seed), pruner=pruner)


def stored_compute(study: optuna.Study) -> Compute:
    """What the subsets the proposer study holds cost to train (this run's and earlier runs',
    pruned and unscorable ones too): the sum of their COMPUTE_ATTR."""
    total = Compute()
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)):
        if COMPUTE_ATTR in t.user_attrs:
            models, epochs, seconds = t.user_attrs[COMPUTE_ATTR]
            total = total + Compute(int(models), int(epochs), float(seconds))
    return total


class SubsetProposer:
    """Asks the proposer study for valid, distinct subsets of `universe` (fixed tasks always in)."""

    def __init__(self, study: optuna.Study, universe: Sequence[str], *, fixed: Sequence[str] = (), min_size: int = 2) -> None:
        if len(set(universe)) != len(universe):
            raise SpecError(f"the subset universe lists a task twice: {list(universe)}")
        missing = [t for t in fixed if t not in universe]
        if missing:
            raise SpecError(f"fixed tasks {missing} are not in the subset universe {list(universe)}")
        self.study = study
        self.universe = tuple(universe)
        self.fixed = tuple(fixed)
        self.free = tuple(t for t in universe if t not in fixed)
        self.min_size = min_size
        if len(self.fixed) + len(self.free) < min_size:
            raise SpecError(f"subsets of at least {min_size} tasks need that many tasks; the universe has {len(universe)}")

    def subsets(self, states: Sequence[TrialState] = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)) -> dict[int, tuple[str, ...]]:
        """Proposer trial number -> subset, for trials in `states`."""
        return {t.number: tuple(t.user_attrs[TASKS_ATTR]) for t in self.study.get_trials(deepcopy=False, states=tuple(states))
                if TASKS_ATTR in t.user_attrs}

    def unscorable(self) -> dict[int, tuple[str, ...]]:
        """Proposer trial number -> subset, for subsets trained to the end but told FAIL (their
        objective was not finite, e.g. without single-task losses to normalise by)."""
        return {t.number: tuple(t.user_attrs[TASKS_ATTR]) for t in self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                if TASKS_ATTR in t.user_attrs and LOSSES_ATTR in t.user_attrs}

    def spent(self) -> int:
        """Subsets trained through: scored (complete), pruned, or unscorable; each is proposed once."""
        return len(self.subsets((TrialState.COMPLETE, TrialState.PRUNED))) + len(self.unscorable())

    def propose(self, n: int) -> list[tuple[optuna.trial.Trial, tuple[str, ...]]]:
        """Up to `n` new RUNNING proposer trials with their subsets (fewer when the space runs out)."""
        # an unscorable subset would be unscorable again: proposing it anew could loop without end
        seen = set(self.subsets().values()) | set(self.unscorable().values())
        space = 2 ** len(self.free)
        out: list[tuple[optuna.trial.Trial, tuple[str, ...]]] = []
        attempts = 0
        while len(out) < n and attempts < 20 * n + 20 and len(seen) < space:
            attempts += 1
            trial = self.study.ask()
            chosen = {t for t in self.free if trial.suggest_int(t, 0, 1) == 1} | set(self.fixed)
            subset = tuple(t for t in self.universe if t in chosen)
            if len(subset) < self.min_size or subset in seen:
                # too small or already proposed: worthless to train, but counted so the loop ends
                self.study.tell(trial, state=TrialState.FAIL)
                seen.add(subset)
                continue
            trial.set_user_attr(TASKS_ATTR, list(subset))
            seen.add(subset)
            out.append((trial, subset))
        return out


@dataclass(frozen=True, eq=False)
class SubsetRun:
    """What the subsets phase produced."""

    losses: pd.DataFrame  # affinity.measured.LOSS_COLUMNS, one row per (model, main task) of trained-through subsets
    observations: pd.DataFrame  # group, task, seed, norm_loss (for surrogate.fit_surrogate), same subsets
    objectives: pd.DataFrame  # group, objective, state ("complete" / "pruned"), pruned_epoch, trial
    compute: Compute
    pruning: PruningRecord | None
    results: list = field(default_factory=list)  # trainer ModelResults, plan order
    dropped: int = 0  # successive halving: subsets left at their first seed (no real gain possible)
    halved: int = 0  # successive halving: subsets trained on their first seed first (dropped ones included)


class _StackPruning:
    """The trainer's `on_epoch` callback for one stack of subsets: report, ask the pruner, stop.

    Each subset (a proposer trial) reports the mean over its seed models of the best-so-far ratio
    (sum of its main tasks' val losses) / (sum of their single-task losses). All subsets report
    before any is asked, so no decision depends on the order of the subsets in the stack.
    """

    def __init__(self, trials: Sequence[optuna.trial.Trial], owner: Sequence[int], norm: np.ndarray, *, shadow: bool) -> None:
        self.trials = list(trials)
        self.owner = np.asarray(owner)
        self.norm = norm
        self.shadow = shadow
        self.best = np.full(len(owner), math.inf)
        self.stopped = np.zeros(len(owner), bool)
        self.pruned_at: dict[int, int] = {}  # subset index -> epoch of the pruning decision

    def __call__(self, epoch: int, main_val: np.ndarray) -> np.ndarray | None:
        vals = np.asarray(main_val, dtype=float)
        live = np.isfinite(vals)
        self.best[live] = np.minimum(self.best[live], vals[live] / self.norm[live])
        for k, trial in enumerate(self.trials):
            mine = (self.owner == k) & np.isfinite(self.best)
            if k not in self.pruned_at and mine.any():
                trial.report(float(self.best[mine].mean()), epoch)
        for k, trial in enumerate(self.trials):
            if k not in self.pruned_at and trial.should_prune():
                self.pruned_at[k] = epoch
        if self.shadow:
            return None
        stop = np.isin(self.owner, list(self.pruned_at)) & ~self.stopped
        self.stopped |= stop
        return stop


class StackProgress:
    """Forwards a stack's per-model progress (the trainer's `progress`) to `progress` and keeps
    count: `finish` tops up what the trainer did not report, `take_back` removes what it did when
    the stack was not stored (interrupted, or the trainer failed)."""

    def __init__(self, progress: Callable[[int], None] | None) -> None:
        self.progress, self.reported = progress, 0

    def __call__(self, n: int) -> None:
        self.reported += n
        if self.progress is not None:
            self.progress(n)

    def finish(self, n: int) -> None:
        if self.progress is not None and n > self.reported:
            self.progress(n - self.reported)

    def take_back(self) -> None:
        if self.progress is not None and self.reported:
            self.progress(-self.reported)
        self.reported = 0


def enqueue_subsets(study: optuna.Study, universe: Sequence[str], subsets: Sequence[Sequence[str]]) -> int:
    """Queue these subsets of `universe` in the proposer study, so the next proposals are exactly
    them (before any sampled one) and a resumed run finds them; subsets already proposed are
    skipped. The number queued."""
    proposed = {tuple(t.user_attrs[TASKS_ATTR]) for t in study.get_trials(deepcopy=False) if TASKS_ATTR in t.user_attrs}
    waiting = {tuple(u for u in universe if t.system_attrs.get("fixed_params", {}).get(u) == 1)
               for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))}
    queued = 0
    for subset in subsets:
        members = tuple(t for t in universe if t in set(subset))
        unknown = set(subset) - set(universe)
        if unknown:
            raise SpecError(f"subset tasks {sorted(unknown)} are not in the subset universe {list(universe)}")
        if members in proposed or members in waiting:
            continue
        study.enqueue_trial({t: int(t in members) for t in universe})
        waiting.add(members)
        queued += 1
    return queued


def _objective(rows: pd.DataFrame) -> float:
    per_task = rows.groupby("task")["norm_loss"].mean()
    return float(per_task.mean()) if len(per_task) else math.nan


@dataclass(eq=False)
class _Gathered:
    """What `run_subsets` collects as it goes: rows of its tables, results, cost, pruning tallies."""

    losses: list[tuple] = field(default_factory=list)  # LOSS_COLUMNS
    objectives: list[tuple] = field(default_factory=list)  # group, objective, state, pruned_epoch, trial
    results: list = field(default_factory=list)
    compute: Compute = field(default_factory=Compute)
    saved_epochs: float = 0.0
    pruned: int = 0
    dropped: int = 0  # successive halving: subsets left at one seed
    halved: int = 0


def _resume(study: optuna.Study, names: Sequence[str], depth: int, main_of: Callable[[tuple[str, ...]], tuple[str, ...]],
            got: _Gathered) -> None:
    """Take over what the proposer study holds: subsets left RUNNING by a killed run fail (their
    models are gone); finished ones give their objectives and stored losses."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL)
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if TASKS_ATTR not in t.user_attrs:
            continue
        subset = tuple(t.user_attrs[TASKS_ATTR])
        group = rundir.group_key(subset, names)
        if t.state == TrialState.PRUNED:
            got.objectives.append((group, t.user_attrs.get(SHADOW_ATTR, math.nan), "pruned", -1, t.number))
        else:
            got.objectives.append((group, t.value, "complete", -1, t.number))
        mains = main_of(subset)
        aux = tuple(x for x in subset if x not in mains)
        for task, s, loss in t.user_attrs.get(LOSSES_ATTR, []):
            got.losses.append((mains, aux, depth, int(s), task, float(loss)))


def _subset_losses(mine: Sequence, names: Sequence[str], single: Mapping[tuple[str, int], float]) -> pd.DataFrame:
    """task, seed, loss, norm_loss of a subset's main tasks, one row per (seed model, main task)."""
    rows = []
    for r in mine:
        for t in r.plan.main:
            loss = own_best_loss(r, t, names[t])
            alone = single.get((names[t], int(r.plan.seed)), math.nan)
            rows.append((names[t], int(r.plan.seed), loss, loss / alone if alone and np.isfinite(alone) else math.nan))
    return pd.DataFrame(rows, columns=["task", "seed", "loss", "norm_loss"])


def _tell(study: optuna.Study, trial: optuna.trial.Trial, frame: pd.DataFrame, group: str, pruned_epoch: int | None,
          *, shadow: bool, mine: Sequence, got: _Gathered) -> bool:
    """Tell the proposer how a trained subset did and record its objective; whether its losses
    are kept (not for a subset pruned for real)."""
    value = _objective(frame)
    stored = [[t, int(sd), float(v)] for t, sd, v, _ in frame.itertuples(index=False)]
    if pruned_epoch is None:
        trial.set_user_attr(LOSSES_ATTR, stored)
        study.tell(trial, value if np.isfinite(value) else None,
                   state=TrialState.COMPLETE if np.isfinite(value) else TrialState.FAIL)
        got.objectives.append((group, value, "complete", -1, trial.number))
        return True
    got.pruned += 1
    got.objectives.append((group, value if shadow else math.nan, "pruned", pruned_epoch, trial.number))
    if shadow:
        trial.set_user_attr(SHADOW_ATTR, value)
        trial.set_user_attr(LOSSES_ATTR, stored)
        got.saved_epochs += sum(max(0, r.epochs_run - pruned_epoch) for r in mine)
    study.tell(trial, state=TrialState.PRUNED)
    return shadow


def _pruning_record(objectives: pd.DataFrame, got: _Gathered, *, shadow: bool, top: int, epochs: int) -> PruningRecord:
    """What pruning skipped and saved; in shadow mode, how many pruned subsets were among the
    `top` best."""
    per_epoch = got.compute.seconds / max(1, got.compute.epochs)
    chosen = -1
    saved_epochs = got.saved_epochs
    if shadow:
        ranked = objectives.dropna(subset=["objective"]).sort_values("objective")
        best_groups = set(ranked["group"].head(top))
        chosen = int(((objectives["state"] == "pruned") & objectives["group"].isin(best_groups)).sum())
    else:
        # a stopped model would have run about as long as the models that were not stopped
        full = [r.epochs_run for r in got.results if not r.pruned]
        typical = float(np.mean(full)) if full else float(epochs)
        saved_epochs = sum(max(0.0, typical - r.epochs_run) for r in got.results if r.pruned)
    return PruningRecord(
        what="subsets", candidates=len(objectives), skipped=got.pruned,
        models_saved=0, epochs_saved=int(round(saved_epochs)), seconds_saved=saved_epochs * per_epoch,
        would_be_chosen=chosen,
    )


def _observations(losses: pd.DataFrame, single: Mapping[tuple[str, int], float], names: Sequence[str]) -> pd.DataFrame:
    """group, task, seed, norm_loss for the surrogate: each loss over the task's loss alone."""
    obs = []
    for r in losses.itertuples(index=False):
        alone = single.get((r.task, int(r.seed)))
        if alone and np.isfinite(alone):
            obs.append((rundir.group_key(r.tasks + r.aux, names), r.task, int(r.seed), r.loss / alone))
    return pd.DataFrame(obs, columns=["group", "task", "seed", "norm_loss"])


def _batch_plans(subsets: Sequence[tuple[str, ...]], problem: AffinityProblem,
                 main_of: Callable[[tuple[str, ...]], tuple[str, ...]]) -> tuple[list, list[int]]:
    """The trainer's plans of a batch of subsets (each with every seed, the whole trunk shared) and,
    per plan, the index of its subset in the batch."""
    from taskscout.training import ModelPlan

    index = {n: i for i, n in enumerate(problem.names)}
    depth = problem.model.depth
    plans, owner = [], []
    for k, subset in enumerate(subsets):
        for s in problem.seeds:
            plans.append(ModelPlan(targets=tuple(index[t] for t in subset), main=tuple(index[t] for t in main_of(subset)),
                                   seed=int(s), branch_layer=depth,
                                   key=f"{PHASE}:{rundir.group_key(subset, problem.names)}:{s}"))
            owner.append(k)
    return plans, owner


def _record_batch(study: optuna.Study, batch: Sequence[tuple[optuna.trial.Trial, tuple[str, ...]]], results: Sequence,
                  owner: Sequence[int], seconds: float, pruned_at: Mapping[int, int], *, problem: AffinityProblem,
                  single: Mapping[tuple[str, int], float], main_of: Callable[[tuple[str, ...]], tuple[str, ...]],
                  shadow: bool, got: _Gathered) -> None:
    """Store each trained subset of a batch in its proposer trial (cost, losses, objective) and
    gather its losses."""
    names, depth = problem.names, problem.model.depth
    for k, (trial, subset) in enumerate(batch):
        mine = [r for r, o in zip(results, owner, strict=True) if o == k]
        # the stack's seconds shared by model: a stack trains its models together
        trial.set_user_attr(COMPUTE_ATTR, [len(mine), sum(r.epochs_run for r in mine),
                                           seconds * len(mine) / max(1, len(results))])
        frame = _subset_losses(mine, names, single)
        if _tell(study, trial, frame, rundir.group_key(subset, names), pruned_at.get(k), shadow=shadow,
                 mine=mine, got=got):
            mains = main_of(subset)
            aux = tuple(t for t in subset if t not in mains)
            got.losses += [(mains, aux, depth, s, task, loss) for task, s, loss, _ in frame.itertuples(index=False)]


def run_subsets(
    problem: AffinityProblem,
    *,
    single: Mapping[tuple[str, int], float],
    n_subsets: int,
    study: optuna.Study | None = None,
    universe: Sequence[str] | None = None,
    fixed: Sequence[str] = (),
    stack_subsets: int | None = None,
    prune: bool = False,
    shadow: bool = False,
    pruner: optuna.pruners.BasePruner | None = None,
    top: int = 3,
    seed: int = 0,
    train_fn: Callable[..., list] | None = None,
    progress: Callable[[int], None] | None = None,
    halving_floor: float | None = None,
) -> SubsetRun:
    """Propose `n_subsets` subsets (resuming `study` if it holds some), train them with every seed.

    `halving_floor` (successive halving, instead of `prune`): each batch's subsets are trained on
    the first seed, and only those whose first-seed gain 1 - L_i[subset] / L_i[alone] exceeds the
    floor on some main task (or cannot be computed) get the other seeds; the others stay with one
    seed (module docstring of `taskscout.search.halving` for why no real gain is lost). None: every
    seed of every subset.

    `single[(task, seed)]` is each main task's single-task validation loss per seed (the
    normalisers). `universe` defaults to the main tasks; `fixed` tasks are in every subset and,
    when given, are the only main targets (auxiliary subsets). See the module docstring for the
    objective, pruning and shadow mode.
    """
    from taskscout.training import train_models

    train_fn = train_fn or train_models
    names = problem.names
    universe = tuple(universe) if universe is not None else problem.main_names
    unknown = [t for t in universe if t not in names]
    if unknown:
        raise SpecError(f"subset tasks {unknown} are not heads of the problem; heads: {list(names)}")
    if shadow and not prune:
        raise SpecError("shadow mode records what pruning would do; it needs prune=True")
    if prune and halving_floor is not None:
        raise SpecError("successive halving replaces pruning on intermediate losses: give prune or halving_floor, not both")
    epochs = problem.training.epochs
    stack_subsets = stack_subsets or (max(2, n_subsets // 3) if prune else n_subsets)
    if study is None:
        study = proposer_study(seed=seed, pruner=pruner or (default_pruner(epochs, stack_subsets) if prune else None))
    elif pruner is not None:
        study.pruner = pruner
    proposer = SubsetProposer(study, universe, fixed=fixed)
    depth = problem.model.depth

    def main_of(subset: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(t for t in subset if t in fixed) if fixed else subset

    got = _Gathered()
    _resume(study, names, depth, main_of, got)
    while (done := proposer.spent()) < n_subsets:
        batch = proposer.propose(min(stack_subsets, n_subsets - done))
        if not batch:
            break
        start = time.perf_counter()
        owner, results, hook = _train_batch(batch, problem, main_of, single, train_fn=train_fn, progress=progress,
                                            prune=prune, shadow=shadow, halving_floor=halving_floor, got=got)
        seconds = time.perf_counter() - start
        got.compute = got.compute + Compute(len(results), sum(r.epochs_run for r in results), seconds)
        got.results.extend(results)
        _record_batch(study, batch, results, owner, seconds, hook.pruned_at, problem=problem, single=single,
                      main_of=main_of, shadow=shadow, got=got)

    objectives = pd.DataFrame(got.objectives, columns=["group", "objective", "state", "pruned_epoch", "trial"])
    losses = pd.DataFrame(got.losses, columns=list(LOSS_COLUMNS))
    return SubsetRun(losses=losses, observations=_observations(losses, single, names), objectives=objectives,
                     compute=got.compute, pruning=_pruning_record(objectives, got, shadow=shadow, top=top, epochs=epochs)
                     if prune else None, results=got.results, dropped=got.dropped, halved=got.halved)


def _train_batch(batch: Sequence[tuple[optuna.trial.Trial, tuple[str, ...]]], problem: AffinityProblem,
                 main_of: Callable[[tuple[str, ...]], tuple[str, ...]], single: Mapping[tuple[str, int], float], *,
                 train_fn: Callable[..., list], progress: Callable[[int], None] | None, prune: bool, shadow: bool,
                 halving_floor: float | None, got: _Gathered) -> tuple[list[int], list, _StackPruning]:
    """Train one batch of proposed subsets: every seed in one call (pruned on intermediate losses
    with `prune`), or by successive halving with a `halving_floor`. Per result, the index of its
    subset in the batch; the results; the pruning hook (what it stopped, when)."""
    subsets = [subset for _, subset in batch]
    plans, owner = _batch_plans(subsets, problem, main_of)
    norm = np.array([sum(single.get((t, int(p.seed)), math.nan) for t in main_of(batch[k][1]))
                     for p, k in zip(plans, owner, strict=True)])
    hook = _StackPruning([trial for trial, _ in batch], owner, norm, shadow=shadow)
    tally = StackProgress(progress)
    try:
        if halving_floor is not None and len(problem.seeds) > 1:
            _, owner, results = _train_halved(subsets, problem, main_of, single, halving_floor,
                                              train_fn=train_fn, progress=tally, got=got)
        else:
            results = train_fn(problem.X, problem.Y, problem.heads, problem.split, plans, model=problem.model,
                               training=problem.training, device=problem.device, progress=tally,
                               on_epoch=hook if prune else None, stack_size=max(1, len(plans)))
    except BaseException:
        tally.take_back()  # not stored: the stack's models are not done
        raise
    return owner, results, hook


def _train_halved(subsets: Sequence[tuple[str, ...]], problem: AffinityProblem,
                  main_of: Callable[[tuple[str, ...]], tuple[str, ...]], single: Mapping[tuple[str, int], float],
                  floor: float, *, train_fn: Callable[..., list], progress: Callable[[int], None],
                  got: _Gathered) -> tuple[list, list[int], list]:
    """Successive halving of one batch: every subset on the first seed, then the other seeds for
    those whose first-seed gain exceeds `floor` on some main task (or cannot be computed). The
    plans, their subsets' indices and the results, first rung first."""
    first = dataclasses.replace(problem, seeds=problem.seeds[:1])

    def train(plans: list) -> list:
        if not plans:
            return []
        return train_fn(problem.X, problem.Y, problem.heads, problem.split, plans, model=problem.model,
                        training=problem.training, device=problem.device, progress=progress,
                        stack_size=max(1, len(plans)))

    plans, owner = _batch_plans(subsets, first, main_of)
    results = train(plans)
    seed = int(problem.seeds[0])

    def kept(k: int) -> bool:
        frame = _subset_losses([r for r, o in zip(results, owner, strict=True) if o == k], problem.names, single)
        gains = 1.0 - frame.loc[frame["seed"] == seed, "norm_loss"].to_numpy(float)
        return len(gains) == 0 or bool((~np.isfinite(gains) | (gains > floor)).any())

    keep = [k for k in range(len(subsets)) if kept(k)]
    later = dataclasses.replace(problem, seeds=problem.seeds[1:])
    more, more_owner = _batch_plans([subsets[k] for k in keep], later, main_of)
    got.halved += len(subsets)
    got.dropped += len(subsets) - len(keep)
    return plans + more, owner + [keep[j] for j in more_owner], results + train(more)
