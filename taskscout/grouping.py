"""From measured gains to a recommendation: the affinity graph, groups under a budget, branch layers.

Inputs are the run-directory tables (rundir.py): `affinity.csv` (gain(j -> i) with a 95% interval
per method), `group_scores.csv` (a task's normalised loss L_task(in group) / L_task(alone) in
measured or surrogate-predicted groups) and `depth.csv` (gain per branch layer). Everything here
works on those tables alone, so a recommendation can be rebuilt without training anything.

Scores. A task's normalised loss in a group comes from, in this order: a measured group score (a
model the measured phases trained, or a subset the subsets phase trained, `with_subset_scores`), a
surrogate prediction, and otherwise Standley et al.'s higher-order approximation (HOA): the mean
over its partners j of the pair's normalised loss 1 - gain(j -> task). HOA's interval is the mean
of the partners' bounds (the partners' estimates share the task's single-task baseline, so they
are far from independent; averaging the bounds is the conservative choice).

Grouping. Choose networks (task groups, which may overlap, as in Standley et al.) so that the sum
over tasks of the normalised loss in the chosen network that serves the task is smallest; each
task is served by the best chosen network that contains it, and a task served alone has
normalised loss 1. A task joins a group only where its gain is real (the interval of its
normalised loss lies entirely below 1 and, with `search.fdr` < 1, the measured gain survives
Benjamini-Hochberg false-discovery-rate control over every measured comparison:
`control_false_discoveries`); otherwise it is served alone. The budget is a maximum
number of networks. Up to EXACT_MAX_TASKS tasks the solver is exact (branch and bound, below);
above that it is a greedy agglomeration (see `solve_grouping`).

Intervals of totals. Per-task intervals are combined as if the tasks' errors were independent:
total +- sqrt(sum of squared half-widths), lower and upper sides separately. Two solutions are
compared the same way on the tasks whose scores differ, which is what "the difference is inside
the intervals" means below.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd

from taskscout import rundir
from taskscout.errors import MissingResultsError, SpecError

EXACT_MAX_TASKS = 12  # branch and bound above this is too slow for an interactive tool
SCORE_SOURCES = ("measured", "surrogate", "hoa", "single")  # best evidence first
# Representation-similarity fallback for the branch layer: tasks may share every layer up to the
# deepest one where the Spearman correlation of their representation dissimilarity matrices is at
# least this; 0.5 is the usual "strong correlation" cut-off for rank correlations.
RSA_SHARE_THRESHOLD = 0.5
SIMILARITY_COLUMNS = ("pair", "layer", "similarity")
_EPS = 1e-12


# ---------------------------------------------------------------- table checks


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MissingResultsError(
            f"the {what} table has no column(s) {', '.join(missing)}; expected columns "
            f"{', '.join(columns)}; rerun `taskscout search` to rewrite it"
        )


def _split_group(name: str) -> tuple[str, ...]:
    return tuple(str(name).split(rundir.GROUP_SEP))


def _key(tasks: Iterable[str], order: Sequence[str]) -> tuple[str, ...]:
    """A group as a tuple of task names in study order (the hashable twin of rundir.group_key)."""
    return tuple(rundir.group_key(tasks, order).split(rundir.GROUP_SEP))


def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


# ---------------------------------------------------------------- the affinity graph


@dataclass(frozen=True)
class Transfer:
    """One edge of the affinity graph: what `source` does to `target`'s loss."""

    source: str
    target: str
    gain: float
    ci_low: float
    ci_high: float
    method: str
    real: bool


_METHOD_RANK = {"measured": 0, "surrogate": 1}


def _method_order(method: str) -> tuple[int, str]:
    return (_METHOD_RANK.get(method, 2), method)


def build_graph(
    affinity: pd.DataFrame, *, tasks: Sequence[str], aux_kinds: Mapping[str, str] | None = None
) -> nx.DiGraph:
    """The task-affinity graph: an edge j -> i for every measured or estimated gain(j -> i).

    Nodes are the main `tasks` (kind "task") and every auxiliary that appears as a source of a
    row whose target is a main task (kind "aux:<kind>" from `aux_kinds`, "aux" when unknown).
    Edge attributes: gain, ci_low, ci_high, n_seeds, method and real (the interval excludes zero,
    i.e. ci_low > 0). When several methods give a gain for the same edge the measured one is used
    (then the surrogate, then the others by name); every method's gain is kept as `gain_<method>`.
    """
    _require_columns(affinity, rundir.AFFINITY_COLUMNS, "affinity")
    aux_kinds = dict(aux_kinds or {})
    graph = nx.DiGraph()
    for t in tasks:
        graph.add_node(t, kind="task")
    main = set(tasks)
    rows = affinity[affinity["target"].isin(main) & (affinity["source"] != affinity["target"])]
    for (source, target), edge_rows in rows.groupby(["source", "target"], sort=False):
        source, target = str(source), str(target)
        if source not in graph:
            kind = aux_kinds.get(source)
            graph.add_node(source, kind=f"aux:{kind}" if kind else "aux")
        ordered = sorted(edge_rows.to_dict("records"), key=lambda r: _method_order(str(r["method"])))
        best = ordered[0]
        lo, hi = _num(best["ci_low"]), _num(best["ci_high"])
        n_seeds = _num(best["n_seeds"])
        attrs: dict[str, Any] = {
            "gain": _num(best["gain"]),
            "ci_low": lo,
            "ci_high": hi,
            "n_seeds": int(n_seeds) if math.isfinite(n_seeds) else 0,
            "method": str(best["method"]),
            "real": bool(lo > 0),
        }
        for r in ordered:
            attrs.setdefault(f"gain_{r['method']}", _num(r["gain"]))
        graph.add_edge(source, target, **attrs)
    return graph


def _transfer(graph: nx.DiGraph, u: str, v: str) -> Transfer:
    d = graph.edges[u, v]
    return Transfer(u, v, d["gain"], d["ci_low"], d["ci_high"], d["method"], bool(d["real"]))


def strongest_partners(
    graph: nx.DiGraph, task: str, k: int = 3, *, include_aux: bool = False
) -> list[Transfer]:
    """The (at most) `k` sources with the largest gain on `task`, best first.

    Only main tasks are partners unless `include_aux`; edges with an unknown gain are skipped.
    """
    if task not in graph:
        raise SpecError(f"task '{task}' is not in the affinity graph; it has {sorted(graph.nodes)}")
    edges = [
        _transfer(graph, u, task)
        for u in graph.predecessors(task)
        if (include_aux or graph.nodes[u]["kind"] == "task") and math.isfinite(graph.edges[u, task]["gain"])
    ]
    edges.sort(key=lambda e: (-e.gain, e.source))
    return edges[:k]


def negative_transfer_edges(graph: nx.DiGraph) -> list[Transfer]:
    """Every edge whose whole interval lies below zero (the source hurts the target), worst first."""
    edges = [_transfer(graph, u, v) for u, v, d in graph.edges(data=True) if d["ci_high"] < 0]
    edges.sort(key=lambda e: (e.gain, e.source, e.target))
    return edges


def save_graphml(graph: nx.DiGraph, path: str | Path) -> Path:
    """Write `graph` as GraphML, atomically (every attribute must be a str, int, float or bool)."""
    for owner, attrs in [*graph.nodes(data=True), *(((u, v), d) for u, v, d in graph.edges(data=True))]:
        for name, value in attrs.items():
            if not isinstance(value, (str, int, float, bool)):
                raise TypeError(f"attribute {name!r} of {owner!r} is a {type(value).__name__}; GraphML needs scalars")
    return rundir.write_text(path, "\n".join(nx.generate_graphml(graph)) + "\n")


