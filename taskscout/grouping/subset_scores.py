"""Subset scores and confirmation: measured subsets as group scores, surrogate predictions, groups to measure next."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd

from taskscout import rundir
from taskscout.affinity.surrogate import fit_surrogate
from taskscout.device import one_blas_thread
from taskscout.errors import DataError
from taskscout.grouping._tables import _key, _require_columns, _split_group
from taskscout.grouping.scores import ALONE, GroupScorer, ScoreFn, TaskScore
from taskscout.grouping.solve import EXACT_MAX_TASKS, choose_grouping, solve_grouping

SURROGATE_MAX_GROUP = 4  # surrogate scores for every group of 2..4 main tasks not measured


def observed_group_scores(observations: pd.DataFrame, tasks: Sequence[str]) -> pd.DataFrame:
    """Measured `group_scores.csv` rows from surrogate observations (group, task, seed, norm_loss):
    for every group of two or more of `tasks`, each member's mean normalised loss over its seeds
    with a Student-t interval (source "measured", as for the groups the measured phases train)."""
    _require_columns(observations, rundir.SUBSET_OBSERVATION_COLUMNS, "subset observations")
    if observations.empty:
        return pd.DataFrame(columns=list(rundir.GROUP_SCORE_COLUMNS))
    main = set(tasks)
    obs = observations.drop_duplicates(["group", "task", "seed"])
    obs = obs[np.isfinite(obs["norm_loss"].astype(float))]
    members = {g: _split_group(g) for g in obs["group"].unique()}
    keep = [len(members[g]) >= 2 and set(members[g]) <= main and t in members[g]
            for g, t in zip(obs["group"], obs["task"], strict=True)]
    stats_ = obs[keep].groupby(["group", "task"], sort=False)["norm_loss"].agg(["mean", "std", "count"])
    # one Student-t interval over its seeds each, as `measured.t_interval` gives
    n = stats_["count"].to_numpy(int)
    from scipy import stats  # here, not at the top: scipy.stats takes a second to import

    with np.errstate(invalid="ignore", divide="ignore"):
        half = np.where(n > 1, stats.t.ppf(0.975, np.maximum(n - 1, 1)) * stats_["std"].to_numpy(float)
                        / np.sqrt(n), math.inf)
    mean = stats_["mean"].to_numpy(float)
    return pd.DataFrame({
        "group": [rundir.group_key(members[g], tasks) for g in stats_.index.get_level_values(0)],
        "task": [str(t) for t in stats_.index.get_level_values(1)],
        "norm_loss": mean, "ci_low": mean - half, "ci_high": mean + half, "n_seeds": n, "source": "measured",
    }, columns=list(rundir.GROUP_SCORE_COLUMNS))


def with_subset_scores(
    group_scores: pd.DataFrame | None, observations: pd.DataFrame, tasks: Sequence[str], *, surrogate: bool = True
) -> pd.DataFrame | None:
    """`group_scores` plus what the subsets phase adds: measured scores of every trained subset
    that `group_scores` lacks, then (with `surrogate`, and only up to EXACT_MAX_TASKS tasks, where
    that is at most 781 groups) the subset surrogate's predictions for the groups of up to
    SURROGATE_MAX_GROUP tasks measured nowhere. Above EXACT_MAX_TASKS no table of predictions is
    built (it would grow as T^4): `subset_predictor` scores groups on demand instead. A measured
    score is never replaced by a prediction: the surrogate is one linear model over all subsets
    and shrinks the gains of the groups it was never shown (on planted data it scored a group's
    triple below either of its measured pairs)."""
    if observations.empty or len(tasks) < 2:
        return group_scores
    measured = set(group_scores["group"]) if group_scores is not None else set()
    trained = observed_group_scores(observations, tasks)
    trained = trained[~trained["group"].isin(measured)]
    parts = [f for f in (group_scores, trained) if f is not None and len(f)]
    measured |= set(trained["group"])
    if surrogate and len(tasks) <= EXACT_MAX_TASKS:
        known = pd.concat(parts, ignore_index=True) if parts else None
        predictor = subset_predictor(known, observations, tasks)
        groups = [
            g for size in range(2, min(SURROGATE_MAX_GROUP, len(tasks)) + 1)
            for g in itertools.combinations(tasks, size) if rundir.group_key(g, tasks) not in measured
        ]
        if predictor is not None:
            parts.append(predictor.table(groups))
    return pd.concat(parts, ignore_index=True) if parts else group_scores


def subset_predictor(
    known: pd.DataFrame | None, observations: pd.DataFrame, tasks: Sequence[str]
) -> SurrogateScores | None:
    """The anchored surrogate fitted on `observations` (None when there is nothing to fit), ready
    to score groups on demand (`GroupScorer.from_tables(..., predict=...)`); `known` holds the
    measured group scores it anchors on.

    Up to EXACT_MAX_TASKS tasks it scores only the groups `with_subset_scores` would tabulate (at
    most SURROGATE_MAX_GROUP tasks); a larger unmeasured group gets no prediction, so the scorer
    falls back on the measured pairs (HOA). The surrogate is one linear model that learns that
    larger subsets help in general: scoring every size let it put merged groups of 5-9 planted
    tasks on the Pareto front, confirmation measured them, and the solver's fewer-networks rule
    then recommended two planted groups merged on generator seeds 1, 2 and 4
    (docs/guide/selection.md). Above EXACT_MAX_TASKS every size is scored (no table is built)."""
    if observations.empty or len(tasks) < 2:
        return None
    try:
        model = fit_surrogate(observations, tasks=list(tasks))
    except DataError:
        return None
    largest = SURROGATE_MAX_GROUP if len(tasks) <= EXACT_MAX_TASKS else None
    return SurrogateScores(model, known, tasks, max_group=largest)


class SurrogateScores:
    """Surrogate scores of unmeasured groups, computed when asked for (a `ScoreFn`) and cached,
    each anchored on the task's largest measured group inside it.

    For task t in group G, with M the largest measured group such that t in M and M inside G (ties:
    more seeds, then the narrower interval; t alone, normalised loss exactly 1, when nothing else
    is measured): score = measured(M) + s(G) - s(M), where s is the surrogate's prediction. The
    surrogate is one linear model over all subsets: its level at a particular group can be off by
    more than the effect of adding a task to it (on planted data it predicted a group's triple
    worse than either of its measured pairs, and a task of another group gaining in a group where
    measuring showed it did not), while the difference it predicts between nested groups is what it
    is fitted on. The interval's half-widths are those of the measured anchor and of the surrogate
    at G, combined as independent errors. `calls` counts the surrogate predictions made: a
    solver's cost in predictions, whatever the number of possible groups. With `max_group` a
    group of more tasks gets no prediction (None).
    """

    def __init__(self, surrogate: Any, measured: pd.DataFrame | None, tasks: Sequence[str],
                 max_group: int | None = None) -> None:
        self.surrogate = surrogate
        self.tasks = tuple(tasks)
        self.max_group = max_group
        self.calls = 0
        self._cache: dict[tuple[tuple[str, ...], str], TaskScore | None] = {}
        # A task's measured anchors: its pairs by partner (looked up per member of a group) and
        # its larger groups (scanned), so finding the anchors inside a group costs O(|group| +
        # larger groups), not O(T).
        self._pairs: dict[str, dict[str, TaskScore]] = {}
        self._anchors: dict[str, list[tuple[frozenset[str], TaskScore]]] = {}
        self._anchor_level: dict[tuple[str, frozenset[str]], float] = {}
        if measured is not None and len(measured):
            for r in measured.itertuples(index=False):
                if str(r.source) != "measured":
                    continue
                members = frozenset(_split_group(r.group))
                score = TaskScore(float(r.norm_loss), float(r.ci_low), float(r.ci_high), "measured", int(r.n_seeds))
                task = str(r.task)
                if len(members) == 2 and task in members and math.isfinite(score.norm_loss):
                    self._pairs.setdefault(task, {})[next(iter(members - {task}))] = score
                elif len(members) >= 2 and math.isfinite(score.norm_loss):
                    self._anchors.setdefault(task, []).append((members, score))

    def __call__(self, group: Sequence[str], task: str) -> TaskScore | None:
        key = (_key(group, self.tasks), task)
        if key not in self._cache:
            self._cache[key] = self._predict(key[0], task)
        return self._cache[key]

    def _predict(self, group: tuple[str, ...], task: str) -> TaskScore | None:
        fitted = self.surrogate.per_task.get(task)
        if fitted is None or task not in group or (self.max_group is not None and len(group) > self.max_group):
            return None
        members = set(group)
        m, lo, hi = fitted.predict(group)
        pairs = self._pairs.get(task, {})
        inside = [(frozenset((task, j)), pairs[j]) for j in group if j in pairs]
        inside += [(a, sc) for a, sc in self._anchors.get(task, ()) if a <= members]
        a, base = (max(inside, key=lambda x: (len(x[0]), x[1].n_seeds, -(x[1].ci_high - x[1].ci_low)))
                   if inside else (frozenset((task,)), ALONE))
        self.calls += 1
        if (task, a) not in self._anchor_level:  # the anchor's own prediction, once per task and anchor
            self._anchor_level[(task, a)] = fitted.predict(sorted(a))[0]
            self.calls += 1
        sm = self._anchor_level[(task, a)]
        mean = base.norm_loss + (m - sm)
        below = math.hypot(base.norm_loss - base.ci_low, m - lo)
        above = math.hypot(base.ci_high - base.norm_loss, hi - m)
        return TaskScore(mean, mean - below, mean + above, "surrogate", fitted.n_obs)

    def table(self, groups: Iterable[Sequence[str]]) -> pd.DataFrame:
        """`group_scores.csv` rows (source "surrogate") of every fitted task of each of `groups`."""
        rows = []
        for g in groups:
            key = _key(g, self.tasks)
            for t in key:
                s = self(key, t)
                if s is not None:
                    rows.append((rundir.group_key(key, self.tasks), t, s.norm_loss, s.ci_low, s.ci_high, s.n_seeds,
                                 "surrogate"))
        return pd.DataFrame(rows, columns=list(rundir.GROUP_SCORE_COLUMNS))


def anchored_predictions(
    surrogate: Any, groups: Iterable[Sequence[str]], measured: pd.DataFrame | None, tasks: Sequence[str]
) -> pd.DataFrame:
    """Surrogate scores of unmeasured `groups` (`group_scores.csv` rows, source "surrogate"),
    each anchored on the task's largest measured group inside it (see `SurrogateScores`)."""
    return SurrogateScores(surrogate, measured, tasks).table(groups)


