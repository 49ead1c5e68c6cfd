"""What to train (`ModelPlan`) and what came out (`ModelResult`)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class ModelPlan:
    """One model to train."""

    targets: tuple[int, ...]  # indices into `heads` that this model trains
    main: tuple[int, ...]  # subset of targets: their summed val loss selects the best epoch
    seed: int
    branch_layer: int  # 0..depth: layers 1..b shared by all targets, b+1..L per target
    dropped_features: tuple[int, ...] = ()  # input features zeroed for this model
    loss_weights: tuple[float, ...] | None = None  # per target (same order), default 1.0
    key: str = ""  # caller's identifier, returned unchanged

    def weights(self) -> tuple[float, ...]:
        return tuple(self.loss_weights) if self.loss_weights is not None else (1.0,) * len(self.targets)


@dataclass(frozen=True, eq=False)
class ModelResult:
    """What one trained model achieved, at its best epoch."""

    plan: ModelPlan
    best_epoch: int  # 1-based epoch with the lowest main val loss
    epochs_run: int
    loss: dict[str, dict[int, float]]  # split -> head index -> mean loss at best epoch
    metric: dict[str, dict[int, float]]  # split -> head index -> AUC / accuracy / RMSE (original units)
    # this model's share of the wall time of its `train_models` call: its stack's time split by
    # epochs run, scaled so the shares of all models add up to the call's wall time (stacks that
    # train at once share it)
    seconds: float
    curves: pd.DataFrame  # columns task, epoch, split ("train"/"val"), loss
    state: dict | None  # best-epoch `MultiTaskMLP` state dict (keep_state=True), CPU tensors
    pruned: bool = False
