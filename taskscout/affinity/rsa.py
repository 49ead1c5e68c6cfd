"""`rsa`: representation similarity of single-task networks, per trunk layer (Vandenhende et al., 2020).

Per head and seed a single-task model is trained (the whole trunk, as in the search's single-task
phase). On a fixed probe set (`probe_size` validation rows drawn with a fixed seed; all of them if
fewer) each trunk layer l = 1..L of each model gives a representation R (probe rows x width). Its
representation dissimilarity matrix is RDM[a, b] = 1 - Pearson correlation of rows a and b (a row
whose units are all inactive counts as uncorrelated with every other row: dissimilarity 1). The
similarity of two models at layer l is the Spearman rank correlation of the upper triangles of
their RDMs.

The similarity of tasks i and j at layer l is the mean over seed pairs: with two or more seeds,
over pairs of *different* seeds (same-seed models share their initial trunk weights, which would
make every pair look alike); with one seed, over the same seed. The within-task similarity (i with
itself across seeds, pair "i|i") is the ceiling a pair can reach and is written when there are two
or more seeds.

Outputs: the per-layer table ("rsa_layers": pair "a|b" (study order), layer, similarity, n), which
`grouping.choose_branch_layer` falls back on when the depth phase measured nothing, and affinity rows whose gain is the similarity at one layer
(`layer=l`, default 1: the layer every branching shares) or averaged over layers (`layer="mean"`).
Layer 1 agreed better with measured gains than the mean over layers in every run we measured
(planted and yeast, README). The affinity is symmetric.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from taskscout import rundir
from taskscout.affinity.base import (
    AffinityEstimator,
    AffinityProblem,
    Compute,
    EstimatorResult,
    affinity_rows,
    register_estimator,
)
from taskscout.data import TRAIN, VAL

LAYER_COLUMNS = rundir.RSA_LAYER_COLUMNS


def rdm(representation: np.ndarray) -> np.ndarray:
    """1 - Pearson correlation between the rows of a (rows x units) representation."""
    r = np.asarray(representation, dtype=float)
    r = r - r.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(r, axis=1)
    live = norm > 1e-12
    unit = np.where(live[:, None], r / np.where(live, norm, 1.0)[:, None], 0.0)
    d = 1.0 - unit @ unit.T
    d[~live, :] = 1.0
    d[:, ~live] = 1.0
    np.fill_diagonal(d, 0.0)
    return d


def _upper_ranks(d: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    iu = np.triu_indices(d.shape[0], k=1)
    return rankdata(d[iu])


def rdm_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of the upper triangles of two RDMs (NaN if either is constant)."""
    return _rank_correlation(_upper_ranks(a), _upper_ranks(b))


def _rank_correlation(ra: np.ndarray, rb: np.ndarray) -> float:
    if np.ptp(ra) == 0 or np.ptp(rb) == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def layer_similarities(
    representations: Mapping[str, Mapping[int, Sequence[np.ndarray]]],
    *,
    order: Sequence[str],
) -> pd.DataFrame:
    """The per-layer table from representations[task][seed] = [layer 1 rows x units, layer 2 ...].

    Rows: pair "a|b" (a before b in `order`; "a|a" for the within-task ceiling when there are two
    or more seeds), layer (1-based), similarity (mean over seed pairs, see the module docstring),
    n (seed pairs averaged).
    """
    ranks = {
        (t, s): [_upper_ranks(rdm(r)) for r in layers]
        for t, per_seed in representations.items() for s, layers in per_seed.items()
    }

    tasks = [t for t in order if t in representations]
    rows = []
    for a_i, a in enumerate(tasks):
        for b in tasks[a_i:]:
            seeds_a, seeds_b = sorted(representations[a]), sorted(representations[b])
            cross = [(s, u) for s in seeds_a for u in seeds_b if s != u]
            if a == b and not cross:
                continue
            combos = cross if cross else [(s, s) for s in seeds_a if s in seeds_b]
            n_layers = min(len(ranks[(a, s)]) for s in seeds_a)
            for layer in range(n_layers):
                vals = [_rank_correlation(ranks[(a, s)][layer], ranks[(b, u)][layer]) for s, u in combos]
                vals = [v for v in vals if np.isfinite(v)]
                rows.append((rundir.group_key([a, b], order) if a != b else f"{a}{rundir.GROUP_SEP}{a}",
                             layer + 1, float(np.mean(vals)) if vals else math.nan, len(vals)))
    return pd.DataFrame(rows, columns=list(LAYER_COLUMNS))


