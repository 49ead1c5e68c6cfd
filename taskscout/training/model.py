"""One model: build it, rebuild it from a result, predict, evaluate."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from taskscout.data import Head
from taskscout.errors import SpecError
from taskscout.models import MultiTaskMLP
from taskscout.spec import ModelSettings
from taskscout.training.inputs import _head_columns
from taskscout.training.losses import _final_scores
from taskscout.training.plans import ModelPlan, ModelResult

# ---------------------------------------------------------------- helpers for one model


def build_model(plan: ModelPlan, heads: Sequence[Head], *, in_features: int, model: ModelSettings,
                dtype: torch.dtype = torch.float32) -> MultiTaskMLP:
    """The freshly initialised `MultiTaskMLP` of a plan (the same weights the trainers start from)."""
    return MultiTaskMLP(
        in_features=in_features, heads=heads, targets=plan.targets, depth=model.depth, width=model.width,
        branch_layer=plan.branch_layer, seed=plan.seed, dropped_features=plan.dropped_features,
        adversarial_lambda=model.adversarial_lambda, dtype=dtype,
    )


def model_from_result(result: ModelResult, heads: Sequence[Head], *, model: ModelSettings,
                      state: dict | None = None) -> MultiTaskMLP:
    """Rebuild the trained model of `result` (from `state`, default `result.state`, e.g. a dict
    loaded back with `torch.load(..., weights_only=True)`), in eval mode on the CPU."""
    state = result.state if state is None else state
    if state is None:
        raise SpecError("this result carries no weights; train with keep_state=True to rebuild its model")
    dtype = state["input_mask"].dtype
    net = build_model(result.plan, heads, in_features=int(state["input_mask"].shape[0]), model=model, dtype=dtype)
    net.load_state_dict(state)
    return net.eval()


def predict(net: MultiTaskMLP, X: np.ndarray) -> dict[int, np.ndarray]:
    """Predictions per target head index: P(y=1) for binary, class probabilities for multiclass
    and soft, the predicted class for ordinal, the standardised value for regression."""
    dtype = net.input_mask.dtype
    with torch.no_grad():
        outs = net(torch.as_tensor(np.asarray(X), dtype=dtype, device=net.input_mask.device))
    preds = {}
    for t, z in zip(net.targets, outs, strict=True):
        h = net.heads_all[t]
        if h.type == "binary":
            p = torch.sigmoid(z[:, 0])
        elif h.type in ("multiclass", "soft"):
            p = torch.softmax(z, 1)
        elif h.type == "ordinal":
            p = (z > 0).sum(1).to(dtype)
        else:
            p = z[:, 0]
        preds[t] = p.cpu().numpy()
    return preds


def evaluate_model(net: MultiTaskMLP, X: np.ndarray, Y: np.ndarray, heads: Sequence[Head],
                   ) -> tuple[dict[int, float], dict[int, float]]:
    """Mean loss and metric per target of `net` on the rows of (X, Y), as `train_models` reports them."""
    dtype = net.input_mask.dtype
    dev = net.input_mask.device
    with torch.no_grad():
        outs = net(torch.as_tensor(np.asarray(X), dtype=dtype, device=dev))
    return _final_scores(heads, net.targets, outs, torch.as_tensor(np.asarray(Y), dtype=dtype, device=dev),
                         _head_columns(heads))
