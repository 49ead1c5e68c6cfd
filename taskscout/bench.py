"""`taskscout bench`: the stacked trainer against a plain one-model-at-a-time loop, on this machine.

Both train the same K models (same data, seeds, data order and number of steps; patience is set
above the epoch count so every model runs every step). Reported: models per second for each, the
speed-up, the matrix-product GFLOP/s the stacked run achieved (forward and backward products of
the training steps plus the validation passes and the final scoring, over its whole wall time),
the machine's measured matmul GFLOP/s (sustained large square products, in the same dtype,
measured just before and just after the stacked run so that a machine whose speed drifts is
compared fairly) and their ratio, and the peak resident memory while the stacked run trained.

It also times the training steps' matrix products alone: the same batched products on the same
shapes, split over the same parallel stacks, with nothing between them. That rate is the ceiling
of the stacked trainer (everything else taking no time); the ratio of the two says how much of
the gap to the machine's peak is the products' own efficiency at these small shapes and how much
is the rest of a training step.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from taskscout.data import Head
from taskscout.device import resolve_device
from taskscout.errors import SpecError
from taskscout.models import (
    group_sizes,
    grouped_bmm,
    slot_layout,
    stack_layer_shapes,
    stack_matmul_flops,
)
from taskscout.parallel import Report, map_stacks, recorded_worker_memory
from taskscout.spec import ModelSettings, TrainingSettings
from taskscout.training import (
    ModelPlan,
    resolve_parallel_stacks,
    train_models,
    train_sequential,
)
from taskscout.training.inputs import _batch_rows

# The bench's tasks cycle through these types, so every loss family is exercised.
_TASK_TYPES = (("binary", 0), ("multiclass", 3), ("ordinal", 4), ("regression", 0))


@dataclass(frozen=True)
class BenchResult:
    """What `taskscout bench` measured (field names are the `--json` keys)."""

    device: str
    threads: int
    parallel_stacks: int  # stacks trained at once, one per Python thread (CPU); the K models split evenly
    omp_wait_policy: str  # OMP_WAIT_POLICY the process started with ("" = the OpenMP default)
    dtype: str
    models: int
    seeds: int  # distinct seeds among the K models (models sharing one share their batches)
    inputs: int
    depth: int
    width: int
    tasks: int
    batch: int
    steps: int
    epochs: int
    sequential_models: int  # how many of the K models the sequential loop timed
    sequential_seconds: float
    stacked_seconds: float
    sequential_models_per_s: float
    stacked_models_per_s: float
    speedup: float
    achieved_gflops: float
    matmul_peak_gflops: float
    fraction_of_peak: float
    products_gflops: float  # the training steps' matrix products alone, same shapes and parallel stacks
    products_fraction_of_peak: float  # products_gflops / matmul_peak_gflops: the trainer's ceiling
    peak_memory_mib: float  # peak resident memory while the stacks trained: this process's, plus
    # what its stacks' worker processes added (`parallel.recorded_worker_memory`)
    memory_over_baseline_mib: float  # the part of it above this process's resident memory just before
    max_loss_difference: float  # largest |val loss stacked - sequential| over the timed models
    label_fraction: float = 1.0  # each task labelled on this random fraction of the rows (drawn per task)
    steps_run: int = 0  # training steps per model actually run: over the rows labelled for a target

    def to_dict(self) -> dict:
        return asdict(self)


def bench_problem(*, models: int, inputs: int, tasks: int, batch: int, steps: int, epochs: int, seed: int = 0,
                  label_fraction: float = 1.0):
    """Synthetic data and K plans: `steps` training steps in total over `epochs` epochs when every
    row is labelled. With `label_fraction` F < 1 each task is labelled on its own random F of the
    rows (at least one training and one validation row), so a model trains on fewer rows."""
    if not 0 < label_fraction <= 1:
        raise SpecError(f"--label-fraction must be a number in (0, 1]. Got {label_fraction} instead.")
    if steps % epochs:
        raise SpecError(f"--steps ({steps}) must be a multiple of --epochs ({epochs}) so every epoch has whole batches")
    rng = np.random.default_rng(seed)
    n_train = batch * (steps // epochs)
    n_val = max(batch, 512)
    n = n_train + n_val
    X = rng.normal(size=(n, inputs)).astype(np.float32)
    heads, cols = [], []
    for t in range(tasks):
        kind, C = _TASK_TYPES[t % len(_TASK_TYPES)]
        signal = X[:, t % inputs] + 0.5 * X[:, (t + 1) % inputs] + 0.3 * rng.normal(size=n)
        if kind == "binary":
            y = (signal > 0).astype(float)
        elif kind in ("multiclass", "ordinal"):
            y = np.digitize(signal, np.quantile(signal, np.linspace(0, 1, C + 1)[1:-1])).astype(float)
        else:
            y = (signal - signal.mean()) / signal.std()
        heads.append(Head(f"task{t}", kind, n_classes=C))
        cols.append(y)
    Y = np.stack(cols, 1)
    split = np.zeros(n, dtype=np.int8)
    split[n_train:] = 1
    if label_fraction < 1:
        for t in range(tasks):
            hidden = rng.random(n) >= label_fraction
            hidden[[int(rng.integers(n_train)), n_train + int(rng.integers(n_val))]] = False
            Y[hidden, t] = np.nan
    return X, Y, heads, split


def bench_plans(models: int, tasks: int, branch_layer: int, seeds: int | None = None) -> list[ModelPlan]:
    """The K models: all `tasks` targets, the first one main; model k has seed k % `seeds` (default
    one seed per model). Models sharing a seed see the same batches and differ in the loss weights
    of their other targets, as in a search, where each seed trains many task subsets."""
    seeds = models if seeds is None else seeds
    per_seed = -(-models // seeds)
    return [ModelPlan(tuple(range(tasks)), (0,), seed=k % seeds, branch_layer=branch_layer, key=f"m{k}",
                      loss_weights=None if per_seed == 1 else (1.0,) + (0.5 + (k // seeds) / per_seed,) * (tasks - 1))
            for k in range(models)]


def _peak_blocks(*, device: torch.device, dtype: torch.dtype, seconds: float, blocks: int = 3) -> dict[int, list[float]]:
    """GFLOP/s of `blocks` blocks of back-to-back square products, per size n."""
    rates: dict[int, list[float]] = {}
    for n in (512, 1024):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        a @ b
        rates[n] = []
        for _ in range(blocks):
            _sync(device)
            t, reps = time.perf_counter(), 0
            while time.perf_counter() - t < seconds:
                a @ b
                reps += 1
                if device.type == "cuda" and reps % 16 == 0:
                    _sync(device)
            _sync(device)
            rates[n].append(2 * n**3 * reps / (time.perf_counter() - t) / 1e9)
    return rates


def _peak(*block_sets: dict[int, list[float]]) -> float:
    """The machine's sustained matmul GFLOP/s: the median block of the faster size, over all the
    given sets of blocks."""
    return max(float(np.median([r for blocks in block_sets for r in blocks[n]])) for n in block_sets[0])


def products_gflops(*, models: int, parallel_stacks: int, in_features: int, depth: int, width: int, branch_layer: int,
                    slots: int, out_width: int, rows: int, steps: int, device: torch.device, dtype: torch.dtype,
                    seeds: int | None = None) -> float:
    """GFLOP/s of the matrix products of `steps` training steps alone: per linear layer the forward
    product, the weight gradient and (but for the first layer) the input gradient, batched over
    the models of a stack and oriented as the trainer computes them, the models split into
    `parallel_stacks` stacks run at once as the trainer runs them, and the first layer reading one
    input matrix per seed (`models.grouped_bmm`; `seeds` as in `bench_plans`, default one per
    model). Operands are made once, so this is a ceiling: the rate the stacked trainer would
    reach if nothing but its products took time."""
    layers = stack_layer_shapes(in_features=in_features, depth=depth, width=width, branch_layer=branch_layer,
                                slots=slots, out_width=out_width)
    model_seeds = sorted(k % (seeds or models) for k in range(models))  # in stack order, as train_models sorts them
    size = -(-models // parallel_stacks)
    chunks = [list(range(a, min(models, a + size))) for a in range(0, models, size)]

    def run(chunk: list[int], report: Report = None, steps: int = steps) -> None:
        kw = {"device": device, "dtype": dtype}
        sizes = group_sizes([model_seeds[m] for m in chunk])
        products: list[Callable[[], torch.Tensor]] = []
        for n, (i, o, copies) in enumerate(layers):
            # As the trainer computes them: the first per-target layer as one product per model
            # (all slots' outputs at once), transposed when it is the output layer; later
            # per-target layers as one product per model and slot.
            k = len(chunk) * copies
            if n == branch_layer:
                k, o = len(chunk), o * copies
            if n == branch_layer == depth:  # (depth >= 1, so not the first layer)
                a, w, gt = torch.randn(k, rows, i, **kw), torch.randn(k, i, o, **kw), torch.randn(k, o, rows, **kw)
                products += [partial(torch.bmm, w.transpose(1, 2), a.transpose(1, 2)), partial(torch.bmm, gt, a),
                             partial(torch.bmm, gt.transpose(1, 2), w.transpose(1, 2))]
                continue
            w, g = torch.randn(k, i, o, **kw), torch.randn(k, rows, o, **kw)
            if n == 0:  # the inputs: one matrix per seed group; no input gradient
                x = torch.randn(len(sizes), rows, i, **kw)
                products += [partial(grouped_bmm, x, w, sizes), partial(grouped_bmm, x.transpose(1, 2), g, sizes)]
                continue
            a = torch.randn(k, rows, i, **kw)
            products += [partial(torch.bmm, a, w), partial(torch.bmm, a.transpose(1, 2), g),
                         partial(torch.bmm, g, w.transpose(1, 2))]
        for _ in range(steps):
            for product in products:
                product()

    flops = steps * stack_matmul_flops(models=models, in_features=in_features, depth=depth, width=width,
                                       branch_layer=branch_layer, slots=slots, out_width=out_width, rows=rows,
                                       backward=True)
    run(chunks[0][:1], steps=1)  # warm-up: one step of one model
    _sync(device)
    t = time.perf_counter()
    map_stacks(run, chunks, parallel_stacks)
    _sync(device)
    return flops / (time.perf_counter() - t) / 1e9


def _phase(progress: Any, name: str, total: int | None = None) -> None:
    """Start (with `total`) or finish one of the bench's timed loops on the progress display."""
    if progress is None:
        return
    if total is None:
        progress.phase_finished(name)
    else:
        progress.phase_started(name, total=total, done=0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the lifetime peak is the best available figure
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _PeakMemory:
    """Samples resident memory (or CUDA allocations) while the block runs."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = self.baseline = 0
        self._stop = threading.Event()

    def __enter__(self) -> _PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device)
            return self
        self.baseline = self.peak = _rss_bytes()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
            return
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def run_bench(*, models: int = 64, inputs: int = 64, depth: int = 2, width: int = 64, tasks: int = 4,
              batch: int = 256, steps: int = 300, epochs: int = 3, branch_layer: int | None = None,
              sequential_models: int | None = None, device: str = "auto", dtype: torch.dtype = torch.float32,
              seed: int = 0, peak_seconds: float = 0.2, parallel_stacks: int | None = None,
              seeds: int = 8, progress: Any = None, label_fraction: float = 1.0) -> BenchResult:
    """Train the same `models` models stacked and one by one; return the measured figures.

    `sequential_models` times only that many of the models in the sequential loop (its rate in
    models per second is what is compared); default all of them. `seeds` is the number of
    distinct seeds among the models (`bench_plans`; at most `models`). `parallel_stacks` is passed to
    `train_models` (default: automatic, one stack per torch thread on CPU). `progress` (a
    `search.SearchProgress`, e.g. the CLI's bars) is told of the two timed loops as they run.
    `label_fraction` F labels each task on a random F of the rows (`bench_problem`): the models
    then train on the rows labelled for one of their targets, in fewer steps.
    """
    for name, value, low in (("models", models, 1), ("inputs", inputs, 1), ("depth", depth, 1), ("width", width, 2),
                             ("tasks", tasks, 1), ("batch", batch, 1), ("steps", steps, 1), ("epochs", epochs, 1),
                             ("seeds", seeds, 1)):
        if value < low:
            raise SpecError(f"--{name} must be an int >= {low}. Got {value} instead.")
    b = depth if branch_layer is None else branch_layer
    if not 0 <= b <= depth:
        raise SpecError(f"--branch-layer must be in 0..{depth}. Got {b} instead.")
    n_seq = models if sequential_models is None else max(1, min(models, sequential_models))
    dev = resolve_device(device)
    X, Y, heads, split = bench_problem(models=models, inputs=inputs, tasks=tasks, batch=batch, steps=steps,
                                       epochs=epochs, seed=seed, label_fraction=label_fraction)
    seeds = min(seeds, models)
    plans = bench_plans(models, tasks, b, seeds)
    model = ModelSettings(depth=depth, width=width)
    training = TrainingSettings(epochs=epochs, batch_size=batch, patience=epochs + 1, lr=1e-3)
    kw = {"model": model, "training": training, "device": str(dev), "dtype": dtype}

    # Warm up first: the first products load and initialise the math libraries (seconds, and
    # about 100 MiB), which belongs to neither loop.
    warm = TrainingSettings(epochs=1, batch_size=batch, patience=2, lr=1e-3)
    wkw = {**kw, "training": warm}
    train_models(X, Y, heads, split, plans[:2], **wkw)
    train_sequential(X, Y, heads, split, plans[:1], **wkw)
    stacked, stacked_s, peak, peak_bytes, baseline, stacks = _time_stacked(
        X, Y, heads, split, plans, kw, parallel_stacks=parallel_stacks, peak_seconds=peak_seconds, progress=progress)
    layout = slot_layout(heads, [p.targets for p in plans])
    shape = {"models": models, "in_features": inputs, "depth": depth, "width": width, "branch_layer": b,
             "slots": layout.n_slots, "out_width": layout.out_width}
    labelled = np.isfinite(Y).any(1)  # every model trains every task: the rows labelled for one of them
    n_rows = int(labelled[split == 0].sum())
    rows = _batch_rows(n_rows, batch)  # the trainer's batch: smaller when the rows fill under MIN_STEPS batches
    steps_run = epochs * -(-n_rows // rows)
    products = products_gflops(parallel_stacks=stacks, rows=rows, steps=steps_run, device=dev, dtype=dtype,
                               seeds=seeds, **shape)
    _phase(progress, "sequential", n_seq)
    t = time.perf_counter()
    sequential = train_sequential(X, Y, heads, split, plans[:n_seq], progress=progress and progress.advance, **kw)
    _sync(dev)
    sequential_s = time.perf_counter() - t
    _phase(progress, "sequential")

    n_val = int((labelled & (split == 1)).sum())
    flops = (steps_run * stack_matmul_flops(rows=rows, backward=True, **shape)
             + (epochs + 1) * stack_matmul_flops(rows=n_val, backward=False, **shape))  # + the final scoring
    achieved = flops / stacked_s / 1e9
    diff = max(abs(a.loss["val"][t] - s.loss["val"][t]) for a, s in zip(stacked, sequential, strict=False)
               for t in a.loss["val"])
    seq_rate, stack_rate = n_seq / sequential_s, models / stacked_s
    return BenchResult(
        device=str(dev), threads=torch.get_num_threads(),
        parallel_stacks=stacks, omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", ""),
        dtype=str(dtype).replace("torch.", ""), models=models, seeds=seeds,
        inputs=inputs, depth=depth, width=width, tasks=tasks, batch=batch, steps=steps, epochs=epochs,
        sequential_models=n_seq, sequential_seconds=sequential_s, stacked_seconds=stacked_s,
        sequential_models_per_s=seq_rate, stacked_models_per_s=stack_rate, speedup=stack_rate / seq_rate,
        achieved_gflops=achieved, matmul_peak_gflops=peak, fraction_of_peak=achieved / peak,
        products_gflops=products, products_fraction_of_peak=products / peak,
        peak_memory_mib=peak_bytes / 2**20, memory_over_baseline_mib=(peak_bytes - baseline) / 2**20,
        max_loss_difference=float(diff), label_fraction=float(label_fraction), steps_run=steps_run,
    )


def _time_stacked(X: np.ndarray, Y: np.ndarray, heads: list[Head], split: np.ndarray, plans: list[ModelPlan],
                  kw: dict[str, Any], *, parallel_stacks: int | None, peak_seconds: float, progress: Any):
    """The timed stacked run between two matmul-peak measurements: its results, seconds, the peak
    GFLOP/s, the peak resident bytes (with its workers'), the resident bytes before it, and the
    number of stacks that ran at once."""
    dev, dtype, models = torch.device(kw["device"]), kw["dtype"], len(plans)
    peak_before = _peak_blocks(device=dev, dtype=dtype, seconds=peak_seconds)
    with _PeakMemory(dev) as mem, recorded_worker_memory() as added:
        _sync(dev)
        t = time.perf_counter()
        _phase(progress, "stacked", models)
        stacked = train_models(X, Y, heads, split, plans, stack_size=models, parallel_stacks=parallel_stacks,
                               progress=progress and progress.advance, **kw)
        _sync(dev)
        stacked_s = time.perf_counter() - t
        _phase(progress, "stacked")
    stacks = min(models, resolve_parallel_stacks(parallel_stacks, dev, None))
    # At most `stacks` workers run at once; count the largest that many as if they peaked together.
    peak_bytes = mem.peak + sum(sorted(added, reverse=True)[:stacks])
    peak = _peak(peak_before, _peak_blocks(device=dev, dtype=dtype, seconds=peak_seconds))
    return stacked, stacked_s, peak, peak_bytes, mem.baseline, stacks
