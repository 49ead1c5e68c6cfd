"""`run_search`: plan each phase, train its missing models in stacks, record them, rebuild tables.

Resuming is the normal path: every run enqueues the models that have no COMPLETE trial, claims them
K at a time (K = spec.search.stack_size), trains the K in one stacked call of `train_fn` and tells
each trial its result. Models completed by an earlier run are reused, never trained again.

Several workers: with a shared storage (any URL but SQLite), any number of processes run the same
search at once. Each claims what is still WAITING; when a phase has nothing left to claim, a worker
waits until the other workers' models of that phase are complete, taking over the models of any
worker whose heartbeat went stale. So every phase starts after the earlier ones are complete (depth
is planned from complete pair gains), a late worker only picks up what is left, and every worker
ends when the measured phases are complete. The first worker to get there finishes the run alone
(the subsets and estimators phases, the tables, the recommendation and the report, into its run
directory); the others end with a note, and the same command with --join later writes the tables
into any other run directory. See workers.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import optuna
import pandas as pd

from taskscout import rundir
from taskscout.affinity.measured import measured_affinity, positive_pairs
from taskscout.affinity.subsets import StackProgress, stored_compute
from taskscout.data import build_dataset
from taskscout.data.prepare import resolve_segments
from taskscout.errors import MissingResultsError
from taskscout.grouping import recommend_run
from taskscout.search.estimators import (
    PHASE_ESTIMATORS,
    estimator_tables,
    missing_normalisers,
    run_estimators_phase,
    run_subsets_phase,
    store_estimator,
    stored_estimators,
)
from taskscout.search.halving import HALVED_PHASES, Rungs, split_rungs
from taskscout.search.plan import (
    PAIRS_PLAN_ATTR,
    PHASE_ORDER,
    PlannedModel,
    model_seeds,
    pairs_fit_in_time,
    pairs_seconds,
    plan_aux,
    plan_depth,
    plan_pairs,
    plan_sampled,
    plan_single,
    uses_sampled,
)
from taskscout.search.preflight import check_search_settings
from taskscout.search.problem import SearchProblem, build_problem
from taskscout.search.storage import (
    UNFINISHED_ATTR,
    Store,
    claim_pending,
    completed_keys,
    encode_curves,
    enqueue_missing,
    in_progress_keys,
    load_records,
    open_existing,
    open_store,
    record_results,
    recover_abandoned,
    release,
)
from taskscout.search.tables import (
    build_tables,
    default_storage,
    losses_frame,
    measured_compute,
    write_tables,
)
from taskscout.search.workers import is_shared, single_process_lock, try_run_lock
from taskscout.spec import StudySpec

# Settings that change what a trained model means; a study resumed under other values is refused.
# (training.seeds is not among them: more seeds add models, and the old ones stay valid.)
_FINGERPRINT_KEYS = ("data", "data_options", "tasks", "main", "inputs", "task_types", "time_column",
                     "entity_column", "seed", "split", "model", "training", "aux")


class SearchProgress(Protocol):
    """What the search reports while it runs (the CLI draws it with rich)."""

    def phase_started(self, phase: str, *, total: int, done: int) -> None: ...
    def advance(self, n: int) -> None: ...
    def extend(self, n: int) -> None: ...  # the running phase will train n more models than announced
    def reused(self, n: int) -> None: ...  # n more models of the running phase are done: reused, not trained
    def phase_finished(self, phase: str) -> None: ...


class _Silent:
    def phase_started(self, phase: str, *, total: int, done: int) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def extend(self, n: int) -> None:
        pass

    def reused(self, n: int) -> None:
        pass

    def phase_finished(self, phase: str) -> None:
        pass


class _Tally:
    """Forwards a phase's progress and keeps count, so the bar can be settled at the end."""

    def __init__(self, progress: SearchProgress, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def advance(self, n: int) -> None:
        self.done += n
        self.progress.advance(n)

    def extend(self, n: int) -> None:
        self.total += n
        self.progress.extend(n)

    def settle(self, models: int) -> None:
        """Show `models` of `models` done: those the phase reused rather than trained included (and
        fewer than announced when fewer exist, e.g. subsets of few tasks)."""
        if models != self.total:
            self.extend(models - self.total)
        if models > self.done:
            self.progress.reused(models - self.done)
            self.done = models


@dataclass(frozen=True)
class PhaseOutcome:
    """What one phase did in this run."""

    phase: str
    planned: int  # models the phase needs
    reused: int  # already COMPLETE before this run
    trained: int  # trained by this run
    remaining: int  # still missing (time limit)
    seconds: float
    status: str  # "done", "skipped", "stopped" (time limit), "not started" (time limit earlier)
    note: str = ""  # why a phase was skipped when the spec asked for it


@dataclass(frozen=True)
class SearchResult:
    """The outcome of `run_search`."""

    run_dir: Path
    study_name: str
    storage: str
    phases: tuple[PhaseOutcome, ...]
    stopped_by_time_limit: bool
    seconds: float
    tables: dict[str, Path]
    finalized: tuple[str, ...]  # later stages that ran: "recommendation", "report"
    finished_elsewhere: bool = False  # shared storage: another worker was finishing the run
    data_notes: tuple[str, ...] = ()  # Dataset.notes: what the data stage decided on its own
    rerun: bool = False  # the same search had finished: this run trained, computed and wrote nothing

    @property
    def trained(self) -> int:
        return sum(p.trained for p in self.phases)


def fingerprint(spec: StudySpec) -> dict[str, Any]:
    d = spec.to_dict()
    out = {k: d[k] for k in _FINGERPRINT_KEYS}
    out["training"] = {k: v for k, v in out["training"].items() if k != "seeds"}
    return out


def storage_url(spec: StudySpec) -> str:
    """spec.search.storage, else SQLite in the run directory."""
    return spec.search.storage or default_storage(spec.run_dir)


def stored_models(spec: StudySpec) -> int:
    """Models of `spec`'s search that its storage holds, which the same search run again reuses:
    the measured phases' completed models and the subsets phase's trained subset models (0 when
    there is no study yet; nothing is created)."""
    url = storage_url(spec)
    try:
        store = open_existing(url, url, spec.name)
    except MissingResultsError:
        return 0
    n = len(completed_keys(store))
    try:
        n += stored_compute(optuna.load_study(study_name=f"{spec.name}:subsets", storage=store.storage)).models
    except KeyError:
        pass
    return n


def _train_models(*args: Any, **kwargs: Any) -> Any:
    from taskscout.training import train_models

    return train_models(*args, **kwargs)


def _generate_candidates(ds: Any, spec: StudySpec) -> list[Any]:
    from taskscout.auxgen import generate_candidates

    return generate_candidates(ds, spec)


def _clear_run_files(run_dir: Path) -> None:
    for name in (rundir.TRIALS, rundir.CURVES, rundir.CURVE_FEATURES, rundir.AFFINITY, rundir.DEPTH,
                 rundir.GROUP_SCORES, rundir.COMPUTE, rundir.CANDIDATES, rundir.AGREEMENT, rundir.RSA_LAYERS,
                 rundir.SUBSET_OBSERVATIONS, rundir.GRAPH, rundir.RECOMMENDATION, rundir.VERIFY, rundir.REPORT,
                 rundir.SELECTION):
        (run_dir / name).unlink(missing_ok=True)


def _outcome(claim: Any, result: Any, problem: SearchProblem) -> tuple[Any, dict, dict, float]:
    """What the storage keeps of one trained model: (claim, result attributes, curves, value)."""
    heads = problem.heads
    val_loss = {heads[i].name: float(v) for i, v in result.loss.get("val", {}).items()}
    val_metric = {heads[i].name: float(v) for i, v in result.metric.get("val", {}).items()}
    value = sum(val_loss.get(t, math.inf) for t in claim.model.tasks)
    attrs = {"val_loss": val_loss, "val_metric": val_metric, "epochs": int(result.epochs_run),
             "best_epoch": int(result.best_epoch), "seconds": float(result.seconds), "pruned": bool(result.pruned)}
    if "test" in result.loss:  # the selection stage's held-out rows (search/selection.py)
        attrs["held_out_loss"] = {heads[i].name: float(v) for i, v in result.loss["test"].items()}
    return claim, attrs, encode_curves(result.curves), value


# What the summary says when the estimators phase was not asked for (and no earlier run kept its results).
ESTIMATORS_NOTE = ("not run (diagnostics, off by default): add --phase estimators to score tag, gradcos and rsa "
                   "against the measured gains; their results are kept, so later runs show them without recomputing")


# How often a worker waiting for the end of a phase looks at the storage (a few small queries):
# a phase's successor should not wait long for it.
WAIT_POLL_SECONDS = 0.5


def run_phase(
    store: Store,
    problem: SearchProblem,
    phase: str,
    models: Sequence[PlannedModel],
    *,
    spec: StudySpec,
    train_fn: Callable[..., Any],
    progress: SearchProgress,
    deadline: float | None,
    shared: bool = False,
) -> PhaseOutcome:
    """Train the models of one phase that have no COMPLETE trial, K per stack, until none is left
    or the deadline (time.monotonic) passes; models already COMPLETE are reused.

    shared: other workers use the storage too. Once nothing is left to claim, wait until every
    model of the phase is COMPLETE (trained here or elsewhere), queueing again the models of
    workers that died, and give a model up after spec.search.max_retry failures."""

    start = time.monotonic()
    keys = [m.key for m in models]
    wanted = set(keys)
    max_failures = spec.search.max_retry if shared else None
    reused = len(completed_keys(store) & wanted)
    enqueue_missing(store, models, max_failures=max_failures)
    progress.phase_started(phase, total=len(keys), done=reused)
    shown = reused  # models the progress display counts as done
    trained = 0
    stopped = False
    while True:
        if deadline is not None and time.monotonic() >= deadline:
            stopped = True
            break
        claims = claim_pending(store, keys, spec.search.stack_size)
        if not claims:
            if not shared or not _others_still_working(store, models, wanted, max_failures):
                break
            done = len(completed_keys(store) & wanted)
            if done > shown:
                progress.advance(done - shown)
                shown = done
            time.sleep(WAIT_POLL_SECONDS)
            continue
        stack = StackProgress(progress.advance)
        try:
            plans = [problem.model_plan(c.model) for c in claims]
            results = train_fn(problem.X, problem.Y, problem.heads, problem.split, plans,
                               model=spec.model, training=spec.training, device=spec.device, progress=stack,
                               stack_size=spec.search.stack_size)
            if len(results) != len(claims):
                raise RuntimeError(f"train_fn returned {len(results)} results for {len(claims)} plans")
            stored = record_results(store, [_outcome(c, r, problem) for c, r in zip(claims, results, strict=True)])
        except BaseException:
            release(store, claims)
            stack.take_back()
            raise
        stack.finish(len(claims))
        shown += len(claims)
        trained += sum(stored)
    remaining = len(wanted - completed_keys(store))
    progress.phase_finished(phase)
    status = "stopped" if stopped and remaining else "done"
    return PhaseOutcome(phase, len(keys), reused, trained, remaining, time.monotonic() - start, status)


def _others_still_working(
    store: Store, models: Sequence[PlannedModel], wanted: set[str], max_failures: int | None
) -> bool:
    """Whether some model of `wanted` is not complete but may still be (shared storage): fails
    the trials of dead workers, queues their models again, and says whether any model of the
    phase is WAITING or RUNNING."""
    missing = wanted - completed_keys(store)
    if not missing:
        return False
    failed_now = recover_abandoned(store, single_process=False)
    if failed_now or missing - in_progress_keys(store):
        enqueue_missing(store, [m for m in models if m.key in missing], max_failures=max_failures)
    return bool(in_progress_keys(store) & missing)


def _plan(phase: str, spec: StudySpec, problem: SearchProblem, store: Store) -> list[PlannedModel]:
    main, seeds, depth = spec.main_tasks, model_seeds(spec), spec.model.depth
    if phase == "single":
        return plan_single(main, seeds, depth)
    if phase == "pairs" and uses_sampled(spec, store.study.user_attrs):
        return plan_sampled(main, seeds, depth, max_models=spec.search.max_models, seed=spec.seed)
    if phase == "pairs":
        return plan_pairs(main, seeds, depth)
    if phase == "aux":
        return plan_aux(main, problem.serves, seeds, depth)
    if phase == "depth":
        affinity = measured_affinity(losses_frame(load_records(store)), full_layer=depth)
        return plan_depth(positive_pairs(affinity, main), seeds, depth)
    raise ValueError(f"unknown phase {phase!r}; phases: {list(PHASE_ORDER)}")


class _Rungs(_Tally):
    """Shows the rungs of a halved phase as one phase: the second `phase_started` extends the
    first rung's bar instead of opening another, and only the last `phase_finished` is passed on."""

    def __init__(self, progress: SearchProgress) -> None:
        super().__init__(progress, 0)
        self.started, self.last = False, False

    def phase_started(self, phase: str, *, total: int, done: int) -> None:
        if self.started:
            self.progress.extend(total - self.total)
            self.progress.reused(done - self.done)
        else:
            self.progress.phase_started(phase, total=total, done=done)
        self.started, self.total, self.done = True, total, done

    def reused(self, n: int) -> None:
        self.done += n
        self.progress.reused(n)

    def phase_finished(self, phase: str) -> None:
        if self.last:
            self.progress.phase_finished(phase)


def _measure(store: Store, problem: SearchProblem, phase: str, *, spec: StudySpec, train_fn: Callable[..., Any],
             progress: SearchProgress, deadline: float | None, shared: bool) -> PhaseOutcome:
    """Plan and run one measured phase; aux and depth by successive halving (search/halving.py)
    unless spec.search.halving is off: every candidate on the first seed, then the other seeds for
    the candidates whose gain could still be real. Either way its models are fixed by the stored
    losses, so a rerun plans and finds the same models."""
    models = _plan(phase, spec, problem, store)
    seeds = model_seeds(spec)
    kw = {"spec": spec, "train_fn": train_fn, "deadline": deadline, "shared": shared}
    if phase not in HALVED_PHASES or not spec.search.halving or len(seeds) < 2:
        return run_phase(store, problem, _label(phase, spec, store), models, progress=progress, **kw)
    shown = _Rungs(progress)
    one = run_phase(store, problem, phase, [m for m in models if m.seed == seeds[0]], progress=shown, **kw)
    if one.status != "done":
        progress.phase_finished(phase)
        return one
    rungs = split_rungs(models, losses_frame(load_records(store)), seeds)
    shown.last = True
    two = run_phase(store, problem, phase, rungs.first + rungs.later, progress=shown, **kw)
    trained = one.trained + two.trained
    return dataclasses.replace(two, reused=two.planned - trained - two.remaining, trained=trained,
                               seconds=one.seconds + two.seconds, note=rungs.note)


def run_search(
    spec: StudySpec,
    *,
    fresh: bool = False,
    train_fn: Callable[..., Any] | None = None,
    candidates_fn: Callable[[Any, StudySpec], Sequence[Any]] | None = None,
    progress: SearchProgress | None = None,
    finalize_run: bool = True,
    join: bool = False,
    create_only: bool = False,
) -> SearchResult:
    """Run (or resume) the search of `spec` in spec.run_dir and return what it did.

    Phases single, pairs, aux and depth run in that order when listed in spec.search.phases, aux and
    depth by successive halving unless spec.search.halving is off (`_measure`); a search that
    finished with this very spec returns at once, training and recomputing nothing. No new
    stack starts after spec.search.time_limit seconds; the tables are then written from what is
    complete, and the same call later resumes. `train_fn` (default training.train_models) and
    `candidates_fn` (default auxgen.generate_candidates) can be replaced, e.g. by fakes in tests.
    `fresh` deletes the study and the run directory's tables first.

    With a shared storage (spec.search.storage other than SQLite) this process is one worker of
    many (see the module docstring): `join` refuses to create the study, `create_only` creates it
    (and the run directory's spec) and trains nothing. A worker stopped by the time limit leaves
    the tables to the worker that completes the search. SQLite storage serves one process at a
    time; a second one on the same run directory is refused (SpecError)."""
    check_search_settings(spec)  # what `validate` refuses too: weighting, storage URL, run directory
    spec = resolve_segments(spec)  # long format: tasks and main named as tasks (unchanged when wide)
    ds = build_dataset(spec)  # bad data or task columns: an error before anything is written
    # The study's settings are checked against the data as given (workers on other machines may
    # keep the file elsewhere); spec.json names it by its absolute path, so that later commands
    # (verify, export) find it from any directory.
    settings = fingerprint(spec)
    if "selection" in spec.search.phases and spec.search.selection_rows == "carve":  # the phases see fewer val rows
        settings["selection_rows"] = "carve"
    if not spec.data.startswith("builtin:"):
        spec = dataclasses.replace(spec, data=str(Path(spec.data).resolve()))
    url = storage_url(spec)
    created = rundir.make_dirs(spec.run_dir)
    opened: list[bool] = []
    try:
        lock = contextlib.nullcontext() if is_shared(url) else single_process_lock(spec.run_dir)
        with lock:
            if not is_shared(url):
                rundir.remove_temporaries(spec.run_dir)  # left by a process killed while writing a table
            return _run_search(spec, ds, settings, url=url, fresh=fresh, train_fn=train_fn, candidates_fn=candidates_fn,
                               progress=progress, finalize_run=finalize_run, join=join, create_only=create_only,
                               opened=opened)
    except BaseException:
        if created is not None and not opened:  # refused before the study opened: leave no trace
            _remove_new_dirs(Path(spec.run_dir), created)
        raise


def _remove_new_dirs(run_dir: Path, top: Path) -> None:
    """Remove the run directory and its parents up to `top`, which this process created; a parent
    another process has put something in meanwhile stays."""
    shutil.rmtree(run_dir, ignore_errors=True)
    for d in (run_dir, *run_dir.parents):
        if d != run_dir:
            try:
                d.rmdir()
            except OSError:
                return
        if d == top:
            return


AUX_SAMPLE_TASKS = 12  # a search over many tasks generates auxiliaries for this many main tasks


def aux_sample(spec: StudySpec) -> tuple[str, ...]:
    """The main tasks a search over many tasks (sampled subsets) generates auxiliary candidates
    for: AUX_SAMPLE_TASKS of them drawn with the study seed, in study order. Generating them costs
    per main task (a mutual-information estimate per candidate, input importances): at 100 tasks
    it held the search for over 20 minutes before any training."""
    main = spec.main_tasks
    if len(main) <= AUX_SAMPLE_TASKS:
        return tuple(main)
    chosen = set(np.random.default_rng(spec.seed).choice(len(main), size=AUX_SAMPLE_TASKS, replace=False).tolist())
    return tuple(t for k, t in enumerate(main) if k in chosen)


ONE_AUX_NOTE = ("a search over many tasks (sampled subsets) tries one auxiliary per main task, its best-scored, "
                f"for {AUX_SAMPLE_TASKS} main tasks drawn with the study seed; raise search.max_models to try them all")


def _search_problem(spec: StudySpec, ds: Any, run_dir: Path,
                    candidates_fn: Callable[[Any, StudySpec], Sequence[Any]] | None) -> SearchProblem:
    """The problem every phase trains on: the main tasks, the screened auxiliary candidates (their
    records written to candidates.json) and the split the phases see (with "carve", the selection
    rows hidden)."""
    screened: list[Any] = []
    if "aux" in spec.search.phases:
        from taskscout.auxgen import best_per_task, candidate_records

        if uses_sampled(spec):  # many tasks: generation per main task and T x candidates x seeds models
            mains = aux_sample(spec)
            candidates = list((candidates_fn or _generate_candidates)(ds, dataclasses.replace(spec, main=mains)))
            candidates = best_per_task(candidates, mains, ONE_AUX_NOTE)
        else:
            candidates = list((candidates_fn or _generate_candidates)(ds, spec))
        rundir.write_json(run_dir / rundir.CANDIDATES, candidate_records(ds, candidates))
        screened = [c for c in candidates if c.dropped is None and set(c.serves) & set(spec.main_tasks)]
    problem = build_problem(ds, spec.main_tasks, screened)
    if "selection" in spec.search.phases:  # "carve": the selection rows are hidden from every phase
        from taskscout.search.selection import search_split

        problem = dataclasses.replace(problem, split=search_split(ds.split, spec.search.selection_rows, spec.seed))
    return problem


def _run_search(
    spec: StudySpec,
    ds: Any,
    settings: dict[str, Any],
    *,
    url: str,
    fresh: bool,
    train_fn: Callable[..., Any] | None,
    candidates_fn: Callable[[Any, StudySpec], Sequence[Any]] | None,
    progress: SearchProgress | None,
    finalize_run: bool,
    join: bool,
    create_only: bool,
    opened: list[bool],
) -> SearchResult:
    start = time.monotonic()
    deadline = start + spec.search.time_limit if spec.search.time_limit else None
    train_fn = train_fn or _train_models
    progress = progress or _Silent()
    run_dir = Path(spec.run_dir)
    # The data was checked and the study is opened (and its settings checked) before anything is
    # written or deleted, so a refused run leaves the run directory as it was.
    shared = is_shared(url)
    liveness = (spec.search.heartbeat_interval, spec.search.grace_period) if shared else None
    store = open_store(url, spec.name, fingerprint=settings, spec_json=spec.to_json(), fresh=fresh,
                       create=not join, liveness=liveness)
    opened.append(True)
    done = None if fresh or create_only else _already_finished(store, spec, run_dir, finalize_run=finalize_run)
    if done is not None:  # the same search, finished: nothing to train or recompute
        store.close()
        return SearchResult(run_dir=run_dir, study_name=spec.name, storage=url, phases=done[0], stopped_by_time_limit=False,
                            seconds=time.monotonic() - start, tables=done[1], finalized=done[2], data_notes=ds.notes,
                            rerun=True)
    if fresh:
        _clear_run_files(run_dir)
    problem = _search_problem(spec, ds, run_dir, candidates_fn)
    rundir.write_text(run_dir / rundir.SPEC, spec.to_json() + "\n")
    if create_only:
        store.close()
        return SearchResult(run_dir=run_dir, study_name=spec.name, storage=url, phases=(),
                            stopped_by_time_limit=False, seconds=time.monotonic() - start, tables={},
                            finalized=(), data_notes=ds.notes)
    recover_abandoned(store, single_process=not shared)

    outcomes = []
    stopped = False
    for phase in PHASE_ORDER:
        if phase not in spec.search.phases:
            outcomes.append(PhaseOutcome(phase, 0, 0, 0, 0, 0.0, "skipped"))
            continue
        if stopped:
            outcomes.append(PhaseOutcome(phase, 0, 0, 0, 0, 0.0, "not started"))
            continue
        if phase == "pairs":
            _choose_pairs_plan(spec, store, deadline)
        outcome = _measure(store, problem, phase, spec=spec, train_fn=train_fn, progress=progress,
                           deadline=deadline, shared=shared)
        outcomes.append(outcome)
        stopped = outcome.status == "stopped"
    store.close()

    tables: dict[str, Path] = {}
    finalized: tuple[str, ...] = ()
    elsewhere = False
    if not (shared and stopped):  # a stopped worker leaves the tables to the one that completes the search
        # Shared storage: the first worker to get here finishes the run (the subsets and estimators
        # phases, the tables, the report); the others end, and find the tables in its directory.
        finishing = try_run_lock(url, f"finish:{spec.name}") if shared else contextlib.nullcontext(True)
        with finishing as finisher:
            elsewhere = not finisher
            if finisher:
                tables, finalized = _finish(spec, problem, ds.split, store, outcomes, url=url, stopped=stopped,
                                            train_fn=train_fn, progress=progress, finalize_run=finalize_run,
                                            deadline=deadline, shared=shared)
    return SearchResult(run_dir=run_dir, study_name=spec.name, storage=url, phases=tuple(outcomes),
                        stopped_by_time_limit=stopped, seconds=time.monotonic() - start, tables=tables,
                        finalized=finalized, finished_elsewhere=elsewhere, data_notes=ds.notes)


def _selection(spec: StudySpec, problem: SearchProblem, split: Any, store: Store, *, stopped: bool,
               train_fn: Callable[..., Any], progress: SearchProgress, deadline: float | None,
               shared: bool) -> PhaseOutcome:
    """The selection stage (search/selection.py), after the tables are written; its selection.json
    is removed first, so a recommendation never rests on an earlier run's choice."""
    (Path(spec.run_dir) / rundir.SELECTION).unlink(missing_ok=True)
    if stopped:
        return PhaseOutcome("selection", 0, 0, 0, 0, 0.0, "not started")
    if len(problem.main) < 2:
        return PhaseOutcome("selection", 0, 0, 0, 0, 0.0, "skipped", note="one main task: nothing to choose")
    if not (Path(spec.run_dir) / rundir.COMPUTE).exists() or "single" not in spec.search.phases:
        return PhaseOutcome("selection", 0, 0, 0, 0, 0.0, "skipped",
                            note="it needs the single phase (all-separate is its yardstick)")
    from taskscout.search.selection import run_selection_phase

    outcome, _ = run_selection_phase(store, problem, split, spec=spec, train_fn=train_fn, progress=progress,
                                     deadline=deadline, shared=shared)
    return outcome


def _finish(spec: StudySpec, problem: SearchProblem, split: Any, store: Store, outcomes: list[PhaseOutcome], *,
            url: str, stopped: bool, train_fn: Callable[..., Any], progress: SearchProgress, finalize_run: bool,
            deadline: float | None, shared: bool) -> tuple[dict[str, Path], tuple[str, ...]]:
    """After the measured phases: the subsets and estimators phases (their outcomes join
    `outcomes`), the tables, the selection stage, and the later stages; the tables written and the
    stages that ran."""
    run_dir = Path(spec.run_dir)
    records = load_records(store)
    built = build_tables(records, spec)
    if not stopped:
        outcomes += _beyond_pairs(spec, problem, records, built, url=url, study=store.study,
                                  train_fn=train_fn, progress=progress)
    else:
        outcomes += [PhaseOutcome(p, 0, 0, 0, 0, 0.0, "not started")
                     for p in ("subsets", "estimators") if p in spec.search.phases]
    tables = write_tables(run_dir, built)
    if finalize_run and "selection" in spec.search.phases:
        outcomes.append(_selection(spec, problem, split, store, stopped=stopped, train_fn=train_fn,
                                   progress=progress, deadline=deadline, shared=shared))
    unfinished = [o.phase for o in outcomes if o.status in ("stopped", "not started")]
    store.study.set_user_attr(UNFINISHED_ATTR, unfinished)  # for `report --rebuild`
    finalized = finalize(run_dir, unfinished=unfinished) if finalize_run else ()
    if not unfinished:
        store.study.set_user_attr(FINISHED_ATTR, {
            "spec": spec.to_json(), "complete": len(completed_keys(store)), "finalized": list(finalized),
            "tables": sorted(tables), "phases": [dataclasses.asdict(o) for o in outcomes]})
    return tables, finalized


# A search that finished records here what it was and what it wrote; the same search run again
# on the same storage and run directory returns that (`_already_finished`) instead of redoing it.
FINISHED_ATTR = "finished_run"
_FINISHED_FILES = {"recommendation": rundir.RECOMMENDATION, "report": rundir.REPORT}


def _already_finished(store: Store, spec: StudySpec, run_dir: Path, *, finalize_run: bool
                      ) -> tuple[tuple[PhaseOutcome, ...], dict[str, Path], tuple[str, ...]] | None:
    """The phases (all reused), tables and later stages of the finished search `spec` when the
    storage says it finished with this very spec and no model was added since, and the run
    directory still holds what it wrote; else None. Nothing is trained or computed."""
    mark = store.study.user_attrs.get(FINISHED_ATTR)
    if not mark or mark["spec"] != spec.to_json() or (finalize_run and not mark["finalized"]):
        return None
    files = [*mark["tables"], rundir.SPEC, *(_FINISHED_FILES[s] for s in mark["finalized"])]
    if not all((run_dir / f).exists() for f in files) or mark["complete"] != len(completed_keys(store)):
        return None
    phases = tuple(PhaseOutcome(**{**o, "reused": o["planned"] - o["remaining"], "trained": 0, "seconds": 0.0})
                   for o in mark["phases"])
    return phases, {name: run_dir / name for name in mark["tables"]}, tuple(mark["finalized"])


def _beyond_pairs(
    spec: StudySpec,
    problem: SearchProblem,
    records: Sequence[Any],
    tables: dict[str, Any],
    *,
    url: str,
    study: Any,
    train_fn: Callable[..., Any],
    progress: SearchProgress,
) -> list[PhaseOutcome]:
    """The `subsets` and `estimators` phases, after the measured ones: Optuna-proposed task subsets
    with the surrogate fitted on them, and the cheap estimators; their rows join `tables` in place
    (affinity.csv with their `method`, compute.csv, agreement.csv, rsa_layers.csv,
    subset_observations.csv). Subsets resume from their proposer study; the estimators' results are
    kept in `study` (the search's), so a rerun reuses them, and shown when the phase is not asked for."""
    outcomes = []
    wanted = [p for p in ("subsets", "estimators") if p in spec.search.phases]
    if len(problem.main) < 2:
        return [PhaseOutcome(p, 0, 0, 0, 0, 0.0, "skipped") for p in ("subsets", "estimators")]
    if uses_sampled(spec, study.user_attrs):
        return _skipped_by_sampling(spec, wanted, study.user_attrs)
    subsets = None
    results: dict[str, Any] = {}
    losses = losses_frame(records)
    missing = missing_normalisers(losses, problem.main, model_seeds(spec)) if "subsets" in wanted else []
    if "subsets" not in wanted:
        outcomes.append(PhaseOutcome("subsets", 0, 0, 0, 0, 0.0, "skipped"))
    elif spec.search.subsets > 0 and missing:
        # a subset's score is its tasks' losses over their single-task losses: none could be scored
        cause = ("--skip single left them unmeasured" if "single" not in spec.search.phases
                 else "the single phase did not complete them")
        outcomes.append(PhaseOutcome("subsets", 0, 0, 0, 0, 0.0, "skipped",
                                     note=f"it needs the single-task losses of every main task and seed, and "
                                          f"{cause} (e.g. {missing[0][0]} seed {missing[0][1]}); "
                                          f"run without --skip single to measure them"))
    elif spec.search.subsets > 0:
        began = time.monotonic()
        total = spec.search.subsets * spec.training.seeds
        progress.phase_started("subsets", total=total, done=0)
        bar = _Tally(progress, total)
        custom = None if train_fn is _train_models else train_fn
        subsets = run_subsets_phase(spec, problem, losses=losses, storage=url, train_fn=custom, progress=bar.advance,
                                    planned=bar.extend, halving=spec.search.halving, prune=False)
        # The phase's models: every subset model stored (earlier runs' are reused; confirmation
        # may add models beyond the sampled subsets) and the normalisers (trained once, then kept).
        n = int(subsets.run.compute.models)
        # (Not the `total` announced: with few tasks there are fewer subsets than asked for.)
        planned = max(subsets.stored_models + subsets.normalisers, n)
        bar.settle(planned)  # the bar ends where the summary does: reused models count as done
        progress.phase_finished("subsets")
        halved = Rungs((), (), subsets.run.halved, subsets.run.dropped).note.replace("candidates", "subsets", 1)
        outcomes.append(PhaseOutcome("subsets", planned, planned - n, n, 0, time.monotonic() - began, "done", note=halved))
    if "estimators" in wanted:
        outcomes.append(_estimators_phase(spec, problem, study, results, progress))
    else:  # diagnostics an earlier run computed on request are still shown
        results.update(stored_estimators(study, problem, spec))
        outcomes.append(PhaseOutcome("estimators", 0, 0, 0, 0, 0.0, "skipped", note=ESTIMATORS_NOTE if not results else ""))
    compute = tables[rundir.COMPUTE]
    extra = estimator_tables(measured=tables[rundir.AFFINITY], measured_compute=measured_compute(compute),
                             results=results, subsets=subsets)
    tables[rundir.AFFINITY] = pd.concat([tables[rundir.AFFINITY], extra.pop("affinity_rows")], ignore_index=True)
    tables[rundir.COMPUTE] = pd.concat([compute, extra.pop(rundir.COMPUTE)], ignore_index=True)
    tables.update(extra)
    return outcomes


def _estimators_phase(spec: StudySpec, problem: SearchProblem, study: Any, results: dict[str, Any],
                      progress: SearchProgress) -> PhaseOutcome:
    """Run each cheap estimator that `study` does not keep yet (and keep it there); all of them,
    stored or new, go into `results`."""
    began = time.monotonic()
    stored = {n: r for n, r in stored_estimators(study, problem, spec).items() if n in PHASE_ESTIMATORS}
    results.update(stored)
    # Counted in models, as compute.csv counts them (rsa trains a model per head and seed); the
    # bar grows as each estimator reports what it trained.
    reused = sum(r.compute.models for r in stored.values())
    progress.phase_started("estimators", total=reused, done=reused)
    bar = _Tally(progress, reused)
    bar.done = reused
    for name in PHASE_ESTIMATORS:
        if name in stored:
            continue
        got = run_estimators_phase(spec, problem, names=(name,))
        for r in got.values():
            store_estimator(study, r, problem, spec)
        results.update(got)
        trained = sum(r.compute.models for r in got.values())
        bar.extend(trained)
        bar.advance(trained)
    progress.phase_finished("estimators")
    return PhaseOutcome("estimators", bar.done, reused, bar.done - reused, 0, time.monotonic() - began, "done")


def _label(phase: str, spec: StudySpec, store: Store) -> str:
    """The name the progress bar and the summary give a phase: "sampled" for a pairs phase that
    trains sampled subsets (many tasks)."""
    return "sampled" if phase == "pairs" and uses_sampled(spec, store.study.user_attrs) else phase


def _choose_pairs_plan(spec: StudySpec, store: Store, deadline: float | None) -> None:
    """With a time limit, before the pairs phase first starts: record in the study whether all
    pairs x seeds fit in the time left (plan.pairs_fit_in_time, from the single models' mean
    seconds), else the sampled subsets (`uses_sampled` then reads it). Made once, so a resumed
    search plans the same models whatever time it is given."""
    if (deadline is None or "pairs" not in spec.search.phases or PAIRS_PLAN_ATTR in store.study.user_attrs
            or len(spec.main_tasks) < 3 or uses_sampled(spec)):
        return
    seconds = [float(r.result.get("seconds", 0.0)) for r in load_records(store) if r.model.phase == "single"]
    if not seconds:  # nothing to estimate from (--skip single): the pairs as planned
        return
    single, left = sum(seconds) / len(seconds), deadline - time.monotonic()
    fits = pairs_fit_in_time(len(spec.main_tasks), spec.training.seeds, single, left)
    store.study.set_user_attr(PAIRS_PLAN_ATTR, {
        "plan": "pairs" if fits else "sampled", "single_seconds": round(single, 4), "seconds_left": round(left, 1),
        "pairs_seconds": round(pairs_seconds(len(spec.main_tasks), spec.training.seeds, single), 1)})


def _skipped_by_sampling(spec: StudySpec, wanted: Sequence[str], user_attrs: Mapping[str, Any]) -> list[PhaseOutcome]:
    """The subsets and estimators phases of a search that trained sampled subsets: skipped. The
    sampled phase measured task subsets already; the Optuna subsets' surrogate (with its T^2
    interaction terms) and the estimators' agreement with measured pairs have no place there."""
    chosen = user_attrs.get(PAIRS_PLAN_ATTR, {})
    why = (f"all pairs x seeds exceed search.max_models = {spec.search.max_models}" if uses_sampled(spec) else
           f"all pairs x seeds would take about {chosen.get('pairs_seconds', 0):.0f} s, more than half of the "
           f"{chosen.get('seconds_left', 0):.0f} s the time limit left")
    note = f"the search trained sampled subsets instead of pairs ({len(spec.main_tasks)} tasks: {why})"
    return [PhaseOutcome(p, 0, 0, 0, 0, 0.0, "skipped", note=note) for p in wanted]


def finalize(run_dir: str | Path, *, unfinished: Sequence[str] = ()) -> tuple[str, ...]:
    """Rebuild the recommendation of `run_dir` from its tables (grouping.recommend_run; provisional
    when phases in `unfinished` were cut short). The stages that ran. The report comes after the
    search in the stage order, so its caller (the `search` command, the Python API) builds it."""
    recommend_run(run_dir, unfinished=unfinished)
    return ("recommendation",)
