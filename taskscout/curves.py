"""Learning-curve features of single-task models: the plateau epoch and Bingel & Sogaard slopes.

Both take one loss curve: `losses[k]` is the loss after epoch k + 1 (epochs are 1-based, as in
curves.parquet). Pure numpy; no training here.

Plateau epoch (on the validation curve). With m(e) = min(L_1..L_e), the running best, the plateau
epoch is the first epoch e with e + window <= n such that the best loss of the next `window` epochs
improves on m(e) by less than `epsilon` relative to it:

    (m(e) - min(L_{e+1} .. L_{e+window})) / |m(e)| < epsilon

If no such epoch exists (the curve is still improving, or it is no longer than `window`), the plateau
epoch is n: the curve did not plateau within training. A zero running best counts as a plateau
(nothing is left to improve).

Slopes (Bingel & Sogaard, EACL 2017: the gradients of the loss curve at 10, 20, 30, 50 and 70% of
training; here of the training-loss curve, which is the smoother of the two). So that slopes are
comparable across tasks with different loss scales and across runs of different length, the curve is
first divided by its first value L_1, and time is measured as the fraction of training e / n. The
slope at fraction p is a central finite difference around epoch c = clip(floor(p * n + 1/2), 1, n)
(p * n rounded half up):

    e0 = max(c - 1, 1),  e1 = min(c + 1, n)
    slope_p = (L_e1 - L_e0) / L_1 / ((e1 - e0) / n)

(a one-sided difference at the ends of the curve; 0 for a one-epoch curve). A falling curve has
negative slopes; a slope near 0 means the task has stopped learning at that point of training.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

SLOPE_FRACTIONS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5, 0.7)
SLOPE_NAMES: tuple[str, ...] = tuple(f"slope_{round(p * 100)}" for p in SLOPE_FRACTIONS)
FEATURE_NAMES: tuple[str, ...] = ("plateau_epoch", *SLOPE_NAMES)


def _as_curve(losses: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    curve = np.asarray(losses, dtype=float).reshape(-1)
    if curve.size == 0:
        raise ValueError(f"{what} needs a loss curve with at least one epoch; got an empty curve")
    if not np.all(np.isfinite(curve)):
        raise ValueError(f"{what} needs finite losses; got {curve.tolist()}")
    return curve


def plateau_epoch(losses: Sequence[float] | np.ndarray, *, epsilon: float, window: int) -> int:
    """The first epoch (1-based) after which the loss improves by less than `epsilon` (relative to
    the best loss so far) over the next `window` epochs; len(losses) when it never does."""
    if not 0 < epsilon < 1:
        raise ValueError(f"epsilon must be in (0, 1); got {epsilon}")
    if window < 1:
        raise ValueError(f"window must be >= 1; got {window}")
    curve = _as_curve(losses, "plateau_epoch")
    n = len(curve)
    best = np.minimum.accumulate(curve)
    for e in range(1, n - window + 1):  # e is 1-based; epochs e+1..e+window must exist
        ahead = curve[e:e + window].min()
        ref = best[e - 1]
        if ref == 0 or (ref - ahead) / abs(ref) < epsilon:
            return e
    return n


def curve_slopes(
    losses: Sequence[float] | np.ndarray, fractions: Sequence[float] = SLOPE_FRACTIONS
) -> dict[str, float]:
    """Slopes of the normalised curve L / L_1 per fraction of training at each of `fractions`
    (keys slope_10, slope_20, ...), by the finite difference in the module docstring."""
    curve = _as_curve(losses, "curve_slopes")
    n = len(curve)
    first = curve[0] if curve[0] != 0 else 1.0
    out: dict[str, float] = {}
    for p in fractions:
        c = int(np.clip(np.floor(p * n + 0.5 + 1e-9), 1, n))  # 1e-9: 0.3 * 5 is 1.4999...
        e0, e1 = max(c - 1, 1), min(c + 1, n)
        slope = 0.0 if e1 == e0 else (curve[e1 - 1] - curve[e0 - 1]) / first / ((e1 - e0) / n)
        out[f"slope_{round(p * 100)}"] = float(slope)
    return out


def curve_features(
    train_losses: Sequence[float] | np.ndarray,
    val_losses: Sequence[float] | np.ndarray,
    *,
    epsilon: float,
    window: int,
) -> dict[str, float]:
    """The plateau epoch of the validation curve and the slopes of the training curve of one model."""
    return {"plateau_epoch": float(plateau_epoch(val_losses, epsilon=epsilon, window=window)),
            **curve_slopes(train_losses)}


def mean_curve_features(
    curves: Iterable[tuple[str, Sequence[float], Sequence[float]]],
    *,
    epsilon: float,
    window: int,
    order: Sequence[str] | None = None,
) -> list[dict[str, float | str]]:
    """Per task, `curve_features` averaged over that task's single-task models (one per seed).

    `curves` yields (task, train losses, val losses) per model, each curve in epoch order; a
    model missing either curve is skipped. Rows come in `order` (tasks not in it are left out),
    else in order of first appearance."""
    per_task: dict[str, list[dict[str, float]]] = {}
    for task, train, val in curves:
        if len(train) and len(val):
            per_task.setdefault(task, []).append(curve_features(train, val, epsilon=epsilon, window=window))
    tasks = [t for t in order if t in per_task] if order is not None else list(per_task)
    return [{"task": t, **{k: float(np.mean([f[k] for f in per_task[t]])) for k in FEATURE_NAMES}} for t in tasks]
