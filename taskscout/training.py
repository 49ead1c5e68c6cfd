"""Training many small multi-task models at once.

`train_models` groups the plans by branch layer, cuts each group into stacks of at most
`stack_size` models and trains every stack as one computation (`models.StackedMLP`): batched
matrix products over a leading model axis, one Adam over the stacked tensors (Adam is
elementwise, so models stay independent), and the gradient of the loss summed over models, so
that each model's gradient is its own, computed by hand (`StackedMLP.backward`) with no autograd
graph. On CPU several stacks train at once in forked worker processes (`parallel.map_stacks`). Per model: its own seed (initial weights), its own data order (a function of
seed and epoch only), its own target subset, loss weights and dropped inputs, its own early
stopping. A model's result therefore does not depend on which models share its stack. Models
with the same seed see the same batches, so a stack gathers their rows once and runs their first
layer on one input matrix (`models.grouped_bmm`).

`train_sequential` trains the same plans one by one as plain `nn.Module`s with the same
initialisation, data order, losses and stopping rule: the reference the stacked trainer is tested
against, and the baseline of `taskscout bench`.

Losses per target (rows without a label contribute nothing; a batch without any label for a
target contributes 0): binary BCE with logits; multiclass cross-entropy; ordinal the mean over
k < C-1 of BCE between cumulative logit k and 1[y > k]; regression squared error (targets are
standardised); soft cross-entropy against the given class probabilities. Metrics: AUC for binary
(rank statistic, NaN when a split has one class), accuracy for multiclass, soft (against the most
probable class) and ordinal (prediction = number of cumulative logits > 0), RMSE in original units
for regression.
"""

from __future__ import annotations

import copy
import ctypes
import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.stats import rankdata

from taskscout.data import SPLIT_NAMES, TRAIN, VAL
from taskscout.device import resolve_device
from taskscout.errors import DataError, SpecError
from taskscout.models import (
    Head,
    MultiTaskMLP,
    SlotLayout,
    StackedMLP,
    check_architecture,
    group_sizes,
    slot_layout,
)
from taskscout.parallel import Report, map_stacks
from taskscout.spec import ModelSettings, TrainingSettings
from taskscout.weighting import LossWeighting, get_weighting

__all__ = [
    "Head", "ModelPlan", "ModelResult", "build_model", "evaluate_model", "head_metric", "head_row_loss",
    "model_from_result", "predict", "train_models", "train_sequential",
]

_NEG = -1e30  # added to padding logits of a softmax: exp() of it is exactly 0
_EVAL_ELEMENTS = 2**23  # activation elements per chunk of an evaluation pass (bounds its memory)


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


# ---------------------------------------------------------------- checks and data


def _check_inputs(X: np.ndarray, Y: np.ndarray, heads: Sequence[Head], split: np.ndarray,
                  plans: Sequence[ModelPlan], model: ModelSettings, eval_splits: Sequence[str]) -> None:
    if X.ndim != 2:
        raise DataError(f"X must be a 2-D array (rows, features). Got shape {X.shape} instead.")
    n, d = X.shape
    if not np.isfinite(X).all():
        raise DataError("X holds NaN or infinite values; impute inputs before training (build_dataset does)")
    width = sum(h.width for h in heads)
    if Y.ndim != 2 or Y.shape != (n, width):
        raise DataError(
            f"Y must have shape ({n}, {width}): one row per row of X and one column per head "
            f"(n_classes columns for 'soft' heads). Got shape {Y.shape} instead."
        )
    if split.shape != (n,):
        raise DataError(f"split must have shape ({n},), one code per row. Got shape {split.shape} instead.")
    if not np.isin(split, (0, 1, 2)).all():
        raise DataError("split codes must be 0 (train), 1 (val) or 2 (test)")
    if not (split == TRAIN).any():
        raise DataError("no training rows (split code 0); cannot train")
    if not (split == VAL).any():
        raise DataError("no validation rows (split code 1); early stopping needs them")
    bad = [s for s in eval_splits if s not in SPLIT_NAMES]
    if bad:
        raise SpecError(f"eval_splits must name splits among {list(SPLIT_NAMES)}. Got {bad[0]!r} instead.")
    col = 0
    for h in heads:
        y = Y[:, col:col + h.width]
        col += h.width
        lab = np.isfinite(y).all(1)
        v = y[lab]
        if h.type in ("binary", "multiclass", "ordinal"):
            C = 2 if h.type == "binary" else h.n_classes
            if len(v) and (np.any(v != np.round(v)) or v.min() < 0 or v.max() > C - 1):
                raise DataError(
                    f"head {h.name!r} ({h.type}) needs class codes 0..{C - 1} in Y; got values from {v.min():g} to {v.max():g}"
                )
        if h.type == "soft" and len(v) and (v.min() < 0 or np.abs(v.sum(1) - 1).max() > 1e-4):
            raise DataError(f"head {h.name!r} (soft) needs rows of class probabilities that sum to 1")
    for p in plans:
        check_architecture(in_features=d, heads=heads, targets=p.targets, depth=model.depth,
                           branch_layer=p.branch_layer, dropped_features=p.dropped_features)
        if not p.main or not set(p.main) <= set(p.targets):
            raise SpecError(f"plan {p.key or p.targets}: main {p.main} must be a non-empty subset of its targets {p.targets}")
        if p.loss_weights is not None and len(p.loss_weights) != len(p.targets):
            raise SpecError(
                f"plan {p.key or p.targets}: loss_weights has {len(p.loss_weights)} entries for {len(p.targets)} targets"
            )


