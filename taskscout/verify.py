"""`taskscout verify`: does the recommendation beat its baselines on rows the search never saw?

From a run directory's spec.json and recommendation.json, rebuild the data set and the
recommended auxiliaries, then train three configurations with fresh seeds (VERIFY_SEED_OFFSET +
100 * study seed + k, never among the search's seeds, which are 100 * study seed + 0..99):

- recommended: one network per recommended group, trained on its tasks and auxiliaries at its
  branch layer; the tasks it serves select its best epoch, and each task is read from the network
  that serves it;
- separate: one network per task;
- together: one network with every task and the whole trunk shared (branch layer L).

Every network is evaluated on the test split, which the search never looks at. Per task and
seed, gain = (L[baseline] - L[recommended]) / L[baseline] on test loss (paired: same seed for the
three configurations); the reported gain is its mean over seeds with a 95% Student-t interval.
The overall gain is, per seed, the mean of the tasks' gains, with the same interval over seeds.
Networks that come out identical (a singleton group without auxiliaries is the same network as
that task's separate one) are trained once.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from taskscout import rundir
from taskscout.affinity.measured import paired_gains, t_interval
from taskscout.data import Dataset, build_dataset
from taskscout.errors import MissingResultsError, SpecError
from taskscout.spec import StudySpec, spec_from_json

if TYPE_CHECKING:
    from taskscout.search.problem import SearchProblem

VERIFY_SEED_OFFSET = 10_000
MIN_DEFAULT_SEEDS = 10
CONFIGS = ("recommended", "separate", "together")


@dataclass(frozen=True)
class Verification:
    """Test-split results of the recommended configuration and both baselines."""

    tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    loss: Mapping[str, Mapping[str, Mapping[int, float]]]  # config -> task -> seed -> test loss
    metric: Mapping[str, Mapping[str, Mapping[int, float]]]  # config -> task -> seed -> test metric
    metric_name: Mapping[str, str]  # task -> auc | accuracy | rmse
    gain_vs_separate: Mapping[str, tuple[float, float, float]]  # task -> (mean, low, high)
    gain_vs_together: Mapping[str, tuple[float, float, float]]
    overall_vs_separate: tuple[float, float, float]
    overall_vs_together: tuple[float, float, float]
    models_trained: int
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        """The verify.json object (DESIGN.md), plus seeds, overall gains and models trained."""
        per_task = {
            t: {
                c: {
                    "loss": _mean(self.loss[c][t].values()),
                    "metric": _mean(self.metric[c][t].values()),
                    "metric_name": self.metric_name[t],
                }
                for c in CONFIGS
            }
            for t in self.tasks
        }
        return rundir.json_safe({
            "tasks": per_task,
            "gain_vs_separate": {t: list(v) for t, v in self.gain_vs_separate.items()},
            "gain_vs_together": {t: list(v) for t, v in self.gain_vs_together.items()},
            "verdict": self.verdict,
            "overall_gain_vs_separate": list(self.overall_vs_separate),
            "overall_gain_vs_together": list(self.overall_vs_together),
            "seeds": list(self.seeds),
            "models_trained": self.models_trained,
        })


def _mean(values: Any) -> float:
    v = [x for x in values if math.isfinite(x)]
    return float(np.mean(v)) if v else math.nan


def default_seed_count(study_seeds: int) -> int:
    """Seeds per configuration when the user gives none: the study's count, at least
    MIN_DEFAULT_SEEDS. With the 3 seeds of a default budget a 95% Student-t interval is 4.3
    standard errors wide on either side (t with 2 degrees of freedom), which hid a +7.7% gain over
    all-together on the planted demo that 10 seeds (t = 2.26) resolve, for 2 s more there."""
    return max(MIN_DEFAULT_SEEDS, int(study_seeds))


def fresh_seeds(study_seed: int, n: int) -> tuple[int, ...]:
    """`n` model seeds that the search of a study with `study_seed` never uses."""
    if not isinstance(n, int) or not 1 <= n <= 100:
        raise SpecError(f"the number of verification seeds must be an int in [1, 100]. Got {n!r} instead.")
    return tuple(VERIFY_SEED_OFFSET + 100 * study_seed + k for k in range(n))


def _groups(rec: Mapping[str, Any]) -> list[dict[str, Any]]:
    tasks = list(rec.get("tasks", []))
    groups = list(rec.get("groups", []))
    assignment = dict(rec.get("assignment", {}))
    if not tasks or not groups or set(assignment) != set(tasks):
        raise MissingResultsError(
            "recommendation.json has no usable groups/assignment for its tasks; rebuild it with "
            "`taskscout search` (or grouping.recommend_run)"
        )
    out = []
    for i, g in enumerate(groups):
        members = list(g["tasks"])
        served = [t for t in tasks if assignment[t] == i]
        if not set(served) <= set(members) or not set(members) <= set(tasks):
            raise MissingResultsError(
                f"recommendation.json: group {i} {members} does not contain the tasks assigned to it {served}; "
                "rebuild the recommendation"
            )
        if served:
            out.append({"tasks": members, "serves": served, "branch_layer": int(g["branch_layer"]),
                        "aux": [a["name"] for a in g.get("aux", [])]})
    return out


def _verdict(name: str, overall: tuple[float, float, float], n_seeds: int, *, same: bool = False) -> str:
    """How the recommendation compares with the baseline `name`; `same`: it trains the very same
    networks (e.g. the recommendation is to train every task separately)."""
    if same:
        return f"trains the same networks as {name}"
    mean, low, high = overall
    if n_seeds < 2:
        how = "cannot be told apart from (one seed gives no interval)"
    elif low > 0:
        how = "beats"
    elif high < 0:
        how = "loses to"
    else:
        how = "is within noise of"
    return f"{how} {name} ({100 * mean:+.1f}% test loss, 95% interval [{100 * low:+.1f}%, {100 * high:+.1f}%])"


def check_verify_inputs(run_dir: str | Path, *, seeds: int | None) -> Path:
    """The run directory, after checking it holds a recommendation to verify and that `seeds`
    (when given) can give an interval."""
    if seeds is not None and (not isinstance(seeds, int) or seeds < 2):
        raise SpecError(f"--seeds must be an int >= 2: a confidence interval needs at least two seeds. Got {seeds!r} instead.")
    return rundir.require(run_dir, rundir.SPEC, rundir.RECOMMENDATION)


def _problem(spec: StudySpec, ds: Dataset, tasks: Sequence[str], groups: Sequence[Mapping[str, Any]]) -> SearchProblem:
    """The training problem of the recommendation: its tasks and the auxiliaries it names, which
    must still be among the candidates this spec generates."""
    from taskscout.auxgen import generate_candidates
    from taskscout.search.problem import build_problem

    unknown = [t for t in tasks if t not in ds.task_names]
    if unknown:
        raise MissingResultsError(
            f"recommendation.json names task {unknown[0]!r}, which spec.json does not define; "
            "the run directory mixes two studies: rerun `taskscout search`"
        )
    wanted = sorted({a for g in groups for a in g["aux"]})
    aux_tasks = []
    if wanted:
        by_name = {a.name: a for a in generate_candidates(ds, spec)}
        missing = [a for a in wanted if a not in by_name]
        if missing:
            raise MissingResultsError(
                f"recommended auxiliary {missing[0]!r} is not among the candidates this spec generates now "
                f"({len(by_name)} candidates); the data or auxiliary settings changed: rerun `taskscout search`"
            )
        aux_tasks = [by_name[a] for a in wanted]
    return build_problem(ds, tasks, aux_tasks)


def _reads(problem: SearchProblem, groups: Sequence[Mapping[str, Any]], tasks: Sequence[str],
           seeds: Sequence[int], depth: int) -> dict[tuple[str, str, int], Any]:
    """(config, task, seed) -> the trainer's ModelPlan whose result gives that task's test loss."""
    from taskscout.training import ModelPlan

    index = problem.head_index

    def plan(targets: Sequence[str], main: Sequence[str], seed: int, layer: int, aux: Sequence[str] = ()) -> ModelPlan:
        dropped = sorted({f for a in aux for f in problem.dropped.get(a, ())})
        return ModelPlan(targets=tuple(index[n] for n in (*targets, *aux)), main=tuple(index[n] for n in main),
                         seed=seed, branch_layer=layer, dropped_features=tuple(dropped))

    reads: dict[tuple[str, str, int], Any] = {}
    for seed in seeds:
        for g in groups:
            p = plan(g["tasks"], g["serves"], seed, g["branch_layer"], g["aux"])
            for t in g["serves"]:
                reads[("recommended", t, seed)] = p
        for t in tasks:
            reads[("separate", t, seed)] = plan([t], [t], seed, depth)
        together = plan(tasks, tasks, seed, depth)
        for t in tasks:
            reads[("together", t, seed)] = together
    return reads


def _gains(loss: Mapping[str, Mapping[str, Mapping[int, float]]], baseline: str, tasks: Sequence[str],
           seeds: Sequence[int]) -> tuple[dict[str, tuple[float, float, float]], tuple[float, float, float]]:
    """Per task and overall: the recommendation's paired test-loss gain over `baseline`, as
    (mean, low, high) of a 95% t interval over seeds (overall: per seed the mean over tasks)."""
    per_task = {}
    per_seed: dict[int, list[float]] = {s: [] for s in seeds}
    for t in tasks:
        g = paired_gains(loss[baseline][t], loss["recommended"][t])
        iv = t_interval(g.values())
        per_task[t] = (iv.mean, iv.low, iv.high)
        for s, v in g.items():
            per_seed[s].append(v)
    overall = t_interval([float(np.mean(v)) for v in per_seed.values() if len(v) == len(tasks)])
    return per_task, (overall.mean, overall.low, overall.high)


def verify_run(
    run_dir: str | Path,
    *,
    seeds: int | None = None,
    device: str = "auto",
    progress: Callable[[int], None] | None = None,
    on_plans: Callable[[int], None] | None = None,
) -> Verification:
    """Train the recommended configuration, all-separate and all-together with fresh seeds,
    evaluate them on the test split, and write verify.json into `run_dir`.

    `seeds` defaults to `default_seed_count(study's seed count)`; `progress(n)` is called as models finish and
    `on_plans(total)` once with the number of models to train.
    """
    from taskscout.training import train_models

    d = check_verify_inputs(run_dir, seeds=seeds)
    spec = spec_from_json((d / rundir.SPEC).read_text(encoding="utf-8"))
    rec = rundir.read_json(d / rundir.RECOMMENDATION)
    groups = _groups(rec)
    tasks = tuple(rec["tasks"])
    seed_list = fresh_seeds(spec.seed, default_seed_count(spec.training.seeds) if seeds is None else seeds)
    ds = build_dataset(spec)
    problem = _problem(spec, ds, tasks, groups)
    reads = _reads(problem, groups, tasks, seed_list, spec.model.depth)
    unique = list(dict.fromkeys(reads.values()))
    if on_plans is not None:
        on_plans(len(unique))
    results = train_models(
        problem.X, problem.Y, problem.heads, problem.split,
        [dataclasses.replace(p, key=str(i)) for i, p in enumerate(unique)],
        model=spec.model, training=spec.training, device=device, eval_splits=("val", "test"), progress=progress,
    )
    by_plan = dict(zip(unique, results, strict=True))

    index = problem.head_index
    loss: dict[str, dict[str, dict[int, float]]] = {c: {t: {} for t in tasks} for c in CONFIGS}
    metric: dict[str, dict[str, dict[int, float]]] = {c: {t: {} for t in tasks} for c in CONFIGS}
    for (config, t, seed), p in reads.items():
        r = by_plan[p]
        loss[config][t][seed] = float(r.loss["test"][index[t]])
        metric[config][t][seed] = float(r.metric["test"][index[t]])
    vs_sep, overall_sep = _gains(loss, "separate", tasks, seed_list)
    vs_tog, overall_tog = _gains(loss, "together", tasks, seed_list)

    def same_as(baseline: str) -> bool:
        return all(reads[("recommended", t, s)] == reads[(baseline, t, s)] for t in tasks for s in seed_list)

    verdict = (
        f"On the test split ({len(seed_list)} fresh seeds) the recommendation "
        f"{_verdict('training every task separately', overall_sep, len(seed_list), same=same_as('separate'))} and "
        f"{_verdict('training all tasks together', overall_tog, len(seed_list), same=same_as('together'))}."
    )
    result = Verification(
        tasks=tasks, seeds=seed_list, loss=loss, metric=metric,
        metric_name={t: ds.task(t).metric_name for t in tasks},
        gain_vs_separate=vs_sep, gain_vs_together=vs_tog,
        overall_vs_separate=overall_sep, overall_vs_together=overall_tog,
        models_trained=len(unique), verdict=verdict,
    )
    rundir.write_json(d / rundir.VERIFY, result.to_dict())
    return result
