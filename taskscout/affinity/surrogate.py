"""Higher-order task affinity: a surrogate model of each task's loss over task subsets.

After Li, Nguyen and Zhang (2023): train models on task subsets, then fit, per task i, a linear
model from subset membership to task i's normalised loss (its loss in the subset divided by its
single-task loss, paired per seed):

    norm_loss_i(S) = b0 + sum_j b_j [j in S] + sum_{j<k} c_jk [j in S][k in S] + noise

over the subsets S that contain i (the single-task model, S = {i}, anchors b0 near 1). The
coefficient b_j is what adding j does to i's loss, so `gain(j -> i) = -b_j` is the surrogate's
affinity; the model predicts the loss of any subset, including ones never trained.

The fit is Bayesian linear regression with a conjugate Normal-inverse-gamma prior: coefficients
~ N(0, sigma^2 / alpha), noise variance sigma^2 ~ InvGamma(a0, b0); main effects and
interactions have their own prior precision (alpha_main, alpha_pair), chosen on a grid by the
marginal likelihood (evidence). Interaction terms c_jk are offered only for pairs (j, k) seen
together in at least `min_pair_count` subsets containing i ("when there is data for them"); with
`interactions="auto"` the model with interactions is kept only when its evidence beats the
main-effects model. Intervals are Student t posterior intervals: for a subset's expected
normalised loss (the mean over seeds, the quantity grouping needs) and for each coefficient.
The interval of a subset's expected loss shrinks towards zero as observations accumulate.

Which subsets to train (Optuna proposals, pruning) and their training live in
`taskscout.affinity.subsets`; this module only fits and predicts.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from taskscout import rundir
from taskscout.affinity.base import (
    AffinityEstimator,
    AffinityProblem,
    Compute,
    EstimatorResult,
    register_estimator,
)
from taskscout.device import one_blas_thread
from taskscout.errors import DataError

GRID = tuple(float(a) for a in np.logspace(-3, 3, 13))  # prior precisions tried (relative to noise)
A0 = B0 = 1e-3  # weak inverse-gamma prior on the noise variance
ALPHA_INTERCEPT = 1e-4  # the intercept is left nearly free


@functools.lru_cache(maxsize=256)
def _t_quantile(level: float, dof: float) -> float:
    """The two-sided Student t quantile at `level` (scipy's ppf is slow enough to matter per group)."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, dof))


@dataclass(frozen=True, eq=False)
class TaskSurrogate:
    """The fitted surrogate of one task: terms, posterior, and what it was fitted on."""

    task: str
    terms: tuple[str, ...]  # "" (intercept), "j" (main effect), "j*k" (interaction)
    mean: np.ndarray  # posterior mean of the coefficients, in `terms` order
    precision: np.ndarray  # posterior precision matrix Lambda_n (noise-scaled)
    a_n: float
    b_n: float
    alpha_main: float
    alpha_pair: float
    n_obs: int
    log_evidence: float
    counts: Mapping[str, int] = field(default_factory=dict)  # observations whose subset holds each term

    @property
    def dof(self) -> float:
        return 2.0 * self.a_n

    @property
    def noise_variance(self) -> float:
        """Posterior mean of the noise variance sigma^2 (per observation)."""
        return self.b_n / (self.a_n - 1.0) if self.a_n > 1 else math.inf

    @functools.cached_property
    def covariance(self) -> np.ndarray:
        """The inverse of `precision` (noise-scaled posterior covariance), computed once."""
        return np.linalg.inv(self.precision)

    @functools.cached_property
    def _term_index(self) -> tuple[dict[str, int], np.ndarray, np.ndarray]:
        """Each task named in a term -> a column; per term its first and second task's column
        (the intercept: column 0, always in; a main effect names its task twice)."""
        names: dict[str, int] = {"": 0}
        first, second = [], []
        for term in self.terms:
            parts = term.split("*") if term else [""]
            cols = [names.setdefault(p, len(names)) for p in parts]
            first.append(cols[0])
            second.append(cols[-1])
        return names, np.array(first, dtype=int), np.array(second, dtype=int)

    def design(self, members: Iterable[str]) -> np.ndarray:
        """The feature vector of a subset (its tasks; the task itself may or may not be listed)."""
        names, first, second = self._term_index
        inside = np.zeros(len(names), dtype=bool)
        inside[0] = True
        for m in members:
            k = names.get(m)
            if k is not None:
                inside[k] = True
        return (inside[first] & inside[second]).astype(float)

    def _t(self, level: float) -> float:
        return _t_quantile(level, self.dof)

    def predict(self, members: Iterable[str], *, level: float = 0.95, observation: bool = False) -> tuple[float, float, float]:
        """(mean, low, high): the subset's expected normalised loss for this task and its interval.

        With `observation`, the interval is for one new observation (one seed), which includes
        the noise and does not shrink below it.
        """
        x = self.design(members)
        mean = float(x @ self.mean)
        var = float(x @ self.covariance @ x) + (1.0 if observation else 0.0)
        half = self._t(level) * math.sqrt(self.b_n / self.a_n * var)
        return mean, mean - half, mean + half

    def coefficient(self, term: str, *, level: float = 0.95) -> tuple[float, float, float]:
        """(mean, low, high) of one coefficient ("j" or "j*k"); (0, nan, nan) if not a term."""
        if term not in self.terms:
            return 0.0, math.nan, math.nan
        k = self.terms.index(term)
        half = self._t(level) * math.sqrt(self.b_n / self.a_n * self.covariance[k, k])
        m = float(self.mean[k])
        return m, m - half, m + half


@dataclass(frozen=True, eq=False)
class Surrogate:
    """Per-task surrogates over one universe of tasks."""

    tasks: tuple[str, ...]  # the universe, in study order
    per_task: Mapping[str, TaskSurrogate]

    def predict(self, group: Iterable[str], *, level: float = 0.95) -> dict[str, tuple[float, float, float]]:
        """For each fitted task in `group`: (mean, low, high) of its expected normalised loss there."""
        group = list(group)
        return {t: self.per_task[t].predict(group, level=level) for t in group if t in self.per_task}

    def group_scores(self, groups: Iterable[Iterable[str]], *, level: float = 0.95) -> pd.DataFrame:
        """Predicted normalised losses in the `group_scores.csv` format, `source = "surrogate"`."""
        rows = []
        for g in groups:
            g = list(g)
            key = rundir.group_key(g, self.tasks)
            for t, (m, lo, hi) in self.predict(g, level=level).items():
                rows.append((key, t, m, lo, hi, self.per_task[t].n_obs, "surrogate"))
        return pd.DataFrame(rows, columns=list(rundir.GROUP_SCORE_COLUMNS))

    def coefficients(self, *, level: float = 0.95) -> pd.DataFrame:
        """Every fitted coefficient: task, term, coef, ci_low, ci_high, n_obs (subsets holding the term)."""
        rows = []
        for t, s in self.per_task.items():
            for term in s.terms:
                m, lo, hi = s.coefficient(term, level=level)
                rows.append((t, term or "(intercept)", m, lo, hi, int(s.counts.get(term, s.n_obs))))
        return pd.DataFrame(rows, columns=["task", "term", "coef", "ci_low", "ci_high", "n_obs"])

    def affinity_rows(self, sources: Iterable[str] | None = None, *, level: float = 0.95) -> pd.DataFrame:
        """`affinity.csv` rows, `method = "surrogate"`: gain(j -> i) = -(main effect of j on i).

        `n_seeds` holds the number of observations of i whose subset contained j.
        """
        sources = list(sources) if sources is not None else list(self.tasks)
        rows = []
        for t, s in self.per_task.items():
            for j in sources:
                if j == t:
                    continue
                m, lo, hi = s.coefficient(j, level=level)
                rows.append((j, t, -m, -hi, -lo, int(s.counts.get(j, 0)), "surrogate"))
        return pd.DataFrame(rows, columns=list(rundir.AFFINITY_COLUMNS))


def _posterior(gram: tuple[np.ndarray, np.ndarray, float, int],
               prior: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float, float]:
    """Conjugate NIG posterior and log evidence for prior precisions `prior` (diagonal), from
    `gram` = (X'X, X'y, y'y, n), which the grid of priors shares."""
    from scipy.linalg import cho_factor, cho_solve

    xtx, xty, yy, n = gram
    precision = xtx + np.diag(prior)
    factor = cho_factor(precision, lower=True, check_finite=False)  # one factorisation: solve and log det
    mean = cho_solve(factor, xty, check_finite=False)
    a_n = A0 + n / 2.0
    b_n = B0 + 0.5 * float(yy - mean @ xty)
    b_n = max(b_n, 1e-12)
    logdet_n = 2.0 * float(np.log(np.diag(factor[0])).sum())
    log_ev = (
        -0.5 * n * math.log(2 * math.pi) + 0.5 * float(np.log(prior).sum()) - 0.5 * logdet_n
        + A0 * math.log(B0) - a_n * math.log(b_n) + math.lgamma(a_n) - math.lgamma(A0)
    )
    return mean, precision, a_n, b_n, log_ev


def _fit_terms(task: str, terms: list[str], X: np.ndarray, y: np.ndarray, counts: dict[str, int]) -> TaskSurrogate:
    kinds = np.array([0 if t == "" else (2 if "*" in t else 1) for t in terms])
    best: TaskSurrogate | None = None
    pair_grid = GRID if (kinds == 2).any() else (1.0,)
    gram = (X.T @ X, X.T @ y, float(y @ y), len(y))
    for a_main in GRID:
        for a_pair in pair_grid:
            prior = np.where(kinds == 0, ALPHA_INTERCEPT, np.where(kinds == 1, a_main, a_pair))
            mean, precision, a_n, b_n, log_ev = _posterior(gram, prior)
            if best is None or log_ev > best.log_evidence:
                best = TaskSurrogate(
                    task=task, terms=tuple(terms), mean=mean, precision=precision, a_n=a_n, b_n=b_n,
                    alpha_main=a_main, alpha_pair=a_pair if (kinds == 2).any() else math.nan,
                    n_obs=len(y), log_evidence=log_ev, counts=counts,
                )
    assert best is not None
    return best


def fit_task_surrogate(
    task: str,
    subsets: Sequence[Iterable[str]],
    norm_loss: Sequence[float],
    *,
    universe: Sequence[str],
    interactions: bool | str = "auto",
    min_pair_count: int = 3,
) -> TaskSurrogate:
    """Fit task `task`'s surrogate on observations (subset containing it, its normalised loss)."""
    others = [u for u in universe if u != task]
    sets = [set(s) for s in subsets]
    y = np.asarray(norm_loss, dtype=float)
    if len(sets) != len(y):
        raise DataError(f"{len(sets)} subsets but {len(y)} losses for task {task!r}")
    if len(y) < 2:
        raise DataError(f"task {task!r} has {len(y)} subset observation(s); a surrogate needs at least 2")
    member = np.array([[float(j in s) for j in others] for s in sets]).reshape(len(sets), len(others))
    counts = {j: int(member[:, k].sum()) for k, j in enumerate(others)}
    main_terms = ["", *others]
    X_main = np.column_stack([np.ones(len(y)), member])
    fitted = _fit_terms(task, main_terms, X_main, y, counts)
    if interactions is False:
        return fitted
    co = member.T @ member  # observations holding both of two partners: one product, not T^2 sums
    pairs = [(int(a), int(b), int(round(co[a, b]))) for a, b in zip(*np.triu_indices(len(others), 1), strict=True)
             if co[a, b] >= min_pair_count - 0.5]
    if not pairs:
        return fitted
    terms = main_terms + [f"{others[a]}*{others[b]}" for a, b, _ in pairs]
    X = np.column_stack([X_main, *[member[:, a] * member[:, b] for a, b, _ in pairs]])
    with_pairs = _fit_terms(task, terms, X, y, {**counts, **{f"{others[a]}*{others[b]}": c for a, b, c in pairs}})
    if interactions is True or with_pairs.log_evidence > fitted.log_evidence:
        return with_pairs
    return fitted


@one_blas_thread()
def fit_surrogate(
    observations: pd.DataFrame,
    *,
    tasks: Sequence[str],
    interactions: bool | str = "auto",
    min_pair_count: int = 3,
) -> Surrogate:
    """Fit one surrogate per task from observations (columns `group`, `task`, `norm_loss`).

    `group` is a group key (task names joined by "|"); each row is one observation (e.g. one
    seed) of `task`'s normalised loss inside that group. `tasks` is the universe, in study order.
    """
    missing = [c for c in ("group", "task", "norm_loss") if c not in observations.columns]
    if missing:
        raise DataError(f"subset observations lack columns {missing}; expected group, task, norm_loss")
    if interactions not in (True, False, "auto"):
        raise ValueError(f"interactions must be True, False or 'auto'; got {interactions!r}")
    obs = observations[np.isfinite(observations["norm_loss"].astype(float))]
    per_task = {}
    for t in tasks:
        rows = obs[obs["task"] == t]
        if len(rows) < 2:
            continue
        per_task[t] = fit_task_surrogate(
            t, [g.split(rundir.GROUP_SEP) for g in rows["group"]], rows["norm_loss"].to_numpy(float),
            universe=tasks, interactions=interactions, min_pair_count=min_pair_count,
        )
    if not per_task:
        raise DataError("no task has 2 or more subset observations; train more subsets before fitting a surrogate")
    return Surrogate(tasks=tuple(tasks), per_task=per_task)


def heldout_r2(
    observations: pd.DataFrame,
    *,
    tasks: Sequence[str],
    folds: int = 5,
    seed: int = 0,
    keep: Iterable[str] = (),
    interactions: bool | str = "auto",
) -> dict[str, float]:
    """Cross-validated R^2 of the surrogate's predictions of held-out subsets' mean normalised loss.

    Subsets (groups) are split into `folds`; each fold is predicted by a surrogate fitted on the
    others. Groups in `keep` (e.g. the single-task anchors) are never held out. Returns
    {"r2": pooled over every held-out (group, task), "r2_task_mean": mean of per-task R^2 over
    tasks with 3+ held-out groups, "n": held-out (group, task) cells}.
    """
    keep = set(keep)
    groups = sorted(set(observations["group"]) - keep)
    if len(groups) < folds:
        raise DataError(f"{len(groups)} subsets cannot be split into {folds} folds")
    order = np.random.default_rng(seed).permutation(len(groups))
    fold_of = {groups[i]: k % folds for k, i in enumerate(order)}
    means = observations.groupby(["group", "task"], as_index=False)["norm_loss"].mean()
    pred_rows = []
    for f in range(folds):
        held = {g for g, k in fold_of.items() if k == f}
        sur = fit_surrogate(observations[~observations["group"].isin(held)], tasks=tasks, interactions=interactions)
        for _, r in means[means["group"].isin(held)].iterrows():
            if r["task"] in sur.per_task:
                p = sur.per_task[r["task"]].predict(r["group"].split(rundir.GROUP_SEP))[0]
                pred_rows.append((r["task"], float(r["norm_loss"]), p))
    table = pd.DataFrame(pred_rows, columns=["task", "observed", "predicted"])

    def r2(obs: np.ndarray, pred: np.ndarray) -> float:
        sst = float(((obs - obs.mean()) ** 2).sum())
        return 1.0 - float(((obs - pred) ** 2).sum()) / sst if sst > 0 else math.nan

    per_task = [r2(g["observed"].to_numpy(), g["predicted"].to_numpy()) for _, g in table.groupby("task") if len(g) >= 3]
    per_task = [v for v in per_task if np.isfinite(v)]
    return {
        "r2": r2(table["observed"].to_numpy(), table["predicted"].to_numpy()) if len(table) else math.nan,
        "r2_task_mean": float(np.mean(per_task)) if per_task else math.nan,
        "n": float(len(table)),
    }


@register_estimator
class SurrogateEstimator(AffinityEstimator):
    """Affinity from a surrogate fitted on task subsets (see the module docstring).

    Trains every main task alone and `n_subsets` subsets proposed by Optuna
    (`taskscout.affinity.subsets`, default 3 x the number of main tasks: linear in T), each with every
    seed; gain(j -> i) = -(main effect of j on i's normalised loss). `prune`: False, True (Optuna
    pruning of subset trials) or "shadow" (test mode: decide, record, but train everything). Tables:
    "coefficients", "observations", "objectives", "pruning" (with `prune`), and "heldout"
    (cross-validated R^2 when there are 5+ subsets).
    """

    name = "surrogate"

    def __init__(self, *, n_subsets: int | None = None, interactions: bool | str = "auto", prune: bool | str = False,
                 stack_size: int = 64) -> None:
        self.n_subsets = n_subsets
        self.interactions = interactions
        self.prune = prune
        self.stack_size = stack_size

    def estimate(self, problem: AffinityProblem, *, progress: Callable[[int], None] | None = None) -> EstimatorResult:
        from taskscout.affinity.subsets import run_subsets
        from taskscout.training import ModelPlan, train_models

        names = problem.names
        main = problem.main_names
        depth = problem.model.depth
        plans = [ModelPlan(targets=(h,), main=(h,), seed=s, branch_layer=depth) for s in problem.seeds for h in problem.main]
        start = time.perf_counter()
        results = train_models(problem.X, problem.Y, problem.heads, problem.split, plans, model=problem.model,
                               training=problem.training, device=problem.device, progress=progress,
                               stack_size=self.stack_size)
        compute = Compute(len(results), sum(r.epochs_run for r in results), time.perf_counter() - start)
        single = {(names[r.plan.targets[0]], int(r.plan.seed)): float(r.loss["val"][r.plan.targets[0]]) for r in results}
        n = self.n_subsets if self.n_subsets is not None else 3 * len(main)
        if self.prune not in (False, True, "shadow"):
            raise ValueError(f"prune must be False, True or 'shadow'; got {self.prune!r}")
        run = run_subsets(problem, single=single, n_subsets=n, prune=bool(self.prune), shadow=self.prune == "shadow",
                          seed=min(problem.seeds), progress=progress)
        compute = compute + run.compute
        anchors = pd.DataFrame([(t, t, s, 1.0) for (t, s) in single], columns=["group", "task", "seed", "norm_loss"])
        observations = pd.concat([anchors, run.observations], ignore_index=True)
        sur = fit_surrogate(observations, tasks=main, interactions=self.interactions)
        tables = {"coefficients": sur.coefficients(), "observations": observations, "objectives": run.objectives}
        if run.pruning is not None:
            tables["pruning"] = pd.DataFrame([run.pruning.row()])
        if run.observations["group"].nunique() >= 5:
            r2 = heldout_r2(observations, tasks=main, keep=set(main), interactions=self.interactions)
            tables["heldout"] = pd.DataFrame([r2])
        rows = sur.affinity_rows(sources=main)
        return EstimatorResult(self.name, rows, compute, tables=tables)
