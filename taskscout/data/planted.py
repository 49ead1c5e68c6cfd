"""`builtin:planted`: tasks with known groups, for testing that taskscout recovers them.

Each group g owns a random orthonormal block of latent directions W_g (d x r) in input space,
mutually orthogonal across groups. Task t of group g is a fixed random non-linear read-out of
z_g = X W_g: `shared` of it (as a correlation) is a read-out common to the whole group, the rest
its own, so tasks inside a group share what is worth learning, and tasks of different groups
share nothing. (With `shared = 0` the read-outs of a group are unrelated functions of the same
directions; a partner's labels then barely help and often interfere.) Labels are sparse (each task is labelled on a random `label_fraction` of rows), so a
task learns its group's directions faster with the help of its partners' labels. With
`groups = 0` every task gets its own directions: a data set with no structure at all.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def planted_frame(
    *,
    n_rows: int = 2400,
    n_inputs: int = 48,
    groups: int = 3,
    tasks_per_group: int = 3,
    independent_tasks: int = 0,
    latent_dim: int = 2,
    label_fraction: float = 0.25,
    noise: float = 0.1,
    shared: float = 0.9,
    classification: bool = True,
    seed: int = 0,
) -> pd.DataFrame:
    """A frame with inputs `x0..` and tasks `g{group}_t{i}` (or `ind_t{i}` for independent tasks).

    With `classification`, every second task of a group (t1, t3, ...) is binary (thresholded
    read-out); the others are regression. With `groups = 0` there are `independent_tasks` tasks
    (or `tasks_per_group` when that is 0), each on its own directions. The true group of each task
    is in `planted_groups(frame)`. Raises ValueError for an impossible parameter.
    """
    _check_options(n_rows=n_rows, n_inputs=n_inputs, groups=groups, tasks_per_group=tasks_per_group,
                   independent_tasks=independent_tasks, latent_dim=latent_dim, label_fraction=label_fraction,
                   noise=noise, shared=shared, classification=classification, seed=seed)
    rng = np.random.default_rng(seed)
    blocks = groups + independent_tasks if groups > 0 else independent_tasks or tasks_per_group
    needed = blocks * latent_dim
    if needed > n_inputs:
        raise ValueError(f"n_inputs={n_inputs} is too small for {blocks} blocks of {latent_dim} directions")
    basis, _ = np.linalg.qr(rng.normal(size=(n_inputs, needed)))
    x = rng.normal(size=(n_rows, n_inputs))
    columns: dict[str, np.ndarray] = {f"x{i}": x[:, i] for i in range(n_inputs)}

    def function(z: np.ndarray) -> np.ndarray:
        a = rng.normal(size=z.shape[1])
        b = rng.normal(size=z.shape[1])
        h = np.tanh(z @ a) + 0.5 * (z @ b) ** 2 / z.shape[1] + 0.5 * z @ b
        return (h - h.mean()) / h.std()

    common: dict[int, np.ndarray] = {}

    def readout(z: np.ndarray, block: int, binary: bool) -> np.ndarray:
        h = function(z)
        if shared > 0:  # drawn only when used, so shared = 0 gives the same frame as before
            if block not in common:
                common[block] = function(z)
            h = shared * common[block] + np.sqrt(1 - shared**2) * h
            h = (h - h.mean()) / h.std()
        h = h + noise * rng.normal(size=len(h))
        if binary:
            return (h > 0).astype(float)
        return h

    def sparse(y: np.ndarray) -> np.ndarray:
        y = y.copy()
        y[rng.random(len(y)) >= label_fraction] = np.nan
        return y

    # (name, latent block, position inside its group): position 1, 3, ... is binary
    specs: list[tuple[str, int, int]] = []
    if groups > 0:
        specs += [(f"g{g}_t{i}", g, i) for g in range(groups) for i in range(tasks_per_group)]
        specs += [(f"ind_t{i}", groups + i, i) for i in range(independent_tasks)]
    else:
        specs += [(f"ind_t{i}", i, i) for i in range(blocks)]
    for name, block, position in specs:
        z = x @ basis[:, block * latent_dim:(block + 1) * latent_dim] * 2.0
        columns[name] = sparse(readout(z, block, binary=classification and position % 2 == 1))
    return pd.DataFrame(columns)


def planted_segments(*, rows_per_segment: int = 500, label_fraction: float = 1.0, classification: bool = True,
                     seed: int = 0, groups: int = 3, tasks_per_group: int = 3, independent_tasks: int = 0,
                     **options: object) -> pd.DataFrame:
    """The planted tasks of `planted_frame` as segments of one long table: `rows_per_segment` rows
    per task, a column `segment` naming the task, and one target `y` (all binary with
    `classification`, else all regression), labelled on `label_fraction` of each segment's rows.
    Segments of one planted group share what is worth learning; segments of different groups
    share nothing. Other options (n_inputs, latent_dim, noise, shared) as in `planted_frame`."""
    _check_options(n_rows=10, n_inputs=options.get("n_inputs", 48), groups=groups, tasks_per_group=tasks_per_group,
                   independent_tasks=independent_tasks, latent_dim=options.get("latent_dim", 2),
                   label_fraction=label_fraction, noise=options.get("noise", 0.1), shared=options.get("shared", 0.9),
                   classification=classification, seed=seed, rows_per_segment=rows_per_segment)
    counts = {"groups": groups, "tasks_per_group": tasks_per_group, "independent_tasks": independent_tasks}
    wide = planted_frame(n_rows=rows_per_segment * _n_tasks(counts), label_fraction=1.0, classification=False,
                         seed=seed, **counts, **options)  # type: ignore[arg-type]
    tasks = [c for c in wide.columns if not c.startswith("x")]
    inputs = [c for c in wide.columns if c.startswith("x")]
    rng = np.random.default_rng([seed, 1])
    parts = []
    for i, task in enumerate(tasks):
        block = wide.iloc[i * rows_per_segment:(i + 1) * rows_per_segment]
        y = block[task].to_numpy(dtype=float).copy()
        y = (y > 0).astype(float) if classification else y
        y[rng.random(len(y)) >= label_fraction] = np.nan
        parts.append(pd.DataFrame({**{c: block[c].to_numpy() for c in inputs}, "segment": task, "y": y}))
    return pd.concat(parts, ignore_index=True)


def _n_tasks(options: dict) -> int:
    groups, per, ind = int(options["groups"]), int(options["tasks_per_group"]), int(options["independent_tasks"])
    return groups * per + ind if groups > 0 else ind or per


def _check_options(**options: object) -> None:
    ints = {"n_rows": 10, "n_inputs": 1, "groups": 0, "tasks_per_group": 1, "independent_tasks": 0,
            "latent_dim": 1, "seed": 0, "rows_per_segment": 10}
    for key, low in ints.items():
        if key not in options:
            continue
        v = options[key]
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < low:
            raise ValueError(f"{key} must be an int >= {low}. Got {v!r} instead.")
    fraction = options["label_fraction"]
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 < fraction <= 1:
        raise ValueError(f"label_fraction must be a number in (0, 1]. Got {fraction!r} instead.")
    noise = options["noise"]
    if not isinstance(noise, (int, float)) or isinstance(noise, bool) or not 0 <= noise < 100:
        raise ValueError(f"noise must be a number in [0, 100). Got {noise!r} instead.")
    share = options["shared"]
    if not isinstance(share, (int, float)) or isinstance(share, bool) or not 0 <= share <= 1:
        raise ValueError(f"shared must be a number in [0, 1]. Got {share!r} instead.")
    if not isinstance(options["classification"], bool):
        raise ValueError(f"classification must be true or false. Got {options['classification']!r} instead.")


def planted_groups(frame: pd.DataFrame) -> dict[str, str]:
    """The true group label of each planted task column (independent tasks each alone); for a long
    table (`long_format`), of each segment."""
    out = {}
    for c in (pd.unique(frame["segment"]) if "segment" in frame.columns else frame.columns):
        if c.startswith("g") and "_t" in c:
            out[c] = c.split("_t")[0]
        elif c.startswith("ind_t"):
            out[c] = c
    return out
