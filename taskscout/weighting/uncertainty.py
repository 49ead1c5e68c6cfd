"""Uncertainty weighting (Kendall, Gal and Cipolla, CVPR 2018).

Each target t learns a log-variance s_t; the model minimises sum_t exp(-s_t) w_t L_t + s_t, so a
target whose loss stays high is down-weighted while the + s_t term stops the weights vanishing.
s_t starts at 0 (every target at weight w_t).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from taskscout.weighting import LossWeighting, register

if TYPE_CHECKING:
    import torch


@register
class UncertaintyWeighting(LossWeighting):
    """sum_t exp(-s_t) w_t L_t + s_t with a learned s_t per model and target slot."""

    name = "uncertainty"

    def init_params(self, n_models: int, n_slots: int, *, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
        import torch

        return [torch.zeros(n_models, n_slots, dtype=dtype, device=device)]

    def combine(self, losses: torch.Tensor, weights: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
        import torch

        (s,) = params
        used = (weights != 0).to(losses.dtype)
        # Padding slots (weight 0) must get no gradient: their s term is masked too.
        return (torch.exp(-s) * weights * losses + s * used).sum(-1)
