"""`gradcos`: cosine similarity of task gradients on the shared trunk parameters.

The "CS" baseline of TAG (Fifty et al., 2021). One joint all-task model is trained per seed
(`_joint.joint_run`) over the early part of training, as for `tag` (default: the first eighth of
the epochs, `_joint.early_epochs`); every `every` optimiser steps each head h gets a probe batch of training
rows labelled for h, its loss gradient g_h with respect to the shared trunk parameters is taken,
and cos(g_i, g_j) is recorded. The affinity of i -> j is the mean cosine over the run (symmetric:
the same value for j -> i), then the mean over seeds with a Student t interval. A cosine ignores
the gradients' sizes, so loss types with different scales compare directly.
"""

from __future__ import annotations

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
class GradCosEstimator(AffinityEstimator):
    """Mean cosine of per-task gradients on the shared trunk over one joint run per seed."""

    name = "gradcos"

    def __init__(self, *, every: int = 2, probe_size: int = 128, epochs: int | None = None) -> None:
        self.every = every
        self.probe_size = probe_size
        self.epochs = epochs

    def estimate(self, problem: AffinityProblem, *, progress: Callable[[int], None] | None = None) -> EstimatorResult:
        import torch

        def cosines(p: Probe) -> np.ndarray:
            flat = [torch.cat([gi.reshape(-1) for gi in g]) for g in p.head_grads()]
            G = torch.stack(flat).double()
            G = G / G.norm(dim=1, keepdim=True).clamp_min(1e-30)
            return (G @ G.T).cpu().numpy()

        return probe_average_estimate(self.name, problem, cosines, every=self.every, probe_size=self.probe_size,
                                      epochs=self.epochs, progress=progress)