def load_graphml(path: str | Path) -> nx.DiGraph:
    """Read a graph written by `save_graphml`."""
    return nx.read_graphml(Path(path))


# ---------------------------------------------------------------- group scores


@dataclass(frozen=True)
class TaskScore:
    """A task's normalised loss in a group: L(in group) / L(alone), with a 95% interval."""

    norm_loss: float
    ci_low: float
    ci_high: float
    source: str  # measured | surrogate | hoa | single
    n_seeds: int = 0
    # For measured scores: whether the gain survives the false-discovery-rate control over every
    # measured comparison (`control_false_discoveries`); None = judge by the interval alone.
    discovered: bool | None = None

    @property
    def real(self) -> bool:
        """The task really gains: the whole interval lies below 1 and, for a measured score, the
        gain is a discovery among all the measured comparisons."""
        return bool(self.ci_high < 1.0) and self.discovered is not False

    def p_value(self) -> float:
        """Two-sided p-value of "no gain" (norm_loss = 1) from the score's 95% Student-t interval
        over its seeds; NaN with fewer than 2 seeds or no finite interval."""
        if self.n_seeds < 2 or not all(math.isfinite(v) for v in (self.norm_loss, self.ci_high)):
            return math.nan
        from scipy.stats import t as student_t

        se = (self.ci_high - self.norm_loss) / float(student_t.ppf(0.975, self.n_seeds - 1))
        if se <= 0:
            return 0.0 if self.norm_loss != 1.0 else 1.0
        return float(2 * student_t.sf(abs(1.0 - self.norm_loss) / se, self.n_seeds - 1))

    @property
    def gain(self) -> float:
        return 1.0 - self.norm_loss

    @property
    def gain_ci(self) -> tuple[float, float]:
        return (1.0 - self.ci_high, 1.0 - self.ci_low)


ALONE = TaskScore(1.0, 1.0, 1.0, "single", 0)


@dataclass(frozen=True)
class GroupScorer:
    """Scores any group for any of its tasks from the measured tables (see module docstring).

    Build it with `GroupScorer.from_tables`; call it as `scorer(group, task)`.
    """

    tasks: tuple[str, ...]
    group_rows: Mapping[tuple[tuple[str, ...], str], TaskScore] = field(default_factory=dict)
    pair_rows: Mapping[tuple[str, str], TaskScore] = field(default_factory=dict)  # (partner, task)
    # measured gains of auxiliaries (sources that are not tasks) on tasks: (auxiliary, task)
    aux_rows: Mapping[tuple[str, str], TaskScore] = field(default_factory=dict)

    @classmethod
    def from_tables(
        cls,
        *,
        tasks: Sequence[str],
        group_scores: pd.DataFrame | None = None,
        affinity: pd.DataFrame | None = None,
        fdr: float = 1.0,
    ) -> GroupScorer:
        """Index group_scores.csv rows, the measured (else surrogate) pairwise gains and the
        auxiliaries' measured gains; with `fdr` < 1, a measured gain (auxiliaries' included) is
        real only as a discovery at that false-discovery rate (`control_false_discoveries`)."""
        tasks = tuple(tasks)
        main = set(tasks)
        group_rows: dict[tuple[tuple[str, ...], str], TaskScore] = {}
        if group_scores is not None and len(group_scores):
            _require_columns(group_scores, rundir.GROUP_SCORE_COLUMNS, "group scores")
            records = sorted(
                group_scores.to_dict("records"), key=lambda r: _method_order(str(r["source"]))
            )
            for r in records:
                members = _split_group(r["group"])
                task = str(r["task"])
                value = _num(r["norm_loss"])
                if not set(members) <= main or task not in members or not math.isfinite(value):
                    continue
                key = (_key(members, tasks), task)
                n = _num(r["n_seeds"])
                source = str(r["source"]) if str(r["source"]) in ("measured", "surrogate") else "surrogate"
                group_rows.setdefault(
                    key, TaskScore(value, _num(r["ci_low"]), _num(r["ci_high"]), source, int(n) if math.isfinite(n) else 0)
                )
        pair_rows: dict[tuple[str, str], TaskScore] = {}
        aux_rows: dict[tuple[str, str], TaskScore] = {}
        if affinity is not None and len(affinity):
            _require_columns(affinity, rundir.AFFINITY_COLUMNS, "affinity")
            usable = affinity[affinity["method"].isin(("measured", "surrogate"))]
            records = sorted(usable.to_dict("records"), key=lambda r: _method_order(str(r["method"])))
            for r in records:
                s, t = str(r["source"]), str(r["target"])
                gain = _num(r["gain"])
                if s == t or t not in main or not math.isfinite(gain):
                    continue
                n = _num(r["n_seeds"])
                score = TaskScore(1.0 - gain, 1.0 - _num(r["ci_high"]), 1.0 - _num(r["ci_low"]), str(r["method"]),
                                  int(n) if math.isfinite(n) else 0)
                if s in main:
                    pair_rows.setdefault((s, t), score)
                elif score.source == "measured":
                    aux_rows.setdefault((s, t), score)
        if fdr < 1.0:
            group_rows, pair_rows, aux_rows = control_false_discoveries(group_rows, pair_rows, tasks, level=fdr,
                                                                        aux_rows=aux_rows)
        return cls(tasks=tasks, group_rows=group_rows, pair_rows=pair_rows, aux_rows=aux_rows)

    def _pair(self, partner: str, task: str) -> TaskScore | None:
        key = (_key((partner, task), self.tasks), task)
        row = self.group_rows.get(key)
        aff = self.pair_rows.get((partner, task))
        if row is not None and (row.source == "measured" or aff is None or aff.source != "measured"):
            return row
        return aff

    def __call__(self, group: Iterable[str], task: str) -> TaskScore | None:
        """`task`'s normalised loss in `group`, or None when nothing measured supports a score."""
        members = _key(group, self.tasks)
        if task not in members:
            raise SpecError(f"task '{task}' is not in the group {list(members)}")
        if len(members) == 1:
            return ALONE
        if len(members) == 2:
            return self._pair(members[0] if members[1] == task else members[1], task)
        row = self.group_rows.get((members, task))
        if row is not None:
            return row
        partners = [self._pair(j, task) for j in members if j != task]
        if any(p is None for p in partners):
            return None
        k = len(partners)
        return TaskScore(
            sum(p.norm_loss for p in partners) / k,
            sum(p.ci_low for p in partners) / k,
            sum(p.ci_high for p in partners) / k,
            "hoa",
            min(p.n_seeds for p in partners),
        )


ScoreFn = Callable[[Sequence[str], str], "TaskScore | None"]