def _point_estimates(score: ScoreFn) -> ScoreFn:
    """`score` with every interval shrunk to its point: under the real-gain rule a task may then
    join any group where its normalised loss is below 1 at all."""

    def point(group: Sequence[str], task: str) -> TaskScore | None:
        s = score(group, task)
        return None if s is None else TaskScore(s.norm_loss, s.norm_loss, s.norm_loss, s.source, s.n_seeds)

    return point


@one_blas_thread()
def groups_to_measure(
    tasks: Sequence[str],
    *,
    group_scores: pd.DataFrame,
    observations: pd.DataFrame,
    networks: int | None = None,
    limit: int = 6,
    fdr: float = 1.0,
) -> list[tuple[str, ...]]:
    """The groups of three or more tasks a recommendation could rest on that nobody has measured.

    Three sources, in this order: the groupings `choose_grouping` recommends from what is known
    now, once with the (anchored) surrogate's predictions for unmeasured groups and once with
    Standley's HOA from the measured pairs instead; the best grouping on the surrogate's point
    estimates (every member's normalised loss below 1, intervals ignored) among groups of at most
    three tasks, one task more than the measured pairs: where a group would be worth having if
    its gains held up (larger groups on point estimates gain a task of another group each, from
    the surrogate's learning that larger subsets help in general); and the maximal cliques of
    three or more tasks of the graph that links two tasks when their measured pair helps them on
    average (mean normalised loss of the two below 1), strongest first (lowest mean normalised
    loss over their pairs). HOA, a mean over pairs, is never better than a member's best pair, so
    without the last two a group whose pairs are noisy is never tried. Unmeasured ones are
    returned, at most `limit`.
    Pairs are always measured by the pairs phase.
    """
    tasks = tuple(tasks)
    if len(tasks) < 3:
        return []
    measured = with_subset_scores(group_scores, observations, tasks, surrogate=False)
    known = set(measured["group"]) if measured is not None else set()
    found: list[tuple[str, ...]] = []

    def add(members: Iterable[str]) -> None:
        key = _key(members, tasks)
        if len(key) >= 3 and rundir.group_key(key, tasks) not in known and key not in found:
            found.append(key)

    predictor = subset_predictor(measured, observations, tasks)
    for predict in (predictor, None):
        scorer = GroupScorer.from_tables(tasks=tasks, group_scores=measured, fdr=fdr, predict=predict)
        for members in choose_grouping(tasks, scorer, networks=networks).grouping.groups:
            add(members)
        if predict is not None:
            hopeful = solve_grouping(tasks, _point_estimates(scorer), budgets=[len(tasks)], max_group_size=3)
            for members in hopeful[len(tasks)].groups:
                add(members)
    pairs = GroupScorer.from_tables(tasks=tasks, group_scores=measured)
    helped = nx.Graph()
    helped.add_nodes_from(tasks)
    for a, b in itertools.combinations(tasks, 2):
        sa, sb = pairs((a, b), a), pairs((a, b), b)
        if sa is not None and sb is not None and sa.norm_loss + sb.norm_loss < 2.0:
            helped.add_edge(a, b, norm_loss=(sa.norm_loss + sb.norm_loss) / 2)

    def strength(c: tuple[str, ...]) -> float:  # mean normalised loss over the clique's pairs
        return float(np.mean([helped.edges[a, b]["norm_loss"] for a, b in itertools.combinations(c, 2)]))

    cliques = sorted((_key(c, tasks) for c in _cliques(helped, tasks) if len(c) >= 3),
                     key=lambda c: (strength(c), [tasks.index(t) for t in c]))
    for members in cliques:
        add(members)
    return found[:limit]


