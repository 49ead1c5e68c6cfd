"""Losses and metrics per head (the reference), and the stacked per-target loss sums."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.stats import rankdata

from taskscout.data import Head
from taskscout.models import SlotLayout
from taskscout.training.inputs import _DeviceData
from taskscout.weighting import LossWeighting

_NEG = -1e30  # added to padding logits of a softmax: exp() of it is exactly 0


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
