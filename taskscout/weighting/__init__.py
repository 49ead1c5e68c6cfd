"""Loss weighting: how a model's per-target losses combine into the one loss it minimises.

One registry, filled where each weighting is defined (one file each). A weighting works on the
stacked losses of K models at once and must keep models independent: model k's combined loss
depends only on row k of the inputs and of its own parameters.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

from taskscout.errors import SpecError, close_matches

if TYPE_CHECKING:  # torch is imported where a weighting computes, so checking a name stays light
    import torch

WEIGHTINGS: dict[str, type[LossWeighting]] = {}


class LossWeighting(ABC):
    """Base class of loss weightings.

    `losses` and `weights` have shape (K, S): the masked mean loss of each model's target slots
    and the caller's fixed per-target weights (0 for padding slots, which must receive no
    gradient). A weighting may learn parameters of its own (`init_params`); each has the model
    axis first so the trainer can optimise and slice them with the model weights.
    """

    name: ClassVar[str]

    def init_params(self, n_models: int, n_slots: int, *, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
        """Learnable tensors of shape (K, ...), already initialised; none by default."""
        return []

    @abstractmethod
    def combine(self, losses: torch.Tensor, weights: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
        """The loss each model minimises, shape (K,)."""

    def gradients(self, losses: torch.Tensor, weights: torch.Tensor, params: list[torch.Tensor]
                  ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The gradient of `combine(...).sum()` with respect to `losses` (K, S) and to each of
        `params`, as the trainer needs it once per step. By autograd over these few (K, S)
        tensors; a weighting with a closed form may give it instead (tested equal)."""
        import torch

        with torch.enable_grad():
            leaf = losses.detach().requires_grad_(True)
            live = [p.detach().requires_grad_(True) for p in params]
            d_losses, *d_params = torch.autograd.grad(self.combine(leaf, weights, live).sum(), [leaf, *live])
        return d_losses, d_params


def register(cls: type[LossWeighting]) -> type[LossWeighting]:
    """Class decorator: add a weighting to the registry under its `name`."""
    WEIGHTINGS[cls.name] = cls
    return cls


def get_weighting(name: str) -> LossWeighting:
    """A new instance of the weighting called `name`."""
    if name not in WEIGHTINGS:
        known = sorted(WEIGHTINGS)
        raise SpecError(
            f"unknown loss weighting {name!r}{close_matches(name, known)}; choose one of {known} (training.weighting)"
        )
    return WEIGHTINGS[name]()


from taskscout.weighting import equal, uncertainty  # noqa: E402,F401  (fill the registry)

__all__ = ["WEIGHTINGS", "LossWeighting", "get_weighting", "register"]
