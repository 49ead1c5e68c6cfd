"""`tag`: TAG lookahead affinity (Fifty et al., NeurIPS 2021), made robust to sparse labels.

One joint all-task model is trained per seed (`_joint.joint_run`) for the early part of training
only (default: the first eighth of the epochs, `_joint.early_epochs`: later, near a stationary
point of the summed loss, the task gradients cancel and every pair looks conflicting). Every
`every` optimiser steps, for every source head i and target head j:

1. each head h gets a probe batch B_h of `probe_size` training rows labelled for h (not the shared
   mini-batch: with sparse labels its rows labelled for both i and j barely overlap and the
   signal vanishes);
2. g_i = gradient of L_i(B_i) with respect to the shared trunk parameters theta;
3. a virtual step theta' = theta - eta * g_i / ||g_i||, of fixed length eta (default
   lr * sqrt(number of shared parameters), about the length of one Adam step). Dividing by the
   norm puts sources with different loss types and scales on one footing (cross-entropy and
   squared-error gradients differ in size, not in what direction helps);
4. Z(i -> j) = 1 - L_j(theta'; B_j) / L_j(theta; B_j): the relative change of j's loss on its own
   probe batch, which is comparable across loss types because it is a ratio.

With `normalise="self"` each Z(i -> j) is further divided by the mean over steps of |Z(j -> j)|,
j's own lookahead: how much i's step helps j compared with j's own step, which takes out how easy
j's loss is to move at all.

Z is averaged over the lookahead steps of a run; the row for (i -> j) is the mean over seeds with
a Student t interval. The lookahead step has the length of an optimiser step, so the relative
loss changes it causes (around 1e-3) are well above float32 rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from taskscout.affinity._joint import Probe, probe_average_estimate
from taskscout.affinity.base import (
    AffinityEstimator,
    AffinityProblem,
    EstimatorResult,
    register_estimator,
)


@register_estimator
class TagEstimator(AffinityEstimator):
    """TAG lookahead from one joint run per seed (see the module docstring for the exact rule)."""

    name = "tag"

    def __init__(self, *, every: int = 2, probe_size: int = 128, step: float | None = None,
                 epochs: int | None = None, normalise: str = "relative") -> None:
        self.every = every
        self.probe_size = probe_size
        self.step = step
        self.epochs = epochs
        self.normalise = normalise

    def estimate(self, problem: AffinityProblem, *, progress: Callable[[int], None] | None = None) -> EstimatorResult:
        if self.normalise not in ("relative", "self"):
            raise ValueError(f"normalise must be 'relative' or 'self'; got {self.normalise!r}")
        import torch

        n = len(problem.heads)

        def lookahead(p: Probe) -> np.ndarray:
            z = np.zeros((n, n))
            net = p.model
            per_head = p.head_grads()
            grads = [torch.stack([g[k] for g in per_head]) for k in range(len(p.shared))]
            before = p.losses()
            norm = torch.sqrt(sum(g.reshape(n, -1).square().sum(1) for g in grads))
            size = self.step if self.step is not None else (
                problem.training.lr * math.sqrt(sum(w.numel() for w in p.shared)))
            saved = [w.detach().clone() for w in p.shared]
            try:
                with torch.no_grad():
                    for i in range(n):
                        if not torch.isfinite(norm[i]) or norm[i] == 0:
                            continue
                        for w, w0, g in zip(p.shared, saved, grads, strict=True):
                            torch.add(w0, g[i], alpha=-size / float(norm[i]), out=w)
                        outs = net(p.x)
                        after = torch.stack([p.loss(outs, h) for h in range(n)])
                        z[i] = (1.0 - after / before).double().cpu().numpy()
            finally:
                with torch.no_grad():
                    for w, w0 in zip(p.shared, saved, strict=True):
                        w.copy_(w0)
            return z

        def normalised(z: np.ndarray) -> np.ndarray:
            if self.normalise == "self":
                own = np.abs(np.diag(z))
                z = z / np.where(own > 0, own, np.nan)[None, :]
            return z

        return probe_average_estimate(self.name, problem, lookahead, every=self.every, probe_size=self.probe_size,
                                      epochs=self.epochs, per_seed=normalised, progress=progress)
