"""One joint all-task training run with a probe hook: the engine of `tag` and `gradcos`.

The model is the trainer's `MultiTaskMLP` with every head as a target and the whole trunk shared
(branch layer = depth), initialised exactly as `train_models` would for that seed. It is trained
with Adam on the sum of the heads' masked mean losses (`training.head_row_loss`; a batch without a
label for a head adds nothing for it), over the training rows in a seeded order.

Every `every` optimiser steps the hook is called with the model and one *probe batch per head*:
`probe_size` training rows drawn at random among the rows labelled for that head. With sparse
labels a shared mini-batch holds few rows labelled for any given head, so measuring a head's loss
(or gradient) on the shared batch would rest on a handful of rows; a probe batch per head does not.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from taskscout.affinity.base import AffinityProblem, Compute, EstimatorResult, affinity_rows
from taskscout.data import TRAIN
from taskscout.device import resolve_device
from taskscout.errors import DataError


@dataclass(frozen=True, eq=False)
class Probe:
    """What the hook gets: the model, the inputs of every head's probe batch and a loss function."""

    model: object  # models.MultiTaskMLP
    x: object  # torch.Tensor (sum of probe sizes, d): every head's probe rows, concatenated
    segments: tuple[tuple[int, int], ...]  # per head: [start, stop) rows of x
    loss: Callable  # loss(outputs, head, local=False) -> masked mean loss of that head on its probe rows
    # (outputs of the model on x, or with local=True on the head's own rows x[start:stop])
    shared: tuple  # the shared (trunk) parameters

    def losses(self) -> object:
        """Every head's loss on its own probe rows (a tensor of one value per head), no gradients."""
        import torch

        with torch.no_grad():
            outs = self.model(self.x)
            return torch.stack([self.loss(outs, h) for h in range(len(self.segments))])

    def head_grads(self) -> list[tuple]:
        """Per head, the gradient of its probe loss with respect to the shared parameters.

        Head h's loss depends only on its own probe rows, so each gradient takes a forward and a
        backward pass over those rows alone (cheaper than one batched backward over all rows)."""
        import torch

        grads = []
        with torch.enable_grad():
            for h, (a, e) in enumerate(self.segments):
                outs = self.model(self.x[a:e])
                g = torch.autograd.grad(self.loss(outs, h, local=True), self.shared, allow_unused=True,
                                        materialize_grads=True)
                grads.append(g)
        return grads


EARLY_FRACTION = 1 / 8


def early_epochs(problem: AffinityProblem, epochs: int | None) -> int:
    """The joint run's length: `epochs` if given, else the first eighth of the training epochs (at least 2).

    Why early: near a stationary point of the summed loss the task gradients cancel by
    construction (their sum is about zero), so late in training every pair looks conflicting and
    the lookahead says more about the optimiser than about the tasks. Measured on
    `builtin:planted` (README): TAG's Spearman with measured gains was +0.63 over the first 5 of 40
    epochs and -0.34 over all 40.
    """
    if epochs is not None:
        return int(epochs)
    return max(2, math.ceil(problem.training.epochs * EARLY_FRACTION))