def _cliques(helped: nx.Graph, tasks: Sequence[str]) -> Iterable[Sequence[str]]:
    """Cliques of the helped-pairs graph: every maximal one up to EXACT_MAX_TASKS tasks (at most
    3^(12/3) = 81 of them); above, whose maximal cliques can be exponentially many, one per task,
    grown from it by adding the neighbour linked most strongly (lowest mean normalised loss) to
    every member so far: T cliques in O(T^3)."""
    if len(tasks) <= EXACT_MAX_TASKS:
        return list(nx.find_cliques(helped))
    out = set()
    for t in tasks:
        clique = [t]
        candidates = set(helped[t])
        while candidates:
            best = min(candidates, key=lambda c: (np.mean([helped.edges[c, m]["norm_loss"] for m in clique]),
                                                   tasks.index(c)))
            clique.append(best)
            candidates &= set(helped[best])
        out.add(_key(clique, tasks))
    return sorted(out)


Z95 = 1.959963984540054  # a 95% interval's half-width over its standard error


def shrink_gains(gain: np.ndarray, half_width: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Empirical-Bayes shrinkage of noisy gains (normal prior, method of moments): each gain g with
    standard error se = half-width / 1.96 becomes its posterior mean m + tau^2 / (tau^2 + se^2) (g - m),
    with m the mean gain and tau^2 = max(0, var(g) - mean(se^2)) the spread of the true gains; its
    half-width becomes 1.96 times the posterior sd. A gain without a finite interval becomes m.
    Returns the shrunk gains, their half-widths, m and tau^2."""
    gain, se = np.asarray(gain, dtype=float), np.asarray(half_width, dtype=float) / Z95
    ok = np.isfinite(gain) & np.isfinite(se)
    if not ok.any():
        return np.zeros_like(gain), np.zeros_like(gain), 0.0, 0.0
    m = float(gain[ok].mean())
    tau2 = max(0.0, float(gain[ok].var() - np.mean(se[ok] ** 2)))
    var = np.where(ok, se, 0.0) ** 2
    weight = np.where(ok, tau2 / np.maximum(tau2 + var, 1e-300), 0.0)
    shrunk = m + weight * (np.where(ok, gain, m) - m)
    post_sd = np.where(ok, np.sqrt(tau2 * var / np.maximum(tau2 + var, 1e-300)), np.sqrt(tau2))
    return shrunk, Z95 * post_sd, m, tau2


def sampled_predictor(affinity: pd.DataFrame, tasks: Sequence[str]) -> ScoreFn | None:
    """Scores on demand from the sampled-subset gains (affinity.csv rows of method "sampled"), or
    None without them: a task's normalised loss in a group under the additive model the sampled
    estimate rests on, 1 - the sum of its partners' gains, each side of the interval the partners'
    half-widths combined as independent errors (source "sampled"). A pair of estimated tasks that
    no subset held gets the prior (the mean gain, +-1.96 tau).

    The gains are first shrunk (`shrink_gains`, empirical Bayes over all sampled gains): with ~4
    shared subsets per pair a single gain is noisy (on the 100-task planted search the half-widths,
    0.12-0.16, are as large as the gap between planted groups and the rest), and an unshrunk sum over
    many partners rewards noise. The shrunk gain is the estimate that minimises the expected squared
    error, so a group's summed score is the best estimate of its total gain; the grouping at scale
    chooses on it (`scale`). On a 100-task planted search HOA over the same gains, a mean and not a
    sum, split the groups into pairs (ARI 0.15)."""
    rows = affinity[affinity["method"].astype(str) == "sampled"] if affinity is not None and len(affinity) else None
    if rows is None or rows.empty:
        return None
    raw = rows["gain"].to_numpy(float)
    half = (rows["ci_high"].to_numpy(float) - rows["ci_low"].to_numpy(float)) / 2
    shrunk, shrunk_half, m, tau2 = shrink_gains(raw, half)
    prior = (m, m - Z95 * math.sqrt(tau2), m + Z95 * math.sqrt(tau2), 0)  # a pair no subset held
    gains = {(str(s), str(t)): (float(g), float(g - h), float(g + h), int(n))
             for s, t, g, h, n in zip(rows["source"], rows["target"], shrunk, shrunk_half, rows["n_seeds"],
                                      strict=True)}

    known = {t for pair in gains for t in pair}

    def predict(group: Sequence[str], task: str) -> TaskScore | None:
        if task not in known:
            return None
        parts = [gains.get((j, task), prior if j in known else None) for j in group if j != task]
        if not parts or any(p is None for p in parts):
            return None
        mean = 1.0 - sum(p[0] for p in parts)
        below = math.sqrt(sum((p[2] - p[0]) ** 2 for p in parts))  # a higher gain: a lower loss
        above = math.sqrt(sum((p[0] - p[1]) ** 2 for p in parts))
        return TaskScore(mean, mean - below, mean + above, "sampled", min(p[3] for p in parts))

    predict.additive = True  # type: ignore[attr-defined]  # the scalable solver's pair moves apply (grouping.scale)
    return predict