def probe_rows(split: np.ndarray, size: int, *, seed: int = 0) -> np.ndarray:
    """The fixed probe set: `size` validation rows (training rows if there are none), sorted."""
    rows = np.flatnonzero(split == VAL)
    if len(rows) == 0:
        rows = np.flatnonzero(split == TRAIN)
    if len(rows) > size:
        rows = np.random.default_rng(seed).choice(rows, size=size, replace=False)
    return np.sort(rows)


@register_estimator
class RsaEstimator(AffinityEstimator):
    """Per-layer RDM similarity of single-task models (see the module docstring)."""

    name = "rsa"

    def __init__(self, *, probe_size: int = 256, layer: int | str = 1, n_seeds: int | None = None,
                 stack_size: int = 64) -> None:
        self.probe_size = probe_size
        self.layer = layer
        self.n_seeds = n_seeds
        self.stack_size = stack_size

    def estimate(self, problem: AffinityProblem, *, progress: Callable[[int], None] | None = None) -> EstimatorResult:
        from taskscout.training import ModelPlan, train_models

        seeds = problem.seeds[: self.n_seeds] if self.n_seeds else problem.seeds
        depth = problem.model.depth
        plans = [ModelPlan(targets=(h,), main=(h,), seed=s, branch_layer=depth, key=f"rsa:{problem.heads[h].name}:{s}")
                 for h in range(len(problem.heads)) for s in seeds]
        start = time.perf_counter()
        results = train_models(problem.X, problem.Y, problem.heads, problem.split, plans, model=problem.model,
                               training=problem.training, device=problem.device, keep_state=True,
                               progress=progress, stack_size=self.stack_size)
        reps = representations_of(results, problem, size=self.probe_size)
        compute = Compute(len(results), sum(r.epochs_run for r in results), time.perf_counter() - start)
        return self.from_representations(reps, problem, compute=compute)

    def from_representations(self, reps: Mapping[str, Mapping[int, Sequence[np.ndarray]]], problem: AffinityProblem,
                             *, compute: Compute) -> EstimatorResult:
        """The result from already computed representations (e.g. of the search's single-task models)."""
        names = problem.names
        layers = layer_similarities(reps, order=names)
        if self.layer == "mean":
            score = layers.groupby("pair")["similarity"].mean()
        else:
            score = layers[layers["layer"] == int(self.layer)].set_index("pair")["similarity"]
        values = {}
        for s, t in problem.ordered_pairs():
            v = score.get(rundir.group_key([names[s], names[t]], names), math.nan)
            values[(names[s], names[t])] = [float(v)]
        rows = affinity_rows(self.name, values)
        n = len(next(iter(reps.values()))) if reps else 0
        rows["n_seeds"] = n
        return EstimatorResult(self.name, rows, compute, tables={"rsa_layers": layers})


def representations_of(results: Sequence, problem: AffinityProblem, *, size: int = 256) -> dict[str, dict[int, list[np.ndarray]]]:
    """Trunk-layer representations of the probe set for single-task results trained with keep_state."""
    import torch

    from taskscout.training import model_from_result

    rows = probe_rows(problem.split, size)
    out: dict[str, dict[int, list[np.ndarray]]] = {}
    for r in results:
        net = model_from_result(r, problem.heads, model=problem.model)
        with torch.no_grad():
            x = torch.as_tensor(problem.X[rows], dtype=net.input_mask.dtype)
            layers = [h.numpy().astype(float) for h in net.shared(x)]
        head = problem.heads[r.plan.targets[0]].name
        out.setdefault(head, {})[int(r.plan.seed)] = layers
    return out
