"""The stacked trainer: `train_models` trains many models at once, stack by stack."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import torch

from taskscout.data import Head
from taskscout.device import resolve_device
from taskscout.errors import SpecError
from taskscout.models import StackedMLP, _init_linear, group_sizes, layer_seed, slot_layout
from taskscout.parallel import Report, map_stacks
from taskscout.spec import ModelSettings, TrainingSettings
from taskscout.training.inputs import (
    _batch_rows,
    _check_inputs,
    _data_order,
    _DeviceData,
    _epoch_rows,
)
from taskscout.training.losses import _curves, _final_scores, _loss_scale, _StackLosses
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
    chunks = _stacks(data, heads, plans, training.batch_size, stack_size, workers)
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


def _stacks(data: _DeviceData, heads: Sequence[Head], plans: Sequence[ModelPlan], batch_size: int, stack_size: int,
            workers: int) -> list[list[int]]:
    """The plans' indices cut into stacks. A stack holds one branch layer and one number of steps
    per epoch (`ceil(rows / batch)` over the training rows labelled for some target of the model,
    with the batch of `inputs._batch_rows`:
    models whose rows differ in number train together when their step counts agree). Models with
    similar target sets share a stack so few padding slots are computed, and within a stack
    models with one row set and one seed sit together (they share batches, see `_LiveStack`);
    which models share a stack does not change any model's result."""
    B = min(batch_size, len(data.train_rows_cpu))
    row_key: dict[bytes, int] = {}
    steps, row_set = [], []
    for p in plans:
        mask = data.model_rows(p.targets)
        m = int(mask.sum())
        steps.append(-(-m // _batch_rows(m, B)))
        row_set.append(row_key.setdefault(np.packbits(mask).tobytes(), len(row_key)))
    buckets: dict[tuple[int, int], list[int]] = {}
    for i, p in enumerate(plans):
        buckets.setdefault((p.branch_layer, steps[i]), []).append(i)
    chunks: list[list[int]] = []
    for b in sorted(buckets):
        idx = sorted(buckets[b], key=lambda i: (len(plans[i].targets), sorted(heads[t].family for t in plans[i].targets),
                                                row_set[i], plans[i].seed))
        size = min(stack_size, -(-len(idx) // workers))  # enough stacks to keep every worker busy
        chunks += [sorted(idx[start:start + size], key=lambda i: (row_set[i], plans[i].seed))
                   for start in range(0, len(idx), size)]
    return chunks


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
    """Train one stack: per epoch a pass of every live model over its own training rows
    (`_LiveStack.train_epoch`), its validation losses, best-epoch bookkeeping, early stopping and
    pruning; then every model's scores at its best epoch. Every model of a stack takes the same
    number of steps per epoch (`train_models` forms the stacks so)."""
    t0 = time.perf_counter()
    st = _LiveStack(data, heads, plans, model=model, training=training, weighting=weighting)
    K, patience = len(plans), training.patience
    for epoch in range(1, training.epochs + 1):
        tr = st.train_epoch(epoch, cancel)
        va = st.val_losses()
        main_loss = st.record(epoch, tr, va)
        active = ~st.stopped
        newly = active & (st.since >= patience) if epoch >= training.min_epochs else np.zeros(K, dtype=bool)
        if epoch == training.epochs:
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
                st.pruned |= cut
                newly |= cut
        st.stopped |= newly
        if progress is not None and newly.any():
            progress(int(newly.sum()))
        if st.stopped.all():
            break
        if newly.any():
            st.keep_only(np.flatnonzero(~st.stopped[st.alive]))
    return st.results(eval_splits, keep_state, wall=time.perf_counter() - t0)


class _LiveStack:
    """One stack's training state. The live stack holds the models still training; when some
    stop, it is cut down to the others (parameters, Adam moments and constants alike), which
    changes nothing for them.

    Each model reads the training rows labelled for at least one of its targets (`row_set`): its
    epoch is one pass over them in its seed's order (`_epoch_rows`), `batch_size` at a time. Models
    with one row set and one seed see the same batches: their rows are gathered once, and their
    first layer reads them once (`models.grouped_bmm`); the caller puts such models next to each
    other. A model whose rows run out before the longest of its stack's reads padding rows (no
    input, no label), which add nothing to its losses or gradients."""

    def __init__(self, data: _DeviceData, heads: Sequence[Head], plans: Sequence[ModelPlan], *,
                 model: ModelSettings, training: TrainingSettings, weighting: LossWeighting) -> None:
        K, dt, dev = len(plans), data.dtype, data.device
        self.data, self.heads, self.plans, self.training, self.weighting = data, heads, plans, training, weighting
        self.layout = layout = slot_layout(heads, [p.targets for p in plans])
        S = layout.n_slots
        self.full = StackedMLP(
            heads=heads, layout=layout, in_features=data.X.shape[1], depth=model.depth, width=model.width,
            branch_layer=plans[0].branch_layer, dropped=[p.dropped_features for p in plans],
            adversarial_lambda=model.adversarial_lambda, dtype=dt, device=dev,
        )
        self.input_masks = []
        layers: dict[tuple[int, int, int], SimpleNamespace] = {}  # models of one seed share their trunk layers
        for k, p in enumerate(plans):
            state = _initial_state(p, heads, data.X.shape[1], model, dt, layers)
            self.full.load_model(k, state)
            self.input_masks.append(state["input_mask"])
        weight_np, self.main_np = np.zeros((K, S)), np.zeros((K, S))
        for k, p in enumerate(plans):
            for j, (t, s) in enumerate(zip(p.targets, layout.slot_of[k], strict=True)):
                weight_np[k, s] = p.weights()[j]
                self.main_np[k, s] = float(t in p.main)
        self.best_params = {k: v.detach().clone() for k, v in self.full.params.items()}
        self.seeds = np.array([p.seed for p in plans])
        self.row_sets, self.train_masks, self.val_rows = _row_sets(data, plans)
        self.alive = np.arange(K)
        self.live, self.losses = self.full, _StackLosses(heads, layout, data)
        self.loss_w = torch.as_tensor(weight_np, dtype=dt, device=dev)
        self.wparams = weighting.init_params(K, S, dtype=dt, device=dev)
        self.opt = _adam(list(self.live.params.values()) + self.wparams, training)
        self.B = min(training.batch_size, len(data.train_rows_cpu))
        E = training.epochs
        self.best = np.full(K, np.inf)
        self.best_epoch, self.since, self.epochs_run = (np.zeros(K, dtype=int) for _ in range(3))
        self.stopped, self.pruned = np.zeros(K, dtype=bool), np.zeros(K, dtype=bool)
        self.train_curve, self.val_curve = np.full((E, K, S), np.nan), np.full((E, K, S), np.nan)

    def _batches(self, epoch: int) -> tuple[list[torch.Tensor], tuple[int, ...], torch.Tensor]:
        """This epoch's batches: per step the rows (G, b) of each group of live models with one row
        set and one seed (its own batch size, `_batch_rows`), padded to the longest; the group
        sizes; each live model's group."""
        keys = [(int(self.row_sets[k]), int(self.seeds[k])) for k in self.alive]
        sizes = group_sizes(keys)
        first = np.cumsum((0,) + sizes[:-1])
        n_train = len(self.data.train_rows_cpu)
        perms = {s: _data_order(s, epoch, n_train) for s in {key[1] for key in keys}}
        orders = [_epoch_rows(self.data, keys[i][1], epoch, self.train_masks[keys[i][0]], perms[keys[i][1]])
                  for i in first]
        per = [_batch_rows(len(o), self.B) for o in orders]
        steps = max(-(-len(o) // b) for o, b in zip(orders, per, strict=True))
        batches = []
        for a in range(steps):
            parts = [o[a * b:(a + 1) * b] for o, b in zip(orders, per, strict=True)]
            width = max(len(p) for p in parts)
            if all(len(p) == width for p in parts):
                rows = torch.stack(parts)
            else:
                rows = torch.full((len(parts), width), self.data.pad_row, dtype=torch.long)
                for g, part in enumerate(parts):
                    rows[g, :len(part)] = part
            batches.append(rows.to(self.data.device))
        group_of = torch.as_tensor(np.repeat(np.arange(len(sizes)), sizes), device=self.data.device)
        return batches, sizes, group_of

    def train_epoch(self, epoch: int, cancel: threading.Event | None) -> np.ndarray:
        """One epoch of every live model; its mean training loss per slot (Ka, S), NaN where a
        target had no label."""
        batches, sizes, group_of = self._batches(epoch)
        Ka, S, dt, dev = len(self.alive), self.layout.n_slots, self.data.dtype, self.data.device
        acc_sum = torch.zeros(Ka, S, dtype=dt, device=dev)
        acc_cnt = torch.zeros(Ka, S, dtype=dt, device=dev)
        live, losses = self.live, self.losses
        for rows in batches:
            if cancel is not None and cancel.is_set():
                raise StackInterrupted
            xb = self.data.X.index_select(0, rows.reshape(-1)).view(len(sizes), rows.shape[1], -1)
            out, tape = live.forward_with_tape(xb, sizes=sizes)
            lsum, cnt, grad = losses.sums_with_grad(out, losses.gather(rows, group_of))
            assert grad is not None
            scale, wgrads = _loss_scale(self.weighting, lsum, cnt, self.loss_w, self.wparams)
            grads = live.backward(tape, grad.mul_(scale[:, :, None, None]))
            for t, g in zip(live.params.values(), grads.values(), strict=True):
                t.grad = g
            for t, g in zip(self.wparams, wgrads, strict=True):
                t.grad = g
            self.opt.step()
            acc_sum += lsum
            acc_cnt += cnt
        return (acc_sum / acc_cnt).cpu().double().numpy()  # one synchronisation per epoch

    def val_losses(self) -> np.ndarray:
        """Mean validation loss per slot (Ka, S) of the live models on their labelled rows."""
        keys = [int(self.row_sets[k]) for k in self.alive]
        sizes = group_sizes(keys)
        first = np.cumsum((0,) + sizes[:-1])
        sets = [self.val_rows[keys[i]] for i in first]
        with torch.no_grad():
            if len(sets) == 1:
                v_sum, v_cnt = _eval_losses(self.live, self.losses, self.data, sets[0], self.live.params)
            else:
                n = max(len(r) for r in sets)
                rows = torch.full((len(sets), n), self.data.pad_row, dtype=torch.long, device=self.data.device)
                for g, r in enumerate(sets):
                    rows[g, :len(r)] = r
                group_of = torch.as_tensor(np.repeat(np.arange(len(sizes)), sizes), device=self.data.device)
                v_sum, v_cnt = _eval_losses(self.live, self.losses, self.data, rows, self.live.params,
                                            sizes=sizes, groups=group_of)
        return (v_sum / v_cnt).cpu().double().numpy()

    def record(self, epoch: int, tr: np.ndarray, va: np.ndarray) -> np.ndarray:
        """Store the epoch's curves, keep the parameters of models that improved; the main
        validation loss of every model (NaN for those no longer live)."""
        K, alive = len(self.plans), self.alive
        self.train_curve[epoch - 1, alive], self.val_curve[epoch - 1, alive] = tr, va
        main_loss = np.full(K, np.nan)
        main_loss[alive] = (np.nan_to_num(va, nan=0.0) * self.main_np[alive]).sum(1)
        active = ~self.stopped
        self.epochs_run[active] = epoch
        improved = active & (main_loss < self.best)
        if improved.any():
            pos = np.flatnonzero(improved[alive])  # positions in the live stack
            src = torch.as_tensor(pos, device=self.data.device)
            dst = torch.as_tensor(alive[pos], device=self.data.device)
            with torch.no_grad():
                for name, v in self.live.params.items():
                    self.best_params[name].index_copy_(0, dst, v.detach().index_select(0, src))
            self.best[improved] = main_loss[improved]
            self.best_epoch[improved] = epoch
        self.since[improved] = 0
        self.since[active & ~improved] += 1
        return main_loss

    def keep_only(self, keep_pos: np.ndarray) -> None:
        """Cut the live stack down to the models at `keep_pos` (positions in it)."""
        keep = torch.as_tensor(keep_pos, device=self.data.device)
        old_params = list(self.live.params.values()) + self.wparams
        self.live, self.losses = self.live.select(keep), self.losses.select(keep)
        self.loss_w = self.loss_w.index_select(0, keep)
        self.wparams = [w.detach().index_select(0, keep) for w in self.wparams]
        new_params = list(self.live.params.values()) + self.wparams
        self.opt = _adam(new_params, self.training, carry=(self.opt, old_params, keep))
        self.alive = self.alive[keep_pos]

    def results(self, eval_splits: Sequence[str], keep_state: bool, wall: float) -> list[ModelResult]:
        """Every model's scores at its best epoch on each requested split (on the split's rows
        labelled for some model of the stack: the others add nothing to any score)."""
        heads, plans, layout, data = self.heads, self.plans, self.layout, self.data
        scores: dict[str, tuple[list[dict[int, float]], list[dict[int, float]]]] = {}
        with torch.no_grad():
            for split_name in eval_splits:
                used = np.any([data.model_rows(p.targets, split_name) for p in plans], axis=0)
                rows = data.rows[split_name]
                rows = rows if used.all() else rows[torch.as_tensor(np.flatnonzero(used), device=data.device)]
                outs = _eval_outputs(self.full, data, rows, self.best_params)  # (K, S, W, n)
                y = data.Y.index_select(0, rows)
                per = [_final_scores(heads, p.targets, [outs[k, s, :heads[t].outputs].T
                                                        for t, s in zip(p.targets, layout.slot_of[k], strict=True)],
                                     y, data.columns) for k, p in enumerate(plans)]
                scores[split_name] = ([a for a, _ in per], [b for _, b in per])
        total_epochs = max(1, int(self.epochs_run.sum()))
        results = []
        for k, p in enumerate(plans):
            slots, E_k = list(layout.slot_of[k]), int(self.epochs_run[k])
            results.append(ModelResult(
                plan=p, best_epoch=int(self.best_epoch[k]), epochs_run=E_k,
                loss={s: scores[s][0][k] for s in eval_splits}, metric={s: scores[s][1][k] for s in eval_splits},
                seconds=wall * E_k / total_epochs,
                curves=_curves(heads, p.targets, self.train_curve[:E_k, k][:, slots], self.val_curve[:E_k, k][:, slots]),
                state=self.full.model_state(k, self.best_params, self.input_masks[k]) if keep_state else None,
                pruned=bool(self.pruned[k]),
            ))
        return results


def _initial_state(plan: ModelPlan, heads: Sequence[Head], in_features: int, model: ModelSettings, dtype: torch.dtype,
                   layers: dict[tuple[int, int, int], SimpleNamespace]) -> dict[str, torch.Tensor]:
    """The state dict of `build_model(plan, ...)` (the same numbers, drawn by `models._init_linear`
    from the same layer seeds) without building the module: a layer is drawn once per (seed,
    layer, target) and shared by the plans that hold it (`layers`), which spares a search's many
    small models most of their set-up. The plan was checked (`_check_inputs`)."""
    sizes, b, L = [in_features] + [model.width] * model.depth, plan.branch_layer, model.depth

    def layer(i: int, head: int, outputs: int) -> SimpleNamespace:
        seed = layer_seed(plan.seed, i + 1, head)
        key = (seed, sizes[i], outputs)
        if key not in layers:
            lin = SimpleNamespace(in_features=sizes[i], weight=torch.empty(outputs, sizes[i], dtype=dtype),
                                  bias=torch.empty(outputs, dtype=dtype))
            _init_linear(lin, seed)  # type: ignore[arg-type]
            layers[key] = lin
        return layers[key]

    state = {}
    for i in range(b):
        lin = layer(i, -1, sizes[i + 1])
        state[f"trunk.{i}.weight"], state[f"trunk.{i}.bias"] = lin.weight, lin.bias
    for j, t in enumerate(plan.targets):
        for i in range(b, L):
            lin = layer(i, t, sizes[i + 1])
            state[f"towers.{j}.{i - b}.weight"], state[f"towers.{j}.{i - b}.bias"] = lin.weight, lin.bias
        lin = layer(L, t, heads[t].outputs)
        state[f"heads.{j}.weight"], state[f"heads.{j}.bias"] = lin.weight, lin.bias
    mask = torch.ones(in_features, dtype=dtype)
    mask[list(plan.dropped_features)] = 0
    state["input_mask"] = mask
    return state


def _row_sets(data: _DeviceData, plans: Sequence[ModelPlan]) -> tuple[np.ndarray, list[np.ndarray], list[torch.Tensor]]:
    """Each plan's row set (an index into the other two), the training rows of each row set as a
    mask over the training rows, and its labelled validation rows."""
    ids: dict[bytes, int] = {}
    row_sets, train_masks, val_rows = [], [], []
    for p in plans:
        train, val = data.model_rows(p.targets), data.model_rows(p.targets, "val")
        key = np.packbits(np.concatenate([train, val])).tobytes()
        if key not in ids:
            ids[key] = len(ids)
            train_masks.append(train)
            val_rows.append(data.rows["val"] if val.all() else
                            data.rows["val"][torch.as_tensor(np.flatnonzero(val), device=data.device)])
        row_sets.append(ids[key])
    return np.array(row_sets), train_masks, val_rows


def _eval_chunk(stack: StackedMLP, rows: int) -> int:
    per_row = stack.layout.n_models * max(1, stack.layout.n_slots) * max(stack.width, stack.in_features)
    return max(1, min(rows, _EVAL_ELEMENTS // per_row))


def _eval_losses(stack: StackedMLP, losses: _StackLosses, data: _DeviceData, rows: torch.Tensor,
                 params: dict[str, torch.Tensor], sizes: tuple[int, ...] | None = None,
                 groups: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed per-row losses and labelled counts (K, S) over `rows`, in chunks: (n,) rows read by
    every model, or (G, n) rows, one row set per group of consecutive models (`sizes`; `groups`
    gives each model's group)."""
    n = rows.shape[-1]
    step = _eval_chunk(stack, n)
    total = count = None
    for a in range(0, n, step):
        r = rows[..., a:a + step]
        x = data.X.index_select(0, r.reshape(-1))
        x = x if r.dim() == 1 else x.view(r.shape[0], r.shape[1], -1)
        s, c = losses.sums(stack.forward(x, params, sizes), losses.gather(r, groups))
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
