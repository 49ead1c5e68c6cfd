"""Checks of the training inputs, the label layout, and the data on the device."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from taskscout.data import SPLIT_NAMES, TRAIN, VAL, Head
from taskscout.errors import DataError, SpecError
from taskscout.models import check_architecture
from taskscout.spec import ModelSettings
from taskscout.training.plans import ModelPlan

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


class _DeviceData:
    """The data on the device once: inputs, the stacked-loss label matrix, raw targets, row sets.

    X and the label matrix carry one extra row after the data (`pad_row`): zero inputs and no
    label, so a batch padded with it computes the same losses and gradients as without it."""

    def __init__(self, X: np.ndarray, Y: np.ndarray, heads: Sequence[Head], split: np.ndarray, *,
                 dtype: torch.dtype, device: torch.device) -> None:
        self.dtype, self.device = dtype, device
        n = len(X)
        self.pad_row = n
        self.X = torch.as_tensor(np.concatenate([X, np.zeros((1, X.shape[1]), X.dtype)]), dtype=dtype, device=device)
        self.Y = torch.as_tensor(Y, dtype=dtype, device=device)
        lab, self.label_offsets = _label_matrix(Y, heads)
        lab = np.concatenate([lab, np.zeros((1, lab.shape[1]))])
        self.labels = torch.as_tensor(lab, dtype=dtype, device=device)
        self.zero_column = lab.shape[1] - 1
        self.columns = _head_columns(heads)
        self.rows = {name: torch.as_tensor(np.flatnonzero(split == code), device=device)
                     for code, name in enumerate(SPLIT_NAMES)}
        self.train_rows_cpu = torch.as_tensor(np.flatnonzero(split == TRAIN))
        # (n, heads): which rows are labelled for each head, per split as a row mask
        labelled = np.stack([np.isfinite(Y[:, c:c + h.width]).all(1) for h, c in zip(heads, self.columns, strict=True)], 1)
        self.labelled = {name: labelled[split == code] for code, name in enumerate(SPLIT_NAMES)}

    def model_rows(self, targets: Sequence[int], split: str = "train") -> np.ndarray:
        """Bool mask over the rows of `split`: those labelled for at least one of `targets` (the
        rows a model of these targets reads; every row when each of them is labelled in each)."""
        return self.labelled[split][:, list(targets)].any(1)


MIN_STEPS = 8  # steps per epoch of a model with few rows (see `_batch_rows`)


def _batch_rows(n_rows: int, batch_size: int) -> int:
    """The batch size of a model that reads `n_rows` training rows per epoch: `batch_size`, or for
    a model whose rows fill fewer than MIN_STEPS such batches (a segment of a long table, a
    sparse task) its rows split into MIN_STEPS equal batches: with 300 rows and batches of 256 a
    model would take 2 steps per epoch, and a pair of such segments 3, so a pair would train with
    more steps than either alone and both far less than a dense model."""
    if n_rows <= 0 or -(-n_rows // batch_size) >= MIN_STEPS:
        return batch_size
    return max(1, -(-n_rows // MIN_STEPS))


def _data_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The permutation of the training rows a model with this seed sees in this epoch."""
    gen = torch.Generator().manual_seed((int(seed) * 100003 + epoch) % (2**62))
    return torch.randperm(n, generator=gen)


def _epoch_rows(data: _DeviceData, seed: int, epoch: int, mask: np.ndarray,
                order: torch.Tensor | None = None) -> torch.Tensor:
    """The training rows (indices into X, on the CPU) a model reading the training rows in `mask`
    sees in this epoch, in order: the seed's permutation of all training rows (`_data_order`) with
    the rows outside `mask` left out. A row is therefore visited at the same place relative to
    the other rows of its task whatever else the model reads: a task's rows come in one order
    (fixed by seed and epoch) alone and with any partner. `order` is `_data_order`'s permutation
    when the caller has it already."""
    order = _data_order(seed, epoch, len(data.train_rows_cpu)) if order is None else order
    if not mask.all():
        order = order[torch.as_tensor(mask)[order]]
    return data.train_rows_cpu[order]