def control_false_discoveries(
    group_rows: Mapping[tuple[tuple[str, ...], str], TaskScore],
    pair_rows: Mapping[tuple[str, str], TaskScore],
    tasks: Sequence[str],
    *,
    level: float,
    aux_rows: Mapping[tuple[str, str], TaskScore] | None = None,
) -> tuple[dict[tuple[tuple[str, ...], str], TaskScore], dict[tuple[str, str], TaskScore],
           dict[tuple[str, str], TaskScore]]:
    """Mark which measured gains are discoveries under Benjamini-Hochberg at false-discovery rate
    `level` (the expected share of false "real gains" among the measured ones called real).

    The family is every measured (group, task) comparison with at least 2 seeds, a pair counted
    once whether it comes from group_scores or affinity, and every measured gain of an auxiliary
    on a task (`aux_rows`, keyed (auxiliary, task)). A search compares many groups and keeps
    the best; judged one at a time at 95%, about 1 in 20 comparisons without any real gain looks
    real (on 14 yeast labels: 182 directed pairs, so ~9 expected by chance). With a single
    comparison and level 0.05 the rule is the 95% interval rule unchanged. Off by default
    (`search.fdr` = 1): with 3 seeds per comparison the t intervals are so wide that at 0.05 it
    also drops most planted groups (measured: README, "Multiple comparisons").
    """
    family: dict[tuple[tuple[str, ...], str], float] = {}
    for (members, task), score in group_rows.items():
        if score.source == "measured":
            family[(members, task)] = score.p_value()
    for (partner, task), score in pair_rows.items():
        if score.source == "measured":
            family.setdefault((_key((partner, task), tasks), task), score.p_value())
    aux_rows = dict(aux_rows or {})
    for (aux, task), score in aux_rows.items():  # an auxiliary is no task: its key is no group's
        family[((aux,), task)] = score.p_value()
    tested = sorted((p, key) for key, p in family.items() if math.isfinite(p))
    m = len(tested)
    cut = max((i + 1 for i, (p, _) in enumerate(tested) if p <= level * (i + 1) / m), default=0)
    found = {key for _, key in tested[:cut]}

    def mark(key: tuple[tuple[str, ...], str], score: TaskScore) -> TaskScore:
        if score.source != "measured" or key not in family:
            return score
        return TaskScore(score.norm_loss, score.ci_low, score.ci_high, score.source, score.n_seeds, key in found)

    groups = {key: mark(key, s) for key, s in group_rows.items()}
    pairs = {(j, t): mark((_key((j, t), tasks), t), s) for (j, t), s in pair_rows.items()}
    auxes = {(a, t): mark(((a,), t), s) for (a, t), s in aux_rows.items()}
    return groups, pairs, auxes


# ---------------------------------------------------------------- solutions


@dataclass(frozen=True)
class Grouping:
    """A set of networks and which one serves each task."""

    tasks: tuple[str, ...]
    groups: tuple[tuple[str, ...], ...]  # the networks, in study order of their first task
    assignment: Mapping[str, int]  # task -> index into groups
    scores: Mapping[str, TaskScore]  # each task's score in the network that serves it
    only_real: bool  # every task gains really in the network that serves it (or is alone)

    @property
    def networks(self) -> int:
        return len(self.groups)

    @property
    def total(self) -> float:
        return float(sum(s.norm_loss for s in self.scores.values()))

    @property
    def ci(self) -> tuple[float, float]:
        """95% interval of the total, the tasks' errors combined as independent."""
        lo = math.sqrt(sum((s.norm_loss - s.ci_low) ** 2 for s in self.scores.values()))
        hi = math.sqrt(sum((s.ci_high - s.norm_loss) ** 2 for s in self.scores.values()))
        return (self.total - lo, self.total + hi)


def _grouping_from_networks(
    tasks: Sequence[str], networks: Iterable[tuple[str, ...]], score: ScoreFn, *, only_real: bool
) -> Grouping:
    """Serve each task by the best chosen network containing it; drop networks that serve nobody."""
    tasks = tuple(tasks)
    nets = sorted({_key(n, tasks) for n in networks}, key=lambda g: (len(g), [tasks.index(t) for t in g]))
    best: dict[str, tuple[float, int, tuple[str, ...], TaskScore]] = {}
    for net in nets:
        for t in net:
            s = ALONE if len(net) == 1 else score(net, t)
            if s is None or (only_real and not s.real and len(net) > 1):
                continue
            cand = (s.norm_loss, len(net), net, s)
            if t not in best or cand[:2] < best[t][:2]:
                best[t] = cand
    for t in tasks:
        if t not in best:
            best[t] = (1.0, 1, (t,), ALONE)
    used = sorted({b[2] for b in best.values()}, key=lambda g: [tasks.index(t) for t in g])
    index = {g: i for i, g in enumerate(used)}
    return Grouping(
        tasks=tasks,
        groups=tuple(used),
        assignment={t: index[best[t][2]] for t in tasks},
        scores={t: best[t][3] for t in tasks},
        only_real=all(best[t][3].real or len(best[t][2]) == 1 for t in tasks),
    )


def difference_is_inside_intervals(a: Grouping, b: Grouping) -> bool:
    """True when `a`'s total is not clearly worse than `b`'s: a - b minus its lower half-width <= 0.

    Only tasks whose scores differ contribute to the difference and to its width (independent
    errors, as for totals).
    """
    diff, width_sq = 0.0, 0.0
    for t in a.tasks:
        sa, sb = a.scores[t], b.scores[t]
        if sa == sb:
            continue
        diff += sa.norm_loss - sb.norm_loss
        width_sq += (sa.norm_loss - sa.ci_low) ** 2 + (sb.ci_high - sb.norm_loss) ** 2
    if not math.isfinite(width_sq):
        return diff <= _EPS
    return diff - math.sqrt(width_sq) <= _EPS


# ---------------------------------------------------------------- exact solver


def _candidate_groups(
    tasks: tuple[str, ...], score: ScoreFn, *, max_group_size: int, only_real: bool
) -> list[tuple[tuple[str, ...], dict[str, TaskScore]]]:
    out = []
    for size in range(2, max_group_size + 1):
        for group in itertools.combinations(tasks, size):
            scores = {}
            for t in group:
                s = score(group, t)
                if s is None or not math.isfinite(s.norm_loss) or (only_real and not s.real):
                    break
                scores[t] = s
            else:
                out.append((group, scores))
    return out