def _head_columns(heads: Sequence[Head]) -> list[int]:
    starts, col = [], 0
    for h in heads:
        starts.append(col)
        col += h.width
    return starts


def _label_matrix(Y: np.ndarray, heads: Sequence[Head]) -> tuple[np.ndarray, list[int]]:
    """Labels laid out for the stacked losses: per head its `outputs` target columns, then a 0/1
    labelled column; a final all-zero column serves padding. Unlabelled entries are 0."""
    blocks, offsets, col = [], [], 0
    for h, start in zip(heads, _head_columns(heads), strict=True):
        y = Y[:, start:start + h.width]
        lab = np.isfinite(y).all(1)
        y0 = np.where(lab[:, None], y, 0.0)
        if h.type in ("binary", "ordinal"):
            t = (y0[:, :1] > np.arange(h.outputs)[None, :]).astype(float)
        elif h.type == "multiclass":
            t = np.eye(h.n_classes)[y0[:, 0].astype(int)]
        else:  # soft, regression: as given
            t = y0
        t = t * lab[:, None]
        offsets.append(col)
        blocks.append(np.concatenate([t, lab[:, None].astype(float)], axis=1))
        col += h.outputs + 1
    blocks.append(np.zeros((len(Y), 1)))
    return np.concatenate(blocks, axis=1), offsets


# ---------------------------------------------------------------- per-head reference losses


