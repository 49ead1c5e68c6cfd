"""Equal weighting: a model's loss is the weighted sum of its targets' losses."""

from __future__ import annotations

from typing import TYPE_CHECKING

from taskscout.weighting import LossWeighting, register

if TYPE_CHECKING:
    import torch


@register
class EqualWeighting(LossWeighting):
    """sum_t w_t L_t, with the caller's fixed weights w_t (1 unless a plan says otherwise)."""

    name = "equal"

    def combine(self, losses: torch.Tensor, weights: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
        return (losses * weights).sum(-1)

    def gradients(self, losses: torch.Tensor, weights: torch.Tensor, params: list[torch.Tensor]
                  ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return weights.expand_as(losses), []