def _solve_exact(
    tasks: tuple[str, ...], candidates, budgets: Sequence[int]
) -> dict[int, list[tuple[str, ...]] | None]:
    """Branch and bound over partitions of the tasks into served blocks.

    Every solution (chosen networks, each task served by the best one containing it) is a
    partition of the tasks into blocks, block A served by one network G containing A at cost
    sum_{t in A} c(t, G); so the optimum is the cheapest partition into at most N blocks, where a
    block's cost w(A) is the cheapest network containing it (a lone task: min(1, its best
    network)). w is tabulated for every subset of a candidate group. The search extends a
    partial partition by a block holding the lowest unassigned task, cheapest-first, and prunes
    when the cost so far plus each remaining task's cheapest possible score cannot beat the
    incumbent (ties go to fewer blocks). Budgets are solved in increasing order, each starting
    from the previous optimum, which stays feasible.
    """
    n = len(tasks)
    w = np.full(1 << n, np.inf)
    server = np.zeros(1 << n, dtype=np.int64)
    for t in range(n):
        w[1 << t] = 1.0
        server[1 << t] = 1 << t
    index = {t: i for i, t in enumerate(tasks)}
    for group, scores in candidates:
        members = [index[t] for t in group]
        gmask = sum(1 << i for i in members)
        sums = np.zeros(1 << len(members))
        masks = np.zeros(1 << len(members), dtype=np.int64)
        for j, i in enumerate(members):
            sums[1 << j: 1 << (j + 1)] = sums[: 1 << j] + scores[tasks[i]].norm_loss
            masks[1 << j: 1 << (j + 1)] = masks[: 1 << j] | (1 << i)
        sums, masks = sums[1:], masks[1:]
        better = sums < w[masks] - _EPS
        w[masks[better]] = sums[better]
        server[masks[better]] = gmask
    lb = [float(w[1 << t]) for t in range(n)]
    finite = np.flatnonzero(np.isfinite(w))
    by_low: list[list[int]] = [[] for _ in range(n)]
    for m in finite.tolist():
        low = (m & -m).bit_length() - 1
        by_low[low].append(m)
    for low in range(n):
        by_low[low].sort(key=lambda m: (w[m] - sum(lb[i] for i in range(n) if m >> i & 1), -m.bit_count()))
    wl = w.tolist()

    best_cost, best_blocks, best_partition = math.inf, n + 1, None
    results: dict[int, list[tuple[str, ...]] | None] = {}

    def lower(rest: int) -> float:
        return sum(lb[i] for i in range(n) if rest >> i & 1)

    def dfs(rest: int, cost: float, chosen: list[int], budget: int) -> None:
        nonlocal best_cost, best_blocks, best_partition
        if rest == 0:
            if cost < best_cost - _EPS or (cost <= best_cost + _EPS and len(chosen) < best_blocks):
                best_cost, best_blocks, best_partition = cost, len(chosen), list(chosen)
            return
        if len(chosen) >= budget:
            return
        bound = cost + lower(rest)
        if bound > best_cost + _EPS or (bound > best_cost - _EPS and len(chosen) + 1 >= best_blocks):
            return
        if len(chosen) == budget - 1:
            if math.isfinite(wl[rest]):
                chosen.append(rest)
                dfs(0, cost + wl[rest], chosen, budget)
                chosen.pop()
            return
        low = (rest & -rest).bit_length() - 1
        for m in by_low[low]:
            if m & ~rest:
                continue
            chosen.append(m)
            dfs(rest & ~m, cost + wl[m], chosen, budget)
            chosen.pop()

    full = (1 << n) - 1
    for budget in sorted(set(budgets)):
        dfs(full, 0.0, [], budget)
        results[budget] = (
            None if best_partition is None
            else [tuple(tasks[i] for i in range(n) if int(server[m]) >> i & 1) for m in best_partition]
        )
    return results


# ---------------------------------------------------------------- greedy solver


def _solve_greedy(
    tasks: tuple[str, ...], score: ScoreFn, *, max_group_size: int, only_real: bool
) -> list[list[tuple[str, ...]]]:
    """Agglomerative merging: from every task alone, repeatedly merge the two blocks whose merged
    group lowers the total most (or raises it least), as long as some merge is admissible.
    Returns the partitions visited, from T blocks down."""
    cache: dict[tuple[str, ...], float | None] = {}

    def cost(group: tuple[str, ...]) -> float | None:
        if group not in cache:
            total = 0.0
            for t in group:
                s = score(group, t)
                if s is None or not math.isfinite(s.norm_loss) or (only_real and not s.real):
                    cache[group] = None
                    break
                total += s.norm_loss
            else:
                cache[group] = total
        return cache[group]

    blocks = [(t,) for t in tasks]
    block_cost = {b: 1.0 for b in blocks}
    path = [list(blocks)]
    while len(blocks) > 1:
        best = None
        for a, b in itertools.combinations(blocks, 2):
            merged = _key(a + b, tasks)
            if len(merged) > max_group_size:
                continue
            c = cost(merged)
            if c is None:
                continue
            delta = c - block_cost[a] - block_cost[b]
            if best is None or delta < best[0] - _EPS:
                best = (delta, a, b, merged, c)
        if best is None:
            break
        _, a, b, merged, c = best
        blocks = sorted([x for x in blocks if x not in (a, b)] + [merged], key=lambda g: tasks.index(g[0]))
        block_cost[merged] = c
        path.append(list(blocks))
    return path


# ---------------------------------------------------------------- the solver


def solve_grouping(
    tasks: Sequence[str],
    score: ScoreFn,
    *,
    budgets: Sequence[int] | None = None,
    max_group_size: int | None = None,
    only_real: bool = True,
) -> dict[int, Grouping | None]:
    """The best grouping for each budget N (max networks), or None where no grouping fits N.

    `score(group, task)` gives the task's normalised loss in the group (None: unknown, so the
    group is not a candidate). With `only_real` a task may only be in a multi-task network where
    its gain is real; otherwise any scored membership is allowed. Candidate networks are all
    scored groups of 2..`max_group_size` tasks (default: all tasks).

    Up to EXACT_MAX_TASKS tasks the answer is exact (branch and bound, `_solve_exact`).
    Above that it is greedy: start with every task alone and repeatedly merge the two blocks whose
    union, trained as one network, changes the total normalised loss least (most negative first);
    each visited partition is a solution with one network fewer, and budget N gets the best
    visited partition with at most N networks. The greedy never overlaps networks and can miss
    the optimum; it is O(T^3) score look-ups.
    """
    tasks = tuple(tasks)
    if not tasks:
        raise SpecError("no tasks to group; give at least one task")
    budgets = tuple(budgets) if budgets is not None else tuple(range(1, len(tasks) + 1))
    for b in budgets:
        if not isinstance(b, int) or b < 1:
            raise SpecError(f"a budget of networks must be an int >= 1. Got {b!r} instead.")
    size = len(tasks) if max_group_size is None else max(1, min(max_group_size, len(tasks)))
    out: dict[int, Grouping | None] = {}
    if len(tasks) <= EXACT_MAX_TASKS:
        candidates = _candidate_groups(tasks, score, max_group_size=size, only_real=only_real)
        capped = {b: min(b, len(tasks)) for b in budgets}
        raw = _solve_exact(tasks, candidates, sorted(set(capped.values())))
        for b in budgets:
            nets = raw[capped[b]]
            out[b] = None if nets is None else _grouping_from_networks(tasks, nets, score, only_real=only_real)
        return out
    path = _solve_greedy(tasks, score, max_group_size=size, only_real=only_real)
    visited = [_grouping_from_networks(tasks, p, score, only_real=only_real) for p in path]
    for b in budgets:
        fits = [g for g in visited if g.networks <= b]
        out[b] = min(fits, key=lambda g: (round(g.total, 12), g.networks)) if fits else None
    return out


@dataclass(frozen=True)
class BudgetChoice:
    """The recommended grouping, the Pareto front it was chosen from, and why."""

    grouping: Grouping
    front: Mapping[int, Grouping]  # budget N -> best grouping with at most N networks (real gains only)
    requested: int | None
    reasons: tuple[str, ...]


