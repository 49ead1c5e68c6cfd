"""The stacked trainer: `train_models` trains many models at once, stack by stack."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import torch

from taskscout.data import Head
from taskscout.device import resolve_device
from taskscout.errors import SpecError
from taskscout.models import StackedMLP, group_sizes, slot_layout
from taskscout.parallel import Report, map_stacks
from taskscout.spec import ModelSettings, TrainingSettings
from taskscout.training.inputs import _check_inputs, _data_order, _DeviceData
from taskscout.training.losses import _curves, _final_scores, _loss_scale, _StackLosses
from taskscout.training.model import build_model
from taskscout.training.optimiser import _adam, _fused_ok, _retain_freed_memory, preload_optimiser
from taskscout.training.plans import ModelPlan, ModelResult
from taskscout.weighting import LossWeighting, get_weighting

_EVAL_ELEMENTS = 2**23  # activation elements per chunk of an evaluation pass (bounds its memory)


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
