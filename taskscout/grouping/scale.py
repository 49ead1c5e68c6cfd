"""Grouping at scale: partitions of many tasks from the affinity graph, improved by local moves.

Above EXACT_MAX_TASKS the exact branch and bound is out of reach. `solve_scalable` gathers
candidate partitions from two sources, both polynomial in T:

- spectral clustering of the affinity graph (Li, Ju, Sharma and Zhang, KDD 2023): the graph's
  weights are the pairs' mutual gains, w(i, j) = 1 - (score(ij, i) + score(ij, j)) / 2 where
  positive (T^2 score calls); the c leading eigenvectors of its normalised adjacency, rows
  normalised, are split by k-means (seeded) for every c = 2..min(T, MAX_CLUSTERS); the number of
  groups is then chosen on the totals, like every other budget;
- the greedy agglomeration (`solve._solve_greedy`), every partition it visits;
- with an additive scorer (sampled-subset gains, `is_additive`), each spectral partition improved
  by `pair_moves` (correlation clustering on the pair weights, blocks may split off);

then the LOCAL_SEARCH_STARTS best of them on the total are improved by local moves (a task moved
to another block, or two blocks merged, whenever that lowers the total; the number of networks
never grows), until no move helps or LOCAL_PASSES passes have run. A block's cost is the sum of
its members' normalised losses in it, a member whose gain is not real (with `only_real`) counting
as served alone (1). Every candidate becomes a `Grouping` through the serving rule, and budget N
gets the best candidate with at most N networks. On the 12-task planted sets of the tests the
scalable path returns the exact solver's grouping.

Above 12 tasks with shrunk sampled-subset gains (`chooses_on_estimates`) the cost is the block's
estimated total instead (no per-member gate, no cap at 1), every member is served by its block,
and `solve.choose_grouping` takes the lowest estimated total: on the 100-task planted search this
raised the adjusted Rand index against the planted groups from 0.78 to 0.93 (docs: many-tasks).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from taskscout.grouping._tables import _EPS, _key
from taskscout.grouping.scores import ScoreFn

MAX_CLUSTERS = 40  # spectral partitions tried: c = 2 .. min(T, MAX_CLUSTERS) groups
LOCAL_SEARCH_STARTS = 3  # the best candidates (on the total) improved by local moves
LOCAL_PASSES = 10  # passes over every task and block pair at most


def pair_affinity(tasks: Sequence[str], score: ScoreFn) -> np.ndarray:
    """The symmetric graph of mutual pair gains (zero where unknown or on the diagonal)."""
    n = len(tasks)
    w = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            pair = (tasks[i], tasks[j])
            a, b = score(pair, tasks[i]), score(pair, tasks[j])
            if a is not None and b is not None and math.isfinite(a.norm_loss) and math.isfinite(b.norm_loss):
                w[i, j] = w[j, i] = 1.0 - (a.norm_loss + b.norm_loss) / 2
    return w


def spectral_partitions(weights: np.ndarray, *, max_clusters: int = MAX_CLUSTERS, seed: int = 0) -> list[list[int]]:
    """Labels (one per task) of the spectral clustering of the positive part of `weights` into c
    groups, for each c = 2..min(T, max_clusters)."""
    import warnings

    from scipy.cluster.vq import kmeans2

    n = len(weights)
    w = np.clip(weights, 0.0, None)
    degree = w.sum(axis=1)
    scale = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1e-300)), 0.0)
    _, vectors = np.linalg.eigh(scale[:, None] * w * scale[None, :])
    out = []
    for c in range(2, min(n, max_clusters) + 1):
        emb = vectors[:, -c:]
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        emb = np.where(norms > 0, emb / np.maximum(norms, 1e-300), 0.0)
        rng = np.random.default_rng(seed + c)
        with warnings.catch_warnings():  # an empty cluster only means fewer groups than c
            warnings.simplefilter("ignore")
            _, labels = kmeans2(emb, emb[rng.choice(n, size=c, replace=False)], minit="matrix", iter=50,
                                seed=seed + c)
        out.append([int(x) for x in labels])
    return out


def is_additive(score: ScoreFn) -> bool:
    """Whether `score` (or the predictor of a GroupScorer) scores a group as the sum of its
    members' pair gains (`subset_scores.sampled_predictor` marks itself `additive`): then the
    total is T minus the pair weights inside blocks, and `pair_moves` optimises it directly."""
    return bool(getattr(score, "additive", False) or getattr(getattr(score, "predict", None), "additive", False))


def chooses_on_estimates(tasks: Sequence[str], score: ScoreFn, exact_max_tasks: int) -> bool:
    """Whether the grouping of `tasks` is chosen on estimated totals (`_BlockCost` with
    `estimated`, every member served by its block, the lowest total whatever the networks'
    number): an additive scorer of shrunk sampled gains over more tasks than the exact solver
    takes. Up to `exact_max_tasks` the exact solver's per-task gate and budget rule apply, and the
    scalable path, forced, returns its grouping."""
    return is_additive(score) and len(tasks) > exact_max_tasks


def pair_moves(weights: np.ndarray, labels: Sequence[int], *, passes: int = 5 * LOCAL_PASSES) -> list[int]:
    """Labels improved for the sum of pair weights inside blocks (correlation clustering): each
    task in turn moves to the block, or a block of its own, where its summed weight to the
    members is largest, until no task moves. O(T^2) per pass; the blocks' number may grow. Under
    an additive scorer (sampled gains) the total is T minus exactly this sum, and on the 100-task
    planted search it recovered the planted groups where local moves on the totals, which only
    move a task into another block, kept two groups merged."""
    lab = np.unique(np.asarray(labels), return_inverse=True)[1]
    w = np.array(weights, dtype=float)
    np.fill_diagonal(w, 0.0)
    for _ in range(passes):
        moved = False
        for i in range(len(lab)):
            sums = np.bincount(lab, weights=w[i], minlength=lab.max() + 2)  # the last block: i alone
            best = int(np.argmax(sums))
            if sums[best] > sums[lab[i]] + 1e-12:
                lab[i] = best
                moved = True
        lab = np.unique(lab, return_inverse=True)[1]
        if not moved:
            break
    return [int(x) for x in lab]


class _BlockCost:
    """Cost of a block (cached): members' normalised losses in it, a non-real member counting 1.

    With `estimated` (an additive scorer of shrunk sampled gains) the cost is the block's estimated
    total normalised loss, with no per-member gate and no cap at 1: the shrinkage has already
    discounted noisy gains, and the gate and the cap made a merge of a noisy member cost nothing."""

    def __init__(self, tasks: tuple[str, ...], score: ScoreFn, only_real: bool, *, estimated: bool = False) -> None:
        self.tasks, self.score, self.only_real, self.estimated = tasks, score, only_real, estimated
        self.cache: dict[tuple[str, ...], float] = {}

    def __call__(self, block: tuple[str, ...]) -> float:
        if len(block) <= 1:
            return float(len(block))
        if block not in self.cache:
            total = 0.0
            for t in block:
                s = self.score(block, t)
                known = s is not None and math.isfinite(s.norm_loss)
                if self.estimated:
                    total += s.norm_loss if known else 1.0
                    continue
                ok = known and (s.real or not self.only_real)
                total += min(1.0, s.norm_loss) if ok else 1.0
            self.cache[block] = total
        return self.cache[block]

    def total(self, blocks: Sequence[tuple[str, ...]]) -> float:
        return sum(self(b) for b in blocks)


def _blocks(tasks: tuple[str, ...], labels: Sequence[int]) -> list[tuple[str, ...]]:
    by: dict[int, list[str]] = {}
    for t, lab in zip(tasks, labels, strict=True):
        by.setdefault(int(lab), []).append(t)
    return sorted((_key(b, tasks) for b in by.values()), key=lambda b: tasks.index(b[0]))


def local_moves(tasks: tuple[str, ...], blocks: list[tuple[str, ...]], cost: _BlockCost) -> list[tuple[str, ...]]:
    """Improve a partition by moving single tasks between blocks and merging blocks while the
    total falls (first improvement, at most LOCAL_PASSES passes); never adds a block."""
    blocks = [b for b in blocks if b]
    for _ in range(LOCAL_PASSES):
        improved = False
        for t in tasks:
            src = next(k for k, b in enumerate(blocks) if t in b)
            if len(blocks[src]) == 1:
                continue
            rest = tuple(x for x in blocks[src] if x != t)
            base = cost(blocks[src])
            for k, b in enumerate(blocks):
                if k == src:
                    continue
                grown = _key((*b, t), tasks)
                if cost(rest) + cost(grown) < base + cost(b) - 1e-9:
                    blocks[src], blocks[k] = rest, grown
                    improved = True
                    break
        for a in range(len(blocks)):
            for b in range(a + 1, len(blocks)):
                merged = _key(blocks[a] + blocks[b], tasks)
                if cost(merged) < cost(blocks[a]) + cost(blocks[b]) - 1e-9:
                    blocks[a], blocks[b] = merged, ()
                    improved = True
            blocks = [x for x in blocks if x]
        if not improved:
            break
    return sorted(blocks, key=lambda b: tasks.index(b[0]))


def scalable_partitions(
    tasks: Sequence[str], score: ScoreFn, *, greedy: Sequence[Sequence[tuple[str, ...]]] = (),
    only_real: bool = True, seed: int = 0, estimated: bool = False,
) -> list[list[tuple[str, ...]]]:
    """Candidate partitions (module docstring): every task alone, all together, the spectral
    partitions, the `greedy` path given, and local-move improvements of the best few, ranked on
    estimated totals with `estimated` (`chooses_on_estimates`)."""
    tasks = tuple(tasks)
    additive = is_additive(score)
    cost = _BlockCost(tasks, score, only_real, estimated=estimated)
    pool: list[list[tuple[str, ...]]] = [[(t,) for t in tasks], [tasks]]
    pool += [[_key(b, tasks) for b in p] for p in greedy]
    if len(tasks) >= 3:
        weights = pair_affinity(tasks, score)
        for labels in spectral_partitions(weights, seed=seed):
            pool.append(_blocks(tasks, labels))
            if additive:
                pool.append(_blocks(tasks, pair_moves(weights, labels)))
    unique: dict[tuple[tuple[str, ...], ...], list[tuple[str, ...]]] = {}
    for p in pool:
        unique.setdefault(tuple(sorted(p)), p)
    ranked = sorted(unique.values(), key=lambda p: (round(cost.total(p), 12), len(p)))
    for p in ranked[:LOCAL_SEARCH_STARTS]:
        better = local_moves(tasks, list(p), cost)
        unique.setdefault(tuple(sorted(better)), better)
    return [p for p in unique.values() if cost.total(p) < math.inf - _EPS]
