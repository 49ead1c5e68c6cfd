"""The sequential reference: the same plans trained one by one as plain modules."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from taskscout.data import Head
from taskscout.device import resolve_device
from taskscout.spec import ModelSettings, TrainingSettings
from taskscout.training.inputs import _batch_rows, _check_inputs, _DeviceData, _epoch_rows
from taskscout.training.losses import _curves, _final_scores, head_row_loss
from taskscout.training.model import build_model
from taskscout.training.optimiser import _retain_freed_memory
from taskscout.training.plans import ModelPlan, ModelResult
from taskscout.weighting import get_weighting

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
    own_rows = data.model_rows(plan.targets)  # an epoch is one pass over the rows labelled for a target
    n_own = int(own_rows.sum())
    B = _batch_rows(n_own, B)
    best, best_epoch, since, epochs_run = math.inf, 0, 0, 0
    best_state = copy.deepcopy(net.state_dict())
    train_curve, val_curve = [], []
    val_rows = data.rows["val"]
    for epoch in range(1, training.epochs + 1):
        order = _epoch_rows(data, plan.seed, epoch, own_rows).to(dev)
        acc_sum, acc_cnt = torch.zeros(T, dtype=dt, device=dev), torch.zeros(T, dtype=dt, device=dev)
        for a in range(0, n_own, B):
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