def choose_grouping(
    tasks: Sequence[str], score: ScoreFn, *, networks: int | None = None, max_group_size: int | None = None
) -> BudgetChoice:
    """Solve every budget 1..T and pick one: the requested budget, or by default the smallest
    number of networks whose total is not clearly worse than the best total (the difference is
    inside the intervals, `difference_is_inside_intervals`).

    Budgets that cannot be met with real gains only are left out of the front. A requested budget
    below the smallest feasible one is met by allowing tasks into groups where their gain is not
    real, and the reasons say so.
    """
    tasks = tuple(tasks)
    if networks is not None and (not isinstance(networks, int) or networks < 1):
        raise SpecError(f"'networks' must be an int >= 1 or unset. Got {networks!r} instead.")
    solved = solve_grouping(tasks, score, max_group_size=max_group_size)
    front = {n: g for n, g in solved.items() if g is not None}
    reasons: list[str] = []
    smallest = min(front)  # N = T (every task alone) is always feasible
    if smallest > 1:
        reasons.append(
            f"with fewer than {smallest} networks some task would have to share a network in which its gain is not real"
        )
    if networks is None:
        best_n = min(front, key=lambda n: (round(front[n].total, 12), n))
        chosen_n = next(n for n in sorted(front) if n <= best_n and difference_is_inside_intervals(front[n], front[best_n]))
        if chosen_n < best_n:
            reasons.append(
                f"{chosen_n} network(s) chosen over {best_n}: total normalised loss {front[chosen_n].total:.3f} vs "
                f"{front[best_n].total:.3f}, a difference inside the intervals, and fewer networks cost less"
            )
        grouping = front[chosen_n]
    elif networks in front or networks >= len(tasks):
        grouping = front[min(networks, len(tasks))]
    else:
        relaxed = solve_grouping(tasks, score, budgets=[networks], max_group_size=max_group_size, only_real=False)[networks]
        if relaxed is None:
            raise MissingResultsError(
                f"no grouping fits in {networks} network(s): the groups it would need have no scores; "
                f"ask for at least {smallest} networks or measure larger groups (search phase 'subsets')"
            )
        grouping = relaxed
        reasons.append(
            f"the budget of {networks} network(s) forces some tasks into groups where their gain is not real; "
            f"with real gains only, {smallest} networks are needed"
        )
    return BudgetChoice(grouping=grouping, front=front, requested=networks, reasons=tuple(reasons))


# ---------------------------------------------------------------- branch layer


@dataclass(frozen=True)
class BranchChoice:
    """Where a group's shared trunk should branch, and the evidence."""

    layer: int
    source: str  # depth | measured | rsa | default
    mean_gain: float = math.nan
    ci: tuple[float, float] = (math.nan, math.nan)


def _depth_rows(depth: pd.DataFrame | None, group: tuple[str, ...], order: Sequence[str]) -> pd.DataFrame:
    if depth is None or not len(depth):
        return pd.DataFrame(columns=list(rundir.DEPTH_COLUMNS))
    _require_columns(depth, rundir.DEPTH_COLUMNS, "depth")
    keys = depth["group"].map(lambda g: rundir.group_key(_split_group(g), order))
    rows = depth[keys == rundir.group_key(group, order)]
    if len(rows) or len(group) < 3:
        return rows
    # A larger group that the depth phase never trained: pool the rows of its pairs, if all exist.
    pairs = {rundir.group_key(p, order) for p in itertools.combinations(group, 2)}
    inside = keys.isin(pairs)
    return depth[inside] if set(keys[inside]) == pairs else depth.iloc[0:0]


def choose_branch_layer(
    group: Sequence[str],
    *,
    order: Sequence[str],
    depth: pd.DataFrame | None,
    similarity: pd.DataFrame | None,
    depth_L: int,
    measured: bool = False,
) -> BranchChoice:
    """The branch layer of a multi-task network.

    `measured`: the scores the network is chosen on were measured on this very group with the
    whole trunk shared (pairs, all-together, trained subsets). Unless the depth phase trained the
    group itself at other layers, its branch layer is then `depth_L`, source "measured": the
    configuration whose gains were measured, rather than a pooled or representation-similarity
    guess (on planted data, RSA's layer 1 for measured triples lost 24% test loss to all-together
    where the measured full sharing was within noise of it).

    From the depth phase: per layer, the mean gain over the group's tasks (interval: mean of the
    bounds), at layers where every task has a row; the layer with the best mean wins, except that
    a deeper layer (more sharing, fewer parameters) takes its place when the difference of the two
    means is inside their intervals (independent errors); among those, the deepest. A group of
    three or more that the depth phase never trained pools the rows of its pairs.
    Without depth rows: the representation-similarity estimate (rows pair, layer, similarity):
    the deepest layer at which every pair of the group has similarity >= RSA_SHARE_THRESHOLD, or,
    when no layer reaches it, the layer where the weakest pair is most similar. Without either:
    full sharing (`depth_L`), source "default".
    """
    group = _key(group, order)
    rows = _depth_rows(depth, group, order)
    if measured and not (len(rows) and set(rows["group"].map(lambda g: _key(_split_group(g), order))) == {group}):
        return BranchChoice(depth_L, "measured")
    if len(rows):
        layers = []
        for layer, at in rows.groupby("branch_layer"):
            if not set(group) <= set(at["task"].astype(str)):
                continue
            g, lo, hi = at["gain"].astype(float), at["ci_low"].astype(float), at["ci_high"].astype(float)
            if not (np.isfinite(g).all()):
                continue
            layers.append((int(layer), float(g.mean()), float(lo.mean()), float(hi.mean())))
        if layers:
            best = max(layers, key=lambda r: (r[1], r[0]))
            ties = [
                r for r in layers
                if r[0] >= best[0] and best[1] - r[1] <= math.sqrt((best[1] - best[2]) ** 2 + (r[3] - r[1]) ** 2) + _EPS
            ]
            pick = max(ties, key=lambda r: r[0])
            return BranchChoice(pick[0], "depth", pick[1], (pick[2], pick[3]))
    if similarity is not None and len(similarity):
        _require_columns(similarity, SIMILARITY_COLUMNS, "similarity")
        keys = similarity["pair"].map(lambda p: rundir.group_key(_split_group(p), order))
        pairs = {rundir.group_key(p, order) for p in itertools.combinations(group, 2)}
        sims = similarity[keys.isin(pairs)].assign(_pair=keys[keys.isin(pairs)])
        weakest = [
            (int(layer), float(at["similarity"].min()))
            for layer, at in sims.groupby("layer")
            if set(at["_pair"]) == pairs and np.isfinite(at["similarity"].astype(float)).all()
        ]
        if weakest:
            passing = [r for r in weakest if r[1] >= RSA_SHARE_THRESHOLD]
            pick = max(passing, key=lambda r: r[0]) if passing else max(weakest, key=lambda r: (r[1], -r[0]))
            return BranchChoice(pick[0], "rsa")
    return BranchChoice(depth_L, "default")


# ---------------------------------------------------------------- auxiliaries


@dataclass(frozen=True)
class AuxChoice:
    name: str
    kind: str
    serves: str
    expected_gain: float
    ci: tuple[float, float]


