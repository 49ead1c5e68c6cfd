"""The grouping solver: networks under a budget, exact (branch and bound) or greedy, and the budget choice."""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from taskscout.device import one_blas_thread
from taskscout.errors import MissingResultsError, SpecError
from taskscout.grouping._tables import _EPS, _key
from taskscout.grouping.scale import chooses_on_estimates, scalable_partitions
from taskscout.grouping.scores import ALONE, ScoreFn, TaskScore

EXACT_MAX_TASKS = 12  # branch and bound above this is too slow for an interactive tool


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


def without_idle_helpers(g: Grouping, score: ScoreFn, *, only_real: bool = True) -> Grouping:
    """`g` with each network's helpers (tasks it trains but does not serve) dropped unless the
    tasks it serves are clearly better with them: the network trained on its served tasks alone is
    taken whenever the total is not clearly worse (`difference_is_inside_intervals`), as the budget
    rule takes fewer networks. A helper costs training and is picked from many measured supersets
    on a few seeds, so its point gain is the most optimistic (on planted data a measured group of
    one planted group and two tasks of another served the first by 0.05 lower normalised losses
    per task, inside seed noise)."""
    changed = True
    while changed:
        changed = False
        for i, net in enumerate(g.groups):
            served = tuple(t for t in net if g.assignment[t] == i)
            if not served or len(served) == len(net):
                continue
            trimmed = _grouping_from_networks(g.tasks, [*g.groups[:i], served, *g.groups[i + 1:]], score,
                                              only_real=only_real)
            if trimmed.networks <= g.networks and (not only_real or trimmed.only_real) \
                    and difference_is_inside_intervals(trimmed, g):
                g, changed = trimmed, True
                break
    return g


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


def _block_costs(tasks: tuple[str, ...], candidates) -> tuple[np.ndarray, np.ndarray]:
    """w[A], the cheapest cost of serving block A (a bit mask over `tasks`) by one network, and
    server[A], the mask of that network: a lone task costs 1 (served alone), and every subset of
    a candidate group costs the sum of its members' scores in that group, if that is cheaper."""
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
    return w, server


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
    w, server = _block_costs(tasks, candidates)
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
    rank = {t: i for i, t in enumerate(tasks)}
    path = [list(blocks)]
    # Each pair's merge is scored once (a merge changes only the pairs with the new block): O(T^2)
    # look-ups in all. A heap gives the best merge; entries of merged-away blocks are skipped.
    # Ties (deltas within 1e-12) go to the pair that comes first in study order.
    heap: list[tuple[float, int, int, tuple[str, ...], tuple[str, ...], tuple[str, ...], float]] = []

    def push(a: tuple[str, ...], b: tuple[str, ...]) -> None:
        if rank[b[0]] < rank[a[0]]:
            a, b = b, a
        merged = _key(a + b, tasks)
        c = None if len(merged) > max_group_size else cost(merged)
        if c is not None:
            heapq.heappush(heap, (round(c - block_cost[a] - block_cost[b], 12), rank[a[0]], rank[b[0]], a, b, merged, c))

    for a, b in itertools.combinations(blocks, 2):
        push(a, b)
    alive = set(blocks)
    while heap:
        _, _, _, a, b, merged, c = heapq.heappop(heap)
        if a not in alive or b not in alive:
            continue
        alive -= {a, b}
        block_cost[merged] = c
        for other in alive:
            push(merged, other)
        alive.add(merged)
        blocks = sorted(alive, key=lambda g: rank[g[0]])
        path.append(list(blocks))
    return path


# ---------------------------------------------------------------- the solver