def joint_run(
    problem: AffinityProblem,
    seed: int,
    *,
    every: int,
    probe_size: int,
    hook: Callable[[Probe], None],
    epochs: int | None = None,
) -> Compute:
    """Train the joint model for `epochs` (default: the training settings') calling `hook` every `every` steps."""
    import torch

    from taskscout.training import ModelPlan, build_model, head_row_loss

    device = resolve_device(problem.device)
    heads = problem.heads
    train = np.flatnonzero(problem.split == TRAIN)
    labelled = [np.intersect1d(train, np.flatnonzero(problem.labelled(h))) for h in range(len(heads))]
    empty = [heads[h].name for h, rows in enumerate(labelled) if len(rows) == 0]
    if empty:
        raise DataError(f"heads {empty} have no labelled training rows; an affinity estimate needs labels for every head")
    depth = problem.model.depth
    plan = ModelPlan(targets=tuple(range(len(heads))), main=problem.main, seed=int(seed), branch_layer=depth)
    net = build_model(plan, heads, in_features=problem.X.shape[1], model=problem.model).to(device)
    shared = tuple(net.trunk.parameters())
    opt = torch.optim.Adam(net.parameters(), lr=problem.training.lr, weight_decay=problem.training.weight_decay)
    X = torch.as_tensor(problem.X, dtype=torch.float32, device=device)
    Y = torch.as_tensor(problem.Y, dtype=torch.float32, device=device)
    cols = [problem.columns(h) for h in range(len(heads))]
    rng = np.random.default_rng([int(seed), 7919])
    gen = torch.Generator().manual_seed(int(seed))
    batch = problem.training.batch_size
    n_epochs = epochs or problem.training.epochs
    start = time.perf_counter()
    step = 0

    def batch_loss(outs: list, rows: torch.Tensor) -> torch.Tensor:
        total = torch.zeros((), device=device)
        for h, z in enumerate(outs):
            row, lab = head_row_loss(heads[h], z, Y[rows][:, cols[h]])
            total = total + row.sum() / lab.sum().clamp_min(1)
        return total

    for _ in range(n_epochs):
        order = torch.as_tensor(train)[torch.randperm(len(train), generator=gen)].to(device)
        for b in range(0, len(order), batch):
            rows = order[b:b + batch]
            net.train()
            loss = batch_loss(net(X[rows]), rows)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % every == 0:
                picks = [rng.choice(r, size=min(probe_size, len(r)), replace=False) for r in labelled]
                bounds = np.cumsum([0, *[len(p) for p in picks]])
                segments = tuple((int(bounds[h]), int(bounds[h + 1])) for h in range(len(heads)))
                probe_rows = torch.as_tensor(np.concatenate(picks), device=device)
                y_probe = Y[probe_rows]

                def probe_loss(outs: list, h: int, local: bool = False, _y=y_probe, _seg=segments) -> torch.Tensor:
                    a, e = _seg[h]
                    z = outs[h] if local else outs[h][a:e]  # local: outputs of head h's rows only
                    row, lab = head_row_loss(heads[h], z, _y[a:e][:, cols[h]].to(z.dtype))
                    return row.sum() / lab.sum().clamp_min(1)

                net.eval()
                hook(Probe(model=net, x=X[probe_rows], segments=segments, loss=probe_loss, shared=shared))
    return Compute(models=1, epochs=n_epochs, seconds=time.perf_counter() - start)


def probe_average_estimate(
    name: str,
    problem: AffinityProblem,
    score: Callable[[Probe], np.ndarray],
    *,
    every: int,
    probe_size: int,
    epochs: int | None,
    per_seed: Callable[[np.ndarray], np.ndarray] = lambda z: z,
    progress: Callable[[int], None] | None = None,
) -> EstimatorResult:
    """The common frame of the joint-run estimators: per seed, one early joint run whose probes each
    give an (n, n) source x target `score`; their mean (after `per_seed`) is that seed's matrix,
    and the seeds' values of every ordered pair become `name`'s affinity rows with an interval.

    On CPU the seeds' runs go on parallel workers (`parallel.map_stacks`) with one intra-op thread
    each, as the trainer's parallel stacks do (each run's result is unchanged: it depends on its
    seed only); the compute recorded is the wall time of them all."""
    from taskscout.parallel import Report, map_stacks
    from taskscout.training import preload_optimiser, resolve_parallel_stacks

    def run(chunk: list[int], report: Report) -> tuple[np.ndarray, Compute]:
        total = np.zeros((len(problem.heads), len(problem.heads)))
        steps = [0]

        def hook(p: Probe) -> None:
            nonlocal total
            total += score(p)
            steps[0] += 1

        compute = joint_run(problem, problem.seeds[chunk[0]], every=every, probe_size=probe_size, hook=hook,
                            epochs=early_epochs(problem, epochs))
        if report is not None:
            report(1)
        return per_seed(total / max(1, steps[0])), compute

    # A joint run builds a torch.optim optimiser. The first one in a process imports some 800
    # modules (about 1 s): done before the clock starts, that one-time cost of torch's is not
    # counted as this estimator's, and forked workers inherit the modules.
    preload_optimiser()
    start = time.perf_counter()
    seeds = [[i] for i in range(len(problem.seeds))]
    workers = resolve_parallel_stacks(None, resolve_device(problem.device), None)
    runs = map_stacks(run, seeds, min(workers, len(seeds)), progress=progress)
    matrices = [m for m, _ in runs]
    compute = Compute(models=sum(c.models for _, c in runs), epochs=sum(c.epochs for _, c in runs),
                      seconds=time.perf_counter() - start)
    names = problem.names
    values = {(names[s], names[t]): [z[s, t] for z in matrices] for s, t in problem.ordered_pairs()}
    return EstimatorResult(name, affinity_rows(name, values), compute)