def choose_auxiliaries(
    affinity: pd.DataFrame,
    *,
    tasks: Sequence[str],
    aux_kinds: Mapping[str, str] | None = None,
    cap: int = 3,
    discovered: Mapping[tuple[str, str], bool | None] | None = None,
) -> dict[str, list[AuxChoice]]:
    """Per main task, the auxiliaries with a real measured gain on it (ci_low > 0), best first,
    at most `cap` of them. An auxiliary is any source that is not one of `tasks`. With
    `discovered` ((auxiliary, task) -> the false-discovery-rate verdict, as
    `GroupScorer.aux_rows` holds it) a gain must also be a discovery."""
    _require_columns(affinity, rundir.AFFINITY_COLUMNS, "affinity")
    if not isinstance(cap, int) or cap < 0:
        raise SpecError(f"the auxiliary cap must be an int >= 0. Got {cap!r} instead.")
    aux_kinds = dict(aux_kinds or {})
    main = set(tasks)
    rows = affinity[
        (affinity["method"] == "measured") & affinity["target"].isin(main) & ~affinity["source"].isin(main)
    ]
    out: dict[str, list[AuxChoice]] = {t: [] for t in tasks}
    for r in rows.to_dict("records"):
        lo, hi, gain = _num(r["ci_low"]), _num(r["ci_high"]), _num(r["gain"])
        if lo > 0 and math.isfinite(gain):
            name = str(r["source"])
            if discovered is not None and discovered.get((name, str(r["target"]))) is False:
                continue
            out[str(r["target"])].append(AuxChoice(name, aux_kinds.get(name, "unknown"), str(r["target"]), gain, (lo, hi)))
    for t in out:
        out[t] = sorted(out[t], key=lambda a: (-a.expected_gain, a.name))[:cap]
    return out


# ---------------------------------------------------------------- baselines


def baselines_from_trials(trials: pd.DataFrame, *, tasks: Sequence[str]) -> dict[str, dict[str, float]]:
    """Mean validation loss of each task trained alone, and of the all-task model with full
    sharing (the largest branch layer trained), from trials.parquet rows without auxiliaries."""
    import json

    _require_columns(trials, ("tasks", "aux", "val_loss", "branch_layer"), "trials")
    single: dict[str, list[float]] = {t: [] for t in tasks}
    together: dict[int, dict[str, list[float]]] = {}
    everyone = set(tasks)
    for r in trials.to_dict("records"):
        if str(r.get("state", "complete")).lower() in ("pruned", "fail", "failed", "running"):
            continue
        members = [str(t) for t in list(r["tasks"])]
        if len(list(r["aux"] if r["aux"] is not None else [])):
            continue
        losses = r["val_loss"] if isinstance(r["val_loss"], dict) else json.loads(r["val_loss"] or "{}")
        if len(members) == 1 and members[0] in single and members[0] in losses:
            single[members[0]].append(float(losses[members[0]]))
        elif set(members) == everyone and len(members) > 1:
            per = together.setdefault(int(r["branch_layer"]), {t: [] for t in tasks})
            for t in tasks:
                if t in losses:
                    per[t].append(float(losses[t]))
    full = together[max(together)] if together else {}
    return {
        "single_task_loss": {t: float(np.mean(v)) for t, v in single.items() if v},
        "all_together_loss": {t: float(np.mean(v)) for t, v in full.items() if v},
    }


# ---------------------------------------------------------------- the recommendation


def _pct(x: float) -> str:
    return f"{100 * x:+.1f}%"


def _weakest_source(scores: Iterable[TaskScore]) -> str:
    return max((s.source for s in scores), key=SCORE_SOURCES.index, default="single")