def head_row_loss(head: Head, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row loss of one head (rows without a label give 0) and the labelled mask.

    z: (n, head.outputs) outputs; y: (n, head.width) coded targets with NaN = unlabelled.
    """
    lab = torch.isfinite(y).all(1)
    y0 = torch.where(lab[:, None], y, torch.zeros_like(y))
    if head.type == "binary":
        loss = F.binary_cross_entropy_with_logits(z[:, 0], y0[:, 0], reduction="none")
    elif head.type == "ordinal":
        t = (y0[:, :1] > torch.arange(head.outputs, device=z.device)[None, :]).to(z.dtype)
        loss = F.binary_cross_entropy_with_logits(z, t, reduction="none").mean(1)
    elif head.type == "multiclass":
        loss = F.cross_entropy(z, y0[:, 0].long(), reduction="none")
    elif head.type == "soft":
        loss = -(y0 * torch.log_softmax(z, 1)).sum(1)
    else:
        loss = (z[:, 0] - y0[:, 0]).square()
    return loss * lab.to(z.dtype), lab


def head_metric(head: Head, z: np.ndarray, y: np.ndarray) -> float:
    """AUC (binary), accuracy (multiclass, soft, ordinal) or RMSE in original units (regression),
    over the labelled rows; NaN when there are none (or, for AUC, only one class)."""
    lab = np.isfinite(y).all(1)
    z, y = z[lab], y[lab]
    if len(y) == 0:
        return float("nan")
    if head.type == "binary":
        pos = y[:, 0] > 0.5
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        if n_pos == 0 or n_neg == 0:
            return float("nan")
        ranks = rankdata(z[:, 0])  # midranks: ties count one half
        return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    if head.type == "multiclass":
        return float(np.mean(z.argmax(1) == y[:, 0]))
    if head.type == "soft":
        return float(np.mean(z.argmax(1) == y.argmax(1)))
    if head.type == "ordinal":
        return float(np.mean((z > 0).sum(1) == y[:, 0]))
    return float(math.sqrt(np.mean((z[:, 0] - y[:, 0]) ** 2)) * head.scale)


def _final_scores(heads: Sequence[Head], targets: Sequence[int], outs: Sequence[torch.Tensor], Y: torch.Tensor,
                  columns: list[int]) -> tuple[dict[int, float], dict[int, float]]:
    """Loss (NaN without labels) and metric per target, from full-split outputs."""
    loss, metric = {}, {}
    for t, z in zip(targets, outs, strict=True):
        h = heads[t]
        y = Y[:, columns[t]:columns[t] + h.width]
        row, lab = head_row_loss(h, z, y)
        n = int(lab.sum())
        loss[t] = float(row.sum() / n) if n else float("nan")
        metric[t] = head_metric(h, z.detach().cpu().double().numpy(), y.cpu().double().numpy())
    return loss, metric


def _curves(heads: Sequence[Head], targets: Sequence[int], train: np.ndarray, val: np.ndarray) -> pd.DataFrame:
    """Tidy curves from (epochs, n_targets) arrays of train and val loss: train rows first, each
    split task by task, epochs ascending."""
    E, T = train.shape[0], len(targets)
    names = np.array([heads[t].name for t in targets], dtype=object)
    return pd.DataFrame({
        "task": np.tile(np.repeat(names, E), 2),
        "epoch": np.tile(np.arange(1, E + 1, dtype=np.int64), 2 * T),
        "split": np.repeat(np.array(["train", "val"], dtype=object), E * T),
        "loss": np.concatenate([train.T.reshape(-1), val.T.reshape(-1)]).astype(float),
    })


def _data_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The permutation of the training rows a model with this seed sees in this epoch."""
    gen = torch.Generator().manual_seed((int(seed) * 100003 + epoch) % (2**62))
    return torch.randperm(n, generator=gen)


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


# ---------------------------------------------------------------- the stacked trainer


def train_models(
    X: np.ndarray,
    Y: np.ndarray,
    heads: Sequence[Head],
    split: np.ndarray,
    plans: Sequence[ModelPlan],
    *,
    model: ModelSettings,
    training: TrainingSettings,
    device: str = "auto",
    dtype: torch.dtype = torch.float32,
    eval_splits: Sequence[str] = ("val",),
    keep_state: bool = False,
    progress: Callable[[int], None] | None = None,
    on_epoch: Callable[[int, np.ndarray], np.ndarray] | None = None,
    stack_size: int = 64,
    parallel_stacks: int | None = None,
) -> list[ModelResult]:
    """Train every plan; results come back in plan order.

    Plans are grouped by branch layer and trained `stack_size` at a time as one stacked
    computation. On CPU, `parallel_stacks` stacks (default: torch's thread count; 1 when
    `on_epoch` is given, whose decisions see a whole stack) train at once, each in its own worker
    process on Linux (`parallel.map_stacks`: threads would wait on each other for the GIL) with
    one intra-op thread: a stack's elementwise steps then never wait on an OpenMP team, which on a
    virtual machine costs more than the arithmetic. On CUDA one stack runs at a time.
    `on_epoch(epoch, main_val_loss)` is called after each epoch of a stack with an
    array over all plans (NaN for plans not in the running stack or already stopped) and may
    return a bool array over all plans of models to stop (pruning). `progress(n)` is called with
    the number of models that finished since the last call. No model's result depends on which
    models share its stack or on how many stacks run at once.
    """
    called = time.perf_counter()
    X, Y, split = np.asarray(X), np.asarray(Y, dtype=float), np.asarray(split)
    _check_inputs(X, Y, heads, split, plans, model, eval_splits)
    if not isinstance(stack_size, int) or stack_size < 1:
        raise SpecError(f"stack_size must be an int >= 1. Got {stack_size!r} instead.")
    if parallel_stacks is not None and (not isinstance(parallel_stacks, int) or parallel_stacks < 1):
        raise SpecError(f"parallel_stacks must be an int >= 1 or None (automatic). Got {parallel_stacks!r} instead.")
    weighting = get_weighting(training.weighting)
    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    workers = resolve_parallel_stacks(parallel_stacks, dev, on_epoch)
    _retain_freed_memory()
    data = _DeviceData(X, Y, heads, split, dtype=dtype, device=dev)
    chunks: list[list[int]] = []
    by_branch: dict[int, list[int]] = {}
    for i, p in enumerate(plans):
        by_branch.setdefault(p.branch_layer, []).append(i)
    for b in sorted(by_branch):
        # Models with similar target sets share a stack so few padding slots are computed, and
        # within a stack models with one seed sit together (they share batches, see
        # `_train_stack`); which models share a stack does not change any model's result.
        idx = sorted(by_branch[b], key=lambda i: (len(plans[i].targets), sorted(heads[t].family for t in plans[i].targets),
                                                  plans[i].seed))
        size = min(stack_size, -(-len(idx) // workers))  # enough stacks to keep every worker busy
        chunks += [sorted(idx[start:start + size], key=lambda i: plans[i].seed) for start in range(0, len(idx), size)]
    cancel = threading.Event()
    if workers > 1 and not _fused_ok([data.X]):
        preload_optimiser()  # the stacks will build torch.optim.Adam

    def train_chunk(chunk: list[int], report: Report) -> list[ModelResult]:
        return _train_stack(
            data, heads, [plans[i] for i in chunk], chunk, len(plans), model=model, training=training,
            weighting=weighting, eval_splits=eval_splits, keep_state=keep_state,
            progress=report, on_epoch=on_epoch, cancel=cancel,
        )

    results: list[ModelResult | None] = [None] * len(plans)
    stacks = map_stacks(train_chunk, chunks, min(workers, len(chunks)), progress=progress, cancel=cancel)
    for chunk, stack_results in zip(chunks, stacks, strict=True):
        for i, r in zip(chunk, stack_results, strict=True):
            results[i] = r
    done = [r for r in results if r is not None]
    # Parallel stacks overlap in time: scale the per-stack times to the call's wall time.
    wall, stacked = time.perf_counter() - called, sum(r.seconds for r in done)
    return [replace(r, seconds=wall * r.seconds / stacked) for r in done] if stacked > 0 else done


def resolve_parallel_stacks(requested: int | None, device: torch.device,
                            on_epoch: Callable[[int, np.ndarray], np.ndarray] | None) -> int:
    """How many stacks `train_models` trains at once (see there)."""
    if device.type != "cpu" or on_epoch is not None:
        return 1
    return requested if requested is not None else max(1, torch.get_num_threads())


class StackInterrupted(Exception):
    """A stack stopped early because its run was interrupted (`map_stacks`' `cancel`)."""


class _DeviceData:
    """The data on the device once: inputs, the stacked-loss label matrix, raw targets, row sets."""

    def __init__(self, X: np.ndarray, Y: np.ndarray, heads: Sequence[Head], split: np.ndarray, *,
                 dtype: torch.dtype, device: torch.device) -> None:
        self.dtype, self.device = dtype, device
        self.X = torch.as_tensor(X, dtype=dtype, device=device)
        self.Y = torch.as_tensor(Y, dtype=dtype, device=device)
        lab, self.label_offsets = _label_matrix(Y, heads)
        self.labels = torch.as_tensor(lab, dtype=dtype, device=device)
        self.zero_column = lab.shape[1] - 1
        self.columns = _head_columns(heads)
        self.rows = {name: torch.as_tensor(np.flatnonzero(split == code), device=device)
                     for code, name in enumerate(SPLIT_NAMES)}
        self.train_rows_cpu = torch.as_tensor(np.flatnonzero(split == TRAIN))


class _StackLosses:
    """Constant tensors that turn stacked outputs into per-target loss sums.

    Losses run in the layout (S, W, K, B): slot, output column, model, row, with the rows
    innermost so every elementwise step runs over long contiguous rows. Labels come from a
    per-stack table holding just the label columns the stack uses, transposed so a batch is one
    column gather: (S, W+1, K, B), per slot its W target columns and a labelled flag.
    """

    def __init__(self, heads: Sequence[Head], layout: SlotLayout, data: _DeviceData) -> None:
        K, S, W = layout.n_models, layout.n_slots, layout.out_width
        dt, dev = data.dtype, data.device
        cols = np.full((K, S, W + 1), data.zero_column, dtype=np.int64)
        cum_w = np.zeros((K, S, W))
        soft_bias = np.full((K, S, W), _NEG)
        for k in range(K):
            for s in range(S):
                t = int(layout.slot_head[k, s])
                if t < 0:
                    continue
                o, off = heads[t].outputs, data.label_offsets[t]
                cols[k, s, :o] = off + np.arange(o)
                cols[k, s, W] = off + o
                cum_w[k, s, :o] = 1.0 / o
                soft_bias[k, s, :o] = 0.0
        self.S, self.W, self.slices, self.data = S, W, layout.family_slices, data
        (c0, c1), (m0, m1), _ = self.slices

        def shaped(a: np.ndarray) -> torch.Tensor:  # (K, S', W) -> (S', W, K, 1)
            return torch.as_tensor(a.transpose(1, 2, 0)[..., None], dtype=dt, device=dev).contiguous()

        self.cum_w = shaped(cum_w[:, c0:c1])
        self.soft_bias = shaped(soft_bias[:, m0:m1])
        self._set_columns(cols.reshape(K, S * (W + 1)))

    def _set_columns(self, cols: np.ndarray) -> None:
        self.cols = cols
        dev = self.data.device
        if bool((cols == cols[:1]).all()):  # every model reads the same columns: one gather per batch
            self.table = self.data.labels[:, torch.as_tensor(cols[0], device=dev)].T.contiguous()
            self.index = None
        else:
            used, pos = np.unique(cols, return_inverse=True)
            self.table = self.data.labels[:, torch.as_tensor(used, device=dev)].T.contiguous()
            self.index = torch.as_tensor(pos.reshape(cols.shape).T[:, :, None], device=dev).contiguous()

    def select(self, keep: torch.Tensor) -> _StackLosses:
        new = copy.copy(self)
        new.cum_w = self.cum_w.index_select(2, keep)
        new.soft_bias = self.soft_bias.index_select(2, keep)
        new._set_columns(self.cols[keep.cpu().numpy()])
        return new

    def gather(self, rows: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        """Targets and labelled flags (S, W+1, K, B) for row indices (B,) (the same rows for
        every model) or (G, B), one row set per group of models: G = K (each model its own), or
        with `groups` (K,) the row set of each model."""
        K = len(self.cols)
        rows = rows.view(1, -1) if rows.dim() == 1 else rows
        G = rows.shape[0]
        if G == 1:
            lab = self.table.index_select(1, rows[0])[:, None, :].expand(-1, K, -1)
        else:
            lab = self.table.index_select(1, rows.reshape(-1)).view(-1, G, rows.shape[1])
            if G != K:
                lab = lab.index_select(1, groups)
        if self.index is not None:
            lab = lab.gather(0, self.index.expand(-1, -1, lab.shape[2]))
        return lab.view(self.S, self.W + 1, K, lab.shape[2])

    def losses(self, out: torch.Tensor, lab: torch.Tensor, *, with_grad: bool
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-row losses (S, K, B), 0 where unlabelled, and with `with_grad` their gradient with
        respect to `out` (S, W, K, B) (0 where unlabelled and on padding), in one pass.

        Each family writes its slots of two preallocated tensors (no concatenation), with as few
        elementwise passes as its formula allows: on CPU this part of a step is memory-bound."""
        W = self.W
        S, _, K, B = out.shape
        mask = lab[:, W]
        loss = out.new_empty(S, K, B)
        grad = out.new_empty(out.shape) if with_grad else None
        (c0, c1), (m0, m1), (r0, r1) = self.slices
        if c1 > c0:  # binary, ordinal: BCE of each cumulative logit, averaged over k < C-1
            z, t = out[c0:c1], lab[c0:c1, :W]
            w = self.cum_w * mask[c0:c1, None]
            # BCE with logits = (1 - t) z - log sigmoid(z), the form torch itself uses (stable).
            bce = torch.addcmul(z, t, z, value=-1).sub_(F.logsigmoid(z)).mul_(w)
            torch.sum(bce, 1, out=loss[c0:c1])
            if with_grad:
                torch.sigmoid(z, out=grad[c0:c1]).sub_(t).mul_(w)
        if m1 > m0:  # multiclass, soft: cross-entropy against class probabilities
            z, p = out[m0:m1], lab[m0:m1, :W]
            zb = z + self.soft_bias
            zb = zb.sub_(zb.amax(1, keepdim=True))
            e = zb.exp()
            se = e.sum(1, keepdim=True)
            torch.sum(zb.sub_(se.log()).mul_(p), 1, out=loss[m0:m1]).mul_(mask[m0:m1]).neg_()
            if with_grad:
                torch.div(e, se, out=grad[m0:m1]).sub_(p).mul_(mask[m0:m1, None])
        if r1 > r0:  # regression: squared error
            d = torch.sub(out[r0:r1, 0], lab[r0:r1, 0]).mul_(mask[r0:r1])
            torch.square(d, out=loss[r0:r1])
            if with_grad:
                grad[r0:r1].zero_()
                torch.mul(d, 2, out=grad[r0:r1, 0])
        return loss, grad

    def sums(self, out: torch.Tensor, lab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed loss (K, S) over the rows of `out` (K, S, W, B), and labelled counts (K, S)."""
        return self.sums_with_grad(out, lab, with_grad=False)[:2]

    def sums_with_grad(self, out: torch.Tensor, lab: torch.Tensor, *, with_grad: bool = True
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """`sums`, and (with `with_grad`) the gradient of each summed loss with respect to `out`:
        (K, S, W, B), a view of a tensor stored (S, W, K, B) like `out`, which the caller may scale
        in place."""
        loss, grad = self.losses(out.permute(1, 2, 0, 3), lab, with_grad=with_grad)
        return loss.sum(-1).T, lab[:, self.W].sum(-1).T, None if grad is None else grad.permute(2, 0, 1, 3)


def _loss_scale(weighting: LossWeighting, lsum: torch.Tensor, cnt: torch.Tensor, loss_w: torch.Tensor,
                wparams: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The derivative (K, S) of the loss the models minimise (`weighting.combine` of their mean
    target losses, summed over models) with respect to the summed target losses `lsum`, and its
    gradient for the weighting's own parameters."""
    n = cnt.clamp_min(1)
    d_mean, d_params = weighting.gradients(lsum / n, loss_w, wparams)
    return d_mean / n, d_params


def _train_stack(data: _DeviceData, heads: Sequence[Head], plans: Sequence[ModelPlan], plan_index: Sequence[int],
                 n_plans: int, *, model: ModelSettings, training: TrainingSettings, weighting: LossWeighting,
                 eval_splits: Sequence[str], keep_state: bool, progress: Callable[[int], None] | None,
                 on_epoch: Callable[[int, np.ndarray], np.ndarray] | None,
                 cancel: threading.Event | None = None) -> list[ModelResult]:
    t0 = time.perf_counter()
    K = len(plans)
    dt, dev = data.dtype, data.device
    layout = slot_layout(heads, [p.targets for p in plans])
    S = layout.n_slots
    full = StackedMLP(
        heads=heads, layout=layout, in_features=data.X.shape[1], depth=model.depth, width=model.width,
        branch_layer=plans[0].branch_layer, dropped=[p.dropped_features for p in plans],
        adversarial_lambda=model.adversarial_lambda, dtype=dt, device=dev,
    )
    input_masks = []
    for k, p in enumerate(plans):
        net = build_model(p, heads, in_features=data.X.shape[1], model=model, dtype=dt)
        full.load_model(k, net.state_dict())
        input_masks.append(net.input_mask)
    full_losses = _StackLosses(heads, layout, data)
    weight_np, main_np = np.zeros((K, S)), np.zeros((K, S))
    for k, p in enumerate(plans):
        for j, (t, s) in enumerate(zip(p.targets, layout.slot_of[k], strict=True)):
            weight_np[k, s] = p.weights()[j]
            main_np[k, s] = float(t in p.main)
    best_params = {k: v.detach().clone() for k, v in full.params.items()}
    # Models with one seed see the same batches: their rows are gathered once, and their first
    # layer reads them once (`models.grouped_bmm`). The caller puts such models next to each other.
    seeds = np.array([p.seed for p in plans])

    # The live stack: the models still training. When some stop, it is cut down to the others
    # (parameters, Adam moments and constants alike), which changes nothing for them.
    alive = np.arange(K)
    live, losses = full, full_losses
    loss_w = torch.as_tensor(weight_np, dtype=dt, device=dev)
    wparams = weighting.init_params(K, S, dtype=dt, device=dev)
    opt = _adam(list(live.params.values()) + wparams, training)

    n_train = len(data.train_rows_cpu)
    B = min(training.batch_size, n_train)
    E, patience = training.epochs, training.patience
    best = np.full(K, np.inf)
    best_epoch = np.zeros(K, dtype=int)
    since = np.zeros(K, dtype=int)
    stopped = np.zeros(K, dtype=bool)
    pruned = np.zeros(K, dtype=bool)
    epochs_run = np.zeros(K, dtype=int)
    train_curve = np.full((E, K, S), np.nan)
    val_curve = np.full((E, K, S), np.nan)
    val_rows = data.rows["val"]

    for epoch in range(1, E + 1):
        Ka = len(alive)
        sizes = group_sizes(seeds[alive].tolist())
        first = np.cumsum((0,) + sizes[:-1])  # each group's first model in the live stack
        group_of = torch.as_tensor(np.repeat(np.arange(len(sizes)), sizes), device=dev)
        order = torch.stack([data.train_rows_cpu[_data_order(int(seeds[alive[i]]), epoch, n_train)]
                             for i in first]).to(dev)
        acc_sum = torch.zeros(Ka, S, dtype=dt, device=dev)
        acc_cnt = torch.zeros(Ka, S, dtype=dt, device=dev)
        for a in range(0, n_train, B):
            if cancel is not None and cancel.is_set():
                raise StackInterrupted
            rows = order[:, a:a + B]
            xb = data.X.index_select(0, rows.reshape(-1)).view(len(sizes), rows.shape[1], -1)
            out, tape = live.forward_with_tape(xb, sizes=sizes)
            lsum, cnt, grad = losses.sums_with_grad(out, losses.gather(rows, group_of))
            assert grad is not None
            scale, wgrads = _loss_scale(weighting, lsum, cnt, loss_w, wparams)
            grads = live.backward(tape, grad.mul_(scale[:, :, None, None]))
            for t, g in zip(live.params.values(), grads.values(), strict=True):
                t.grad = g
            for t, g in zip(wparams, wgrads, strict=True):
                t.grad = g
            opt.step()
            acc_sum += lsum
            acc_cnt += cnt
        with torch.no_grad():
            v_sum, v_cnt = _eval_losses(live, losses, data, val_rows, live.params)
        # One synchronisation per epoch: NaN where a target had no label this epoch.
        tr = (acc_sum / acc_cnt).cpu().double().numpy()
        va = (v_sum / v_cnt).cpu().double().numpy()
        train_curve[epoch - 1, alive], val_curve[epoch - 1, alive] = tr, va
        main_loss = np.full(K, np.nan)
        main_loss[alive] = (np.nan_to_num(va, nan=0.0) * main_np[alive]).sum(1)
        active = ~stopped
        epochs_run[active] = epoch
        improved = active & (main_loss < best)
        if improved.any():
            pos = np.flatnonzero(improved[alive])  # positions in the live stack
            src = torch.as_tensor(pos, device=dev)
            dst = torch.as_tensor(alive[pos], device=dev)
            with torch.no_grad():
                for name, v in live.params.items():
                    best_params[name].index_copy_(0, dst, v.detach().index_select(0, src))
            best[improved] = main_loss[improved]
            best_epoch[improved] = epoch
        since[improved] = 0
        since[active & ~improved] += 1
        newly = active & (since >= patience) if epoch >= training.min_epochs else np.zeros(K, dtype=bool)
        if epoch == E:
            newly |= active
        if on_epoch is not None:
            report = np.full(n_plans, np.nan)
            report[np.asarray(plan_index)[active]] = main_loss[active]
            stop = on_epoch(epoch, report)
            if stop is not None:
                stop = np.asarray(stop, dtype=bool)
                if stop.shape != (n_plans,):
                    raise SpecError(f"on_epoch must return a bool array over all {n_plans} plans. Got shape {stop.shape} instead.")
                cut = active & stop[np.asarray(plan_index)] & ~newly
                pruned |= cut
                newly |= cut
        stopped |= newly
        if progress is not None and newly.any():
            progress(int(newly.sum()))
        if stopped.all():
            break
        if newly.any():
            keep_pos = np.flatnonzero(~stopped[alive])
            keep = torch.as_tensor(keep_pos, device=dev)
            old_params = list(live.params.values()) + wparams
            live, losses = live.select(keep), losses.select(keep)
            loss_w = loss_w.index_select(0, keep)
            wparams = [w.detach().index_select(0, keep) for w in wparams]
            new_params = list(live.params.values()) + wparams
            opt = _adam(new_params, training, carry=(opt, old_params, keep))
            alive = alive[keep_pos]

    wall = time.perf_counter() - t0
    # Final scores of every model at its best epoch, on each requested split.
    scores: dict[str, tuple[list[dict[int, float]], list[dict[int, float]]]] = {}
    with torch.no_grad():
        for split_name in eval_splits:
            rows = data.rows[split_name]
            outs = _eval_outputs(full, data, rows, best_params)  # (K, S, W, n)
            y = data.Y.index_select(0, rows)
            per = [_final_scores(heads, p.targets, [outs[k, s, :heads[t].outputs].T
                                                    for t, s in zip(p.targets, layout.slot_of[k], strict=True)],
                                 y, data.columns) for k, p in enumerate(plans)]
            scores[split_name] = ([a for a, _ in per], [b for _, b in per])
    total_epochs = max(1, int(epochs_run.sum()))
    results = []
    for k, p in enumerate(plans):
        slots = list(layout.slot_of[k])
        E_k = int(epochs_run[k])
        results.append(ModelResult(
            plan=p, best_epoch=int(best_epoch[k]), epochs_run=E_k,
            loss={s: scores[s][0][k] for s in eval_splits},
            metric={s: scores[s][1][k] for s in eval_splits},
            seconds=wall * E_k / total_epochs,
            curves=_curves(heads, p.targets, train_curve[:E_k, k][:, slots], val_curve[:E_k, k][:, slots]),
            state=full.model_state(k, best_params, input_masks[k]) if keep_state else None,
            pruned=bool(pruned[k]),
        ))
    return results


class _FusedAdam:
    """Adam through torch's fused kernel, called directly: the update of
    `torch.optim.Adam(fused=True)` (same state, same arithmetic, tested equal) without that
    class's per-step bookkeeping (profiler hooks, state lookups, grouping by device), which on a
    small stack cost more than the update itself. Betas, eps and amsgrad are torch's defaults."""

    def __init__(self, params: list[torch.Tensor], *, lr: float, weight_decay: float) -> None:
        self.params, self.lr, self.weight_decay = params, lr, weight_decay
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def step(self) -> None:
        params = [p for p in self.params if p.grad is not None]
        for p in params:
            if p not in self.state:
                self.state[p] = {"step": torch.zeros((), dtype=torch.float32, device=p.device),
                                 "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
        states = [self.state[p] for p in params]
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(params, [p.grad for p in params], [s["exp_avg"] for s in states],
                           [s["exp_avg_sq"] for s in states], [], steps, lr=self.lr, beta1=0.9, beta2=0.999,
                           weight_decay=self.weight_decay, eps=1e-8, amsgrad=False, maximize=False)


def _adam(params: list[torch.Tensor], training: TrainingSettings,
          carry: tuple[torch.optim.Optimizer | _FusedAdam, list[torch.Tensor], torch.Tensor] | None = None
          ) -> torch.optim.Optimizer | _FusedAdam:
    """Adam over stacked tensors (`_FusedAdam` where torch has the fused kernel); with `carry` =
    (old optimiser, its parameters, kept model indices), the kept models' moments and step count
    move over to the new parameters. The parameters need not require gradients: the stacked
    trainer computes them by hand (`StackedMLP.backward`) and sets `.grad` itself."""
    if _fused_ok(params):
        opt: torch.optim.Optimizer | _FusedAdam = _FusedAdam(params, lr=training.lr, weight_decay=training.weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=training.lr, weight_decay=training.weight_decay)
    if carry is not None:
        old, old_params, keep = carry
        for new_p, old_p in zip(params, old_params, strict=True):
            st = old.state.get(old_p)
            if st:
                opt.state[new_p] = {
                    "step": st["step"].clone(),
                    "exp_avg": st["exp_avg"].index_select(0, keep),
                    "exp_avg_sq": st["exp_avg_sq"].index_select(0, keep),
                }
    return opt


_MALLOC_TUNED = False


def _retain_freed_memory() -> None:
    """Keep large freed blocks in the process heap (glibc only, once per process).

    Every training step frees and reallocates the same few megabyte-sized tensors. glibc's
    default adaptive thresholds return such blocks to the OS and then fault them back in, page
    by page, on the next step: a quarter of a stacked step's time on CPU, measured here. Fixed
    thresholds keep them for reuse; the process's peak memory is unchanged.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED or not sys.platform.startswith("linux"):
        return
    _MALLOC_TUNED = True
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 64 << 20)
    mallopt(m_trim_threshold, 1 << 30)


def preload_optimiser() -> None:
    """Build a torch.optim optimiser once in this process. The first one built in a process
    imports some 800 modules (about 1 s); called before forking stack workers that will build
    one, so that they inherit those modules instead of each importing them again."""
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def _fused_ok(params: list[torch.Tensor]) -> bool:
    # The fused Adam kernel runs one pass per tensor (the default runs about ten); same update.
    # It exists on CUDA, and on CPU from torch 2.4 (pyproject allows 2.3).
    devices = ("cpu", "cuda") if torch.torch_version.TorchVersion(torch.__version__) >= (2, 4) else ("cuda",)
    return all(p.device.type in devices and p.dtype in (torch.float32, torch.float64) for p in params)


def _eval_chunk(stack: StackedMLP, rows: int) -> int:
    per_row = stack.layout.n_models * max(1, stack.layout.n_slots) * max(stack.width, stack.in_features)
    return max(1, min(rows, _EVAL_ELEMENTS // per_row))


def _eval_losses(stack: StackedMLP, losses: _StackLosses, data: _DeviceData, rows: torch.Tensor,
                 params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed per-row losses and labelled counts (K, S) over `rows`, in chunks."""
    n = len(rows)
    step = _eval_chunk(stack, n)
    total = count = None
    for a in range(0, n, step):
        r = rows[a:a + step]
        s, c = losses.sums(stack.forward(data.X.index_select(0, r), params), losses.gather(r))
        total, count = (s, c) if total is None else (total + s, count + c)
    return total, count


def _eval_outputs(stack: StackedMLP, data: _DeviceData, rows: torch.Tensor,
                  params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Stacked outputs over `rows` in the stack's layout, computed in chunks."""
    step = _eval_chunk(stack, len(rows))
    parts = [stack.forward(data.X.index_select(0, rows[a:a + step]), params) for a in range(0, len(rows), step)]
    if not parts:  # an empty split: its losses and metrics come out NaN
        K = stack.params["head.w"].shape[0]
        return torch.zeros(K, stack.layout.n_slots, stack.layout.out_width, 0, dtype=data.dtype, device=data.device)
    return torch.cat(parts, 3)


# ---------------------------------------------------------------- the sequential reference


def train_sequential(
    X: np.ndarray,
    Y: np.ndarray,
    heads: Sequence[Head],
    split: np.ndarray,
    plans: Sequence[ModelPlan],
    *,
    model: ModelSettings,
    training: TrainingSettings,
    device: str = "auto",
    dtype: torch.dtype = torch.float32,
    eval_splits: Sequence[str] = ("val",),
    keep_state: bool = False,
    progress: Callable[[int], None] | None = None,
) -> list[ModelResult]:
    """Train the plans one at a time as plain `nn.Module`s, with the initialisation, data order,
    losses, weighting and stopping rule of `train_models`: its reference and its baseline.
    `progress(1)` is called as each model finishes."""
    X, Y, split = np.asarray(X), np.asarray(Y, dtype=float), np.asarray(split)
    _check_inputs(X, Y, heads, split, plans, model, eval_splits)
    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    _retain_freed_memory()
    data = _DeviceData(X, Y, heads, split, dtype=dtype, device=dev)
    results = []
    for p in plans:
        results.append(_train_one(data, heads, p, model=model, training=training, eval_splits=eval_splits,
                                  keep_state=keep_state))
        if progress is not None:
            progress(1)
    return results


def _train_one(data: _DeviceData, heads: Sequence[Head], plan: ModelPlan, *, model: ModelSettings,
               training: TrainingSettings, eval_splits: Sequence[str], keep_state: bool) -> ModelResult:
    t0 = time.perf_counter()
    dt, dev = data.dtype, data.device
    net = build_model(plan, heads, in_features=data.X.shape[1], model=model, dtype=dt).to(dev)
    weighting = get_weighting(training.weighting)
    T = len(plan.targets)
    wparams = weighting.init_params(1, T, dtype=dt, device=dev)
    for t in wparams:
        t.requires_grad_(True)
    opt = torch.optim.Adam(list(net.parameters()) + wparams, lr=training.lr, weight_decay=training.weight_decay)
    loss_w = torch.tensor([plan.weights()], dtype=dt, device=dev)
    main = np.array([t in plan.main for t in plan.targets])
    cols = [data.Y[:, data.columns[t]:data.columns[t] + heads[t].width] for t in plan.targets]
    n_train = len(data.train_rows_cpu)
    B = min(training.batch_size, n_train)
    best, best_epoch, since, epochs_run = math.inf, 0, 0, 0
    best_state = copy.deepcopy(net.state_dict())
    train_curve, val_curve = [], []
    val_rows = data.rows["val"]
    for epoch in range(1, training.epochs + 1):
        order = data.train_rows_cpu[_data_order(plan.seed, epoch, n_train)].to(dev)
        acc_sum, acc_cnt = torch.zeros(T, dtype=dt, device=dev), torch.zeros(T, dtype=dt, device=dev)
        for a in range(0, n_train, B):
            rows = order[a:a + B]
            outs = net(data.X.index_select(0, rows))
            sums, counts = [], []
            for j, t in enumerate(plan.targets):
                row, lab = head_row_loss(heads[t], outs[j], cols[j].index_select(0, rows))
                sums.append(row.sum())
                counts.append(lab.sum().to(dt))
            lsum, cnt = torch.stack(sums), torch.stack(counts)
            total = weighting.combine((lsum / cnt.clamp_min(1))[None], loss_w, wparams).sum()
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            acc_sum += lsum.detach()
            acc_cnt += cnt
        with torch.no_grad():
            outs = net(data.X.index_select(0, val_rows))
            va = []
            for j, t in enumerate(plan.targets):
                row, lab = head_row_loss(heads[t], outs[j], cols[j].index_select(0, val_rows))
                n = int(lab.sum())
                va.append(float(row.sum()) / n if n else float("nan"))
        va = np.array(va)
        train_curve.append((acc_sum / acc_cnt).cpu().double().numpy())
        val_curve.append(va)
        epochs_run = epoch
        main_loss = float((np.nan_to_num(va, nan=0.0) * main).sum())
        if main_loss < best:
            best, best_epoch, since = main_loss, epoch, 0
            best_state = copy.deepcopy(net.state_dict())
        else:
            since += 1
        if since >= training.patience and epoch >= training.min_epochs:
            break
    net.load_state_dict(best_state)
    net.eval()
    loss, metric = {}, {}
    with torch.no_grad():
        for split_name in eval_splits:
            rows = data.rows[split_name]
            outs = net(data.X.index_select(0, rows))
            loss[split_name], metric[split_name] = _final_scores(heads, plan.targets, outs, data.Y.index_select(0, rows), data.columns)
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()} if keep_state else None
    return ModelResult(
        plan=plan, best_epoch=best_epoch, epochs_run=epochs_run, loss=loss, metric=metric,
        seconds=time.perf_counter() - t0,
        curves=_curves(heads, plan.targets, np.array(train_curve), np.array(val_curve)),
        state=state,
    )