@one_blas_thread()
def solve_grouping(
    tasks: Sequence[str],
    score: ScoreFn,
    *,
    budgets: Sequence[int] | None = None,
    max_group_size: int | None = None,
    only_real: bool = True,
    method: str = "auto",
) -> dict[int, Grouping | None]:
    """The best grouping for each budget N (max networks), or None where no grouping fits N.

    `score(group, task)` gives the task's normalised loss in the group (None: unknown, so the
    group is not a candidate). With `only_real` a task may only be in a multi-task network where
    its gain is real; otherwise any scored membership is allowed. Candidate networks are all
    scored groups of 2..`max_group_size` tasks (default: all tasks).

    Up to EXACT_MAX_TASKS tasks the answer is exact (branch and bound, `_solve_exact`).
    Above that (or with `method="scalable"`) it is the scalable path (`scale.scalable_partitions`):
    candidate partitions from the greedy agglomeration (start with every task alone and repeatedly
    merge the two blocks whose union, trained as one network, changes the total normalised loss
    least), from spectral clustering of the pair-gain graph, and local moves on the best of them;
    budget N gets the best candidate with at most N networks. It never overlaps networks and can
    miss the optimum; its cost is polynomial (O(T^3) score look-ups).
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
    if method not in ("auto", "exact", "scalable"):
        raise SpecError(f"method must be 'auto', 'exact' or 'scalable'. Got {method!r} instead.")
    if method == "exact" or (method == "auto" and len(tasks) <= EXACT_MAX_TASKS):
        candidates = _candidate_groups(tasks, score, max_group_size=size, only_real=only_real)
        capped = {b: min(b, len(tasks)) for b in budgets}
        raw = _solve_exact(tasks, candidates, sorted(set(capped.values())))
        for b in budgets:
            nets = raw[capped[b]]
            out[b] = None if nets is None else _grouping_from_networks(tasks, nets, score, only_real=only_real)
        return out
    path = _solve_greedy(tasks, score, max_group_size=size, only_real=only_real)
    # Shrunk sampled gains over many tasks are estimates already discounted for noise: every
    # member is served by its block, as the partition was chosen (scale._BlockCost), not gated.
    estimated = chooses_on_estimates(tasks, score, EXACT_MAX_TASKS)
    found = scalable_partitions(tasks, score, greedy=path, only_real=only_real, estimated=estimated)
    serve_real = only_real and not estimated
    visited = [_grouping_from_networks(tasks, p, score, only_real=serve_real) for p in found
               if max(len(b) for b in p) <= size]
    for b in budgets:
        fits = [g for g in visited if g.networks <= b]
        out[b] = min(fits, key=lambda g: (round(g.total, 12), g.networks)) if fits else None
    return out


def _best_estimate(front: Mapping[int, Grouping], reasons: list[str]) -> Grouping:
    """The default choice on an additive scorer of shrunk sampled gains: the grouping with the
    lowest estimated total (fewer networks on a tie). The intervals of 100 tasks' summed gains are
    so wide that "not clearly worse" let the fewest-networks rule merge planted groups; the shrinkage
    has already discounted noisy gains, and the selection stage measures the choice on fresh seeds."""
    best_n = min(front, key=lambda n: (round(front[n].total, 12), n))
    reasons.append(
        f"{front[best_n].networks} network(s): the lowest estimated total normalised loss "
        f"({front[best_n].total:.3f}) from the shrunk sampled-subset gains, the number of networks chosen on it"
    )
    return front[best_n]


@dataclass(frozen=True)
class BudgetChoice:
    """The recommended grouping, the Pareto front it was chosen from, and why."""

    grouping: Grouping
    front: Mapping[int, Grouping]  # budget N -> best grouping with at most N networks (real gains only)
    requested: int | None
    reasons: tuple[str, ...]


def choose_grouping(
    tasks: Sequence[str], score: ScoreFn, *, networks: int | None = None, max_group_size: int | None = None,
    method: str = "auto",
) -> BudgetChoice:
    """Solve every budget 1..T and pick one: the requested budget, or by default the smallest
    number of networks whose total is not clearly worse than the best total (the difference is
    inside the intervals, `difference_is_inside_intervals`).

    Above EXACT_MAX_TASKS tasks with shrunk sampled-subset gains (`scale.chooses_on_estimates`)
    the default is instead the lowest estimated total (`_best_estimate`).

    Budgets that cannot be met with real gains only are left out of the front. A requested budget
    below the smallest feasible one is met by allowing tasks into groups where their gain is not
    real, and the reasons say so.
    """
    tasks = tuple(tasks)
    if networks is not None and (not isinstance(networks, int) or networks < 1):
        raise SpecError(f"'networks' must be an int >= 1 or unset. Got {networks!r} instead.")
    solved = solve_grouping(tasks, score, max_group_size=max_group_size, method=method)
    front: dict[int, Grouping] = {}
    trimmed: set[int] = set()
    for n in sorted(b for b, g in solved.items() if g is not None):  # helpers dropped; the front stays monotone
        g = without_idle_helpers(solved[n], score)
        if g.groups != solved[n].groups:
            trimmed.add(n)
        fewer = front.get(max(front)) if front else None
        front[n] = fewer if fewer is not None and round(fewer.total, 12) <= round(g.total, 12) else g
    reasons: list[str] = []
    smallest = min(front)  # N = T (every task alone) is always feasible
    if smallest > 1:
        reasons.append(
            f"with fewer than {smallest} networks some task would have to share a network in which its gain is not real"
        )
    if networks is None and chooses_on_estimates(tasks, score, EXACT_MAX_TASKS):
        grouping = _best_estimate(front, reasons)
    elif networks is None:
        best_n = min(front, key=lambda n: (round(front[n].total, 12), n))
        chosen_n = next(n for n in sorted(front) if n <= best_n and difference_is_inside_intervals(front[n], front[best_n]))
        if chosen_n < best_n:
            reasons.append(
                f"{chosen_n} network(s) chosen over {best_n}: total normalised loss {front[chosen_n].total:.3f} vs "
                f"{front[best_n].total:.3f}, a difference inside the intervals, and fewer networks cost less"
            )
        grouping = front[chosen_n]
        if chosen_n in trimmed:
            reasons.append("tasks a network would train only to help others (not served by it) are left out: the "
                           "tasks it serves are not clearly better with them")
    elif networks in front or networks >= len(tasks):
        grouping = front[min(networks, len(tasks))]
    else:
        relaxed = solve_grouping(tasks, score, budgets=[networks], max_group_size=max_group_size, only_real=False,
                                 method=method)[networks]
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