def recommend(
    *,
    spec_tasks: Sequence[str],
    affinity: pd.DataFrame,
    group_scores: pd.DataFrame | None = None,
    depth: pd.DataFrame | None = None,
    similarity: pd.DataFrame | None = None,
    candidates: Sequence[Mapping[str, Any]] | None = None,
    baselines: Mapping[str, Mapping[str, float]] | None = None,
    depth_L: int,
    networks: int | None = None,
    aux_cap: int = 3,
    max_group_size: int | None = None,
    fdr: float = 1.0,
) -> dict[str, Any]:
    """The recommendation.json object (schema_version 1, rundir.py and DESIGN.md) for `spec_tasks`.

    `candidates` are the candidates.json objects (name, kind, ...) used to name auxiliary kinds;
    `baselines` maps "single_task_loss" and "all_together_loss" to per-task losses (see
    `baselines_from_trials`). Groups cover every task; a task with no real gain anywhere is a group
    of its own. The Pareto front lists, per budget of networks, the best total normalised loss
    with real gains only.
    """
    tasks = tuple(spec_tasks)
    if len(set(tasks)) != len(tasks) or not tasks:
        raise SpecError(f"spec_tasks must be distinct task names, at least one. Got {list(tasks)} instead.")
    if not isinstance(depth_L, int) or depth_L < 0:
        raise SpecError(f"depth_L must be an int >= 0 (the trunk's layer count). Got {depth_L!r} instead.")
    aux_kinds = {str(c["name"]): str(c.get("kind", "unknown")) for c in candidates or ()}
    related_columns = {
        str(c["name"]): tuple((c.get("provenance") or {}).get("columns", ()))
        for c in candidates or () if c.get("kind") == "related"
    }
    scorer = GroupScorer.from_tables(tasks=tasks, group_scores=group_scores, affinity=affinity, fdr=fdr)
    choice = choose_grouping(tasks, scorer, networks=networks, max_group_size=max_group_size)
    g = choice.grouping
    verdicts = {k: sc.discovered for k, sc in scorer.aux_rows.items()} if fdr < 1.0 else None
    aux = choose_auxiliaries(affinity, tasks=tasks, aux_kinds=aux_kinds, cap=aux_cap, discovered=verdicts)
    reasons = list(choice.reasons)
    if fdr < 1.0:
        scores = (*scorer.group_rows.values(), *scorer.pair_rows.values(), *scorer.aux_rows.values())
        tested = [sc for sc in scores if sc.discovered is not None]
        reasons.append(
            f"measured gains count as real only as discoveries at a false-discovery rate of {fdr:g} "
            f"(Benjamini-Hochberg over the measured comparisons; {sum(sc.discovered for sc in tested)} "
            f"of {len(tested)} scores pass)"
        )

    groups = []
    for i, members in enumerate(g.groups):
        served = [t for t in members if g.assignment[t] == i]
        member_scores = {t: (g.scores[t] if t in served else scorer(members, t)) for t in members}
        if len(members) > 1:
            measured = all(member_scores[t] is not None and member_scores[t].source == "measured" for t in served)
            branch = choose_branch_layer(members, order=tasks, depth=depth, similarity=similarity, depth_L=depth_L,
                                         measured=measured)
        else:
            branch = BranchChoice(depth_L, "default")
        # A related auxiliary that copies a member task adds nothing: the group trains that task.
        # The network trains each auxiliary once, however many of its served tasks gain from it.
        by_name: dict[str, dict[str, Any]] = {}
        for t in served:
            for a in aux[t]:
                copied = set(related_columns.get(a.name, ()))
                if a.kind == "related" and copied and copied <= set(members) - {t}:
                    continue
                entry = by_name.setdefault(a.name, {"name": a.name, "kind": a.kind, "serves": [],
                                                    "expected_gain": {}, "ci": {}})
                entry["serves"].append(t)
                entry["expected_gain"][t] = a.expected_gain
                entry["ci"][t] = list(a.ci)
        group_aux = list(by_name.values())
        groups.append({
            "tasks": list(members),
            "serves": served,
            "branch_layer": branch.layer,
            "branch_source": branch.source,
            "score_source": "single" if len(members) == 1 else _weakest_source(s for s in member_scores.values() if s),
            "sources": {t: (s.source if s else None) for t, s in member_scores.items()},
            "aux": group_aux,
            "expected_gain": {t: (s.gain if s else None) for t, s in member_scores.items()},
            "ci": {t: (list(s.gain_ci) if s else None) for t, s in member_scores.items()},
        })
        if branch.source == "depth" and len(members) > 1:
            reasons.append(
                f"{' + '.join(members)} branches after layer {branch.layer} of {depth_L} "
                f"(mean gain {_pct(branch.mean_gain)} there, from the depth phase)"
            )
        elif branch.source == "measured":
            reasons.append(
                f"{' + '.join(members)} shares the whole trunk ({depth_L} layers), as when its gains were measured"
            )
        elif branch.source == "rsa":
            reasons.append(
                f"{' + '.join(members)}: no depth-phase result; branch layer {branch.layer} from representation similarity"
            )
        elif len(members) > 1:
            reasons.append(
                f"{' + '.join(members)}: no depth or similarity result; sharing the whole trunk ({depth_L} layers)"
            )

    pareto = [
        {"networks": n, "used": f.networks, "total_normalised_loss": f.total, "ci": list(f.ci),
         "groups": [list(x) for x in f.groups]}
        for n, f in sorted(choice.front.items())
    ]
    multi = [grp for grp in groups if len(grp["tasks"]) > 1]
    if not multi:
        pairs = [(s, t, sc) for (s, t), sc in scorer.pair_rows.items() if sc.source == "measured"]
        if pairs:
            # The pairs as the grouping scored them (a measured group score comes before the gain row).
            scored = [(s, t, scorer((s, t), t) or sc) for s, t, sc in pairs]
            real = [p for p in scored if p[2].real]
            kept_out = [p for p in scored if not p[2].real and p[2].ci_high < 1.0]  # by the false-discovery control

            def gain_text(score: TaskScore) -> str:
                lo, hi = score.gain_ci
                return f"{_pct(score.gain)}, interval [{_pct(lo)}, {_pct(hi)}]"

            if real:
                # Real gains one way only: a shared network is recommended only when every task in
                # it gains (solve_grouping's only_real).
                s, t, sc = min(real, key=lambda p: p[2].norm_loss)
                back = scorer((s, t), s)
                why = (f"no two tasks both gain from training together with intervals that exclude zero, and a shared "
                       f"network is recommended only when each of its tasks gains (the largest real gain: {s} -> {t} "
                       f"{gain_text(sc)}; {t} -> {s} " + (gain_text(back) if back is not None else "not measured") + ")")
            elif kept_out:
                s, t, sc = min(kept_out, key=lambda p: p[2].norm_loss)
                why = (f"no task's gain from a partner survives the false-discovery-rate control (the largest gain: "
                       f"{s} -> {t} {gain_text(sc)})")
            else:
                s, t, sc = min(scored, key=lambda p: p[2].norm_loss)
                why = f"no task gains from any partner with an interval that excludes zero (the largest gain: {s} -> {t} {gain_text(sc)})"
        elif len(tasks) == 1:
            why = f"{tasks[0]} is the only main task, so there is nothing to group it with"
        else:
            # A pairwise gain is measured against the task trained alone: without the single phase
            # the pairs phase's models give no gain at all.
            alone = (any(len(members) == 1 for members, _ in scorer.group_rows)
                     or bool((baselines or {}).get("single_task_loss")))
            if alone:
                missing = "run the search's 'pairs' phase"
            elif group_scores is not None or baselines is not None:
                missing = "run the search's 'single' phase: gains are measured against each task trained alone"
            else:
                missing = "run the search's 'single' and 'pairs' phases"
            why = f"there are no measured pairwise gains to group by ({missing})"
        reasons.insert(0, why)
        verdict = (f"Train every task separately ({len(tasks)} networks): {why}." if len(tasks) > 1
                   else f"Train {tasks[0]} in a network of its own: {why}.")
        if any(aux.values()):
            verdict += " Add the auxiliaries listed under 'auxiliaries'; their gains are real."
    else:
        parts = []
        for grp in groups:
            if len(grp["tasks"]) > 1:
                part = f"{{{', '.join(grp['tasks'])}}} branching after layer {grp['branch_layer']} of {depth_L}"
            else:
                part = f"{grp['tasks'][0]} alone"
            if grp["aux"]:
                part += " with auxiliaries " + ", ".join(a["name"] for a in grp["aux"])
            parts.append(part)
        mean_gain = float(np.mean([1.0 - g.scores[t].norm_loss for t in tasks]))
        verdict = (
            f"Train {g.networks} network(s): {'; '.join(parts)}; expected mean gain {_pct(mean_gain)} per task "
            f"over training each task alone."
        )
        reasons.insert(0, (
            f"chosen from {len(choice.front)} feasible budgets; total normalised loss {g.total:.3f} "
            f"(interval {g.ci[0]:.3f}..{g.ci[1]:.3f}) against {float(len(tasks)):.3f} for every task alone"
        ))
    with_aux = {t: a for t, a in aux.items() if a}
    if with_aux:
        reasons.append("auxiliaries with a real gain: " + "; ".join(
            f"{t}: {', '.join(a.name for a in lst)}" for t, lst in with_aux.items()))

    rec = {
        "schema_version": rundir.SCHEMA_VERSION,
        "tasks": list(tasks),
        "groups": groups,
        "assignment": dict(g.assignment),
        "auxiliaries": {
            t: [{"name": a.name, "kind": a.kind, "expected_gain": a.expected_gain, "ci": list(a.ci)} for a in lst]
            for t, lst in aux.items()
        },
        "baselines": {
            "single_task_loss": dict((baselines or {}).get("single_task_loss", {})),
            "all_together_loss": dict((baselines or {}).get("all_together_loss", {})),
        },
        "budget": {"networks": g.networks, "requested": networks},
        "pareto": pareto,
        "verdict": verdict,
        "reasons": reasons,
    }
    return rundir.json_safe(rec)


def write_recommendation(run_dir: str | Path, rec: Mapping[str, Any]) -> Path:
    """Write recommendation.json into `run_dir`, atomically."""
    return rundir.write_json(Path(run_dir) / rundir.RECOMMENDATION, rundir.json_safe(dict(rec)))


SURROGATE_MAX_GROUP = 4  # surrogate scores for every group of 2..4 main tasks not measured


def observed_group_scores(observations: pd.DataFrame, tasks: Sequence[str]) -> pd.DataFrame:
    """Measured `group_scores.csv` rows from surrogate observations (group, task, seed, norm_loss):
    for every group of two or more of `tasks`, each member's mean normalised loss over its seeds
    with a Student-t interval (source "measured", as for the groups the measured phases train)."""
    from taskscout.affinity.measured import t_interval

    _require_columns(observations, rundir.SUBSET_OBSERVATION_COLUMNS, "subset observations")
    main = set(tasks)
    rows = []
    for (group, task), at in observations.groupby(["group", "task"], sort=False):
        members = _split_group(group)
        if len(members) < 2 or not set(members) <= main or task not in members:
            continue
        iv = t_interval(at.drop_duplicates("seed")["norm_loss"].astype(float))
        if iv.n:
            rows.append((rundir.group_key(members, tasks), str(task), iv.mean, iv.low, iv.high, iv.n, "measured"))
    return pd.DataFrame(rows, columns=list(rundir.GROUP_SCORE_COLUMNS))


def with_subset_scores(
    group_scores: pd.DataFrame | None, observations: pd.DataFrame, tasks: Sequence[str], *, surrogate: bool = True
) -> pd.DataFrame | None:
    """`group_scores` plus what the subsets phase adds: measured scores of every trained subset
    that `group_scores` lacks, then (with `surrogate`) the subset surrogate's predictions for the
    groups of up to SURROGATE_MAX_GROUP tasks measured nowhere. A measured score is never replaced
    by a prediction: the surrogate is one linear model over all subsets and shrinks the gains of
    the groups it was never shown (on planted data it scored a group's triple below either of its
    measured pairs)."""
    from taskscout.affinity.surrogate import fit_surrogate

    if observations.empty or len(tasks) < 2:
        return group_scores
    measured = set(group_scores["group"]) if group_scores is not None else set()
    trained = observed_group_scores(observations, tasks)
    trained = trained[~trained["group"].isin(measured)]
    parts = [f for f in (group_scores, trained) if f is not None and len(f)]
    measured |= set(trained["group"])
    if surrogate:
        model = fit_surrogate(observations, tasks=list(tasks))
        groups = [
            g for size in range(2, min(SURROGATE_MAX_GROUP, len(tasks)) + 1)
            for g in itertools.combinations(tasks, size) if rundir.group_key(g, tasks) not in measured
        ]
        known = pd.concat(parts, ignore_index=True) if parts else None
        parts.append(anchored_predictions(model, groups, known, tasks))
    return pd.concat(parts, ignore_index=True) if parts else group_scores


def anchored_predictions(
    surrogate: Any, groups: Iterable[Sequence[str]], measured: pd.DataFrame | None, tasks: Sequence[str]
) -> pd.DataFrame:
    """Surrogate scores of unmeasured `groups` (`group_scores.csv` rows, source "surrogate"),
    each anchored on the task's largest measured group inside it.

    For task t in group G, with M the largest measured group such that t in M and M inside G (ties:
    more seeds, then the narrower interval; t alone, normalised loss exactly 1, when nothing else
    is measured): score = measured(M) + s(G) - s(M), where s is the surrogate's prediction. The
    surrogate is one linear model over all subsets: its level at a particular group can be off by
    more than the effect of adding a task to it (on planted data it predicted a group's triple
    worse than either of its measured pairs, and a task of another group gaining in a group where
    measuring showed it did not), while the difference it predicts between nested groups is what it
    is fitted on. The interval's half-widths are those of the measured anchor and of the surrogate
    at G, combined as independent errors.
    """
    rows = []
    anchors: dict[str, list[tuple[frozenset[str], TaskScore]]] = {}
    if measured is not None and len(measured):
        for r in measured.itertuples(index=False):
            if str(r.source) != "measured":
                continue
            members = frozenset(_split_group(r.group))
            score = TaskScore(float(r.norm_loss), float(r.ci_low), float(r.ci_high), "measured", int(r.n_seeds))
            anchors.setdefault(str(r.task), []).append((members, score))
    for g in groups:
        g = list(g)
        key = rundir.group_key(g, tasks)
        for t, (m, lo, hi) in surrogate.predict(g).items():
            inside = [(a, sc) for a, sc in anchors.get(t, ()) if a <= set(g) and len(a) >= 2 and math.isfinite(sc.norm_loss)]
            if inside:
                a, base = max(inside, key=lambda x: (len(x[0]), x[1].n_seeds, -(x[1].ci_high - x[1].ci_low)))
                sm = surrogate.per_task[t].predict(sorted(a))[0]
            else:
                base, sm = ALONE, surrogate.per_task[t].predict([t])[0]
            mean = base.norm_loss + (m - sm)
            below = math.hypot(base.norm_loss - base.ci_low, m - lo)
            above = math.hypot(base.ci_high - base.norm_loss, hi - m)
            rows.append((key, t, mean, mean - below, mean + above, surrogate.per_task[t].n_obs, "surrogate"))
    return pd.DataFrame(rows, columns=list(rundir.GROUP_SCORE_COLUMNS))


def _point_estimates(score: ScoreFn) -> ScoreFn:
    """`score` with every interval shrunk to its point: under the real-gain rule a task may then
    join any group where its normalised loss is below 1 at all."""

    def point(group: Sequence[str], task: str) -> TaskScore | None:
        s = score(group, task)
        return None if s is None else TaskScore(s.norm_loss, s.norm_loss, s.norm_loss, s.source, s.n_seeds)

    return point


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

    for use_surrogate in (True, False):
        table = with_subset_scores(group_scores, observations, tasks, surrogate=use_surrogate)
        scorer = GroupScorer.from_tables(tasks=tasks, group_scores=table, fdr=fdr)
        for members in choose_grouping(tasks, scorer, networks=networks).grouping.groups:
            add(members)
        if use_surrogate:
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

    cliques = sorted((_key(c, tasks) for c in nx.find_cliques(helped) if len(c) >= 3),
                     key=lambda c: (strength(c), [tasks.index(t) for t in c]))
    for members in cliques:
        add(members)
    return found[:limit]


def recommend_run(
    run_dir: str | Path, *, networks: int | None = None, aux_cap: int = 3, similarity: pd.DataFrame | None = None,
    unfinished: Sequence[str] = (),
) -> dict[str, Any]:
    """Rebuild graph.graphml and recommendation.json of a run directory from its saved tables.

    `unfinished` names the search's phases that its time limit cut short: the recommendation then
    says it is provisional, and why.

    Needs spec.json and affinity.csv; group_scores.csv, depth.csv, candidates.json and
    trials.parquet are used when present. Returns the recommendation.
    """
    from taskscout.spec import spec_from_json

    d = rundir.require(run_dir, rundir.SPEC, rundir.AFFINITY)
    spec = spec_from_json((d / rundir.SPEC).read_text(encoding="utf-8"))
    tasks = spec.main_tasks
    affinity = pd.read_csv(d / rundir.AFFINITY)
    group_scores = pd.read_csv(d / rundir.GROUP_SCORES) if (d / rundir.GROUP_SCORES).exists() else None
    depth = pd.read_csv(d / rundir.DEPTH) if (d / rundir.DEPTH).exists() else None
    candidates = rundir.read_json(d / rundir.CANDIDATES) if (d / rundir.CANDIDATES).exists() else []
    baselines = (
        baselines_from_trials(pd.read_parquet(d / rundir.TRIALS), tasks=tasks)
        if (d / rundir.TRIALS).exists() else None
    )
    if similarity is None and (d / rundir.RSA_LAYERS).exists():
        similarity = pd.read_csv(d / rundir.RSA_LAYERS)
    if (d / rundir.SUBSET_OBSERVATIONS).exists():
        group_scores = with_subset_scores(group_scores, pd.read_csv(d / rundir.SUBSET_OBSERVATIONS), tasks)
    aux_kinds = {str(c["name"]): str(c.get("kind", "unknown")) for c in candidates}
    save_graphml(build_graph(affinity, tasks=tasks, aux_kinds=aux_kinds), d / rundir.GRAPH)
    rec = recommend(
        spec_tasks=tasks, affinity=affinity, group_scores=group_scores, depth=depth, similarity=similarity,
        candidates=candidates, baselines=baselines, depth_L=spec.model.depth,
        networks=networks if networks is not None else spec.search.networks, aux_cap=aux_cap,
        fdr=spec.search.fdr,
    )
    if unfinished:
        why = (f"the search stopped at its time limit before finishing the phase(s) {', '.join(unfinished)}: "
               f"this rests on the models measured so far; run the same command again to complete it")
        rec = {**rec, "verdict": f"Provisional: {rec['verdict']}", "reasons": [why, *rec["reasons"]]}
    write_recommendation(d, rec)
    return rec
