"""The run directory: file names, table columns, and atomic writes.

Every file is written to a temporary name in the same directory and renamed into place, so a
killed process never leaves a half-written file. Schema version 1 (DESIGN.md):

| file                 | what                                                                 |
| -------------------- | -------------------------------------------------------------------- |
| spec.json            | the resolved study spec                                              |
| study.db             | Optuna storage (SQLite) unless --storage names another               |
| candidates.json      | auxiliary candidates (the `taskscout candidates --json` objects)     |
| trials.parquet       | one row per trained model (TRIAL_COLUMNS)                            |
| curves.parquet       | learning curves (CURVE_COLUMNS)                                      |
| curve_features.csv   | per task: plateau epoch and Bingel & Sogaard slopes                  |
| affinity.csv         | source -> target gains, long format (AFFINITY_COLUMNS)               |
| depth.csv            | gain per branch layer for pairs with a real gain (DEPTH_COLUMNS)     |
| group_scores.csv     | normalised loss of a task inside a group (GROUP_SCORE_COLUMNS)       |
| agreement.csv        | cheap estimators vs measured gains (AGREEMENT_COLUMNS)               |
| rsa_layers.csv       | per-layer representation similarity of task pairs (RSA_LAYER_COLUMNS) |
| subset_observations.csv | normalised losses the subset surrogate is fitted on (SUBSET_OBSERVATION_COLUMNS) |
| compute.csv          | models, epochs and seconds per phase (COMPUTE_COLUMNS)               |
| graph.graphml        | the task-affinity graph                                              |
| recommendation.json  | groups, assignment, branch layers, auxiliaries, Pareto front         |
| verify.json          | recommended vs all-separate vs all-together on the test split        |
| report.html          | self-contained report                                                |

In trials.parquet, `tasks`, `main` and `aux` are lists of names; `val_loss`, `val_metric`,
`test_loss` and `test_metric` are JSON objects mapping a task or auxiliary name to a number
(test columns hold "{}" in search trials: the search never looks at the test split).
A group is written as its task names joined by GROUP_SEP, in the order of the study's tasks.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from taskscout.errors import MissingResultsError, SpecError

SCHEMA_VERSION = 1
GROUP_SEP = "|"

SPEC = "spec.json"
STUDY_DB = "study.db"
CANDIDATES = "candidates.json"
TRIALS = "trials.parquet"
CURVES = "curves.parquet"
CURVE_FEATURES = "curve_features.csv"
AFFINITY = "affinity.csv"
DEPTH = "depth.csv"
GROUP_SCORES = "group_scores.csv"
AGREEMENT = "agreement.csv"
RSA_LAYERS = "rsa_layers.csv"
SUBSET_OBSERVATIONS = "subset_observations.csv"
COMPUTE = "compute.csv"
GRAPH = "graph.graphml"
RECOMMENDATION = "recommendation.json"
VERIFY = "verify.json"
REPORT = "report.html"

TRIAL_COLUMNS = (
    "trial", "phase", "key", "tasks", "main", "aux", "branch_layer", "seed", "state",
    "val_loss", "val_metric", "test_loss", "test_metric", "epochs", "best_epoch", "seconds", "finished",
)
CURVE_COLUMNS = ("trial", "task", "epoch", "split", "loss")
CURVE_FEATURE_COLUMNS = ("task", "plateau_epoch", "slope_10", "slope_20", "slope_30", "slope_50", "slope_70")
AFFINITY_COLUMNS = ("source", "target", "gain", "ci_low", "ci_high", "n_seeds", "method")
DEPTH_COLUMNS = ("group", "branch_layer", "task", "gain", "ci_low", "ci_high", "n_seeds")
GROUP_SCORE_COLUMNS = ("group", "task", "norm_loss", "ci_low", "ci_high", "n_seeds", "source")
AGREEMENT_COLUMNS = ("method", "spearman", "negative_transfer_recall", "relative_compute")
RSA_LAYER_COLUMNS = ("pair", "layer", "similarity", "n")
SUBSET_OBSERVATION_COLUMNS = ("group", "task", "seed", "norm_loss")
COMPUTE_COLUMNS = ("phase", "models", "epochs", "seconds")


def group_key(tasks: Iterable[str], order: Iterable[str] | None = None) -> str:
    """The canonical name of a group: its tasks in study order (or sorted), joined by GROUP_SEP."""
    tasks = list(tasks)
    if order is not None:
        rank = {t: i for i, t in enumerate(order)}
        tasks.sort(key=lambda t: (rank.get(t, len(rank)), t))
    else:
        tasks.sort()
    return GROUP_SEP.join(tasks)


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; set it straight back
    os.umask(mask)
    return mask


def _staged(path: Path, write) -> str:
    """A temporary next to `path` holding what `write(tmp)` wrote (removed if that fails)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    # mkstemp makes the file private (0600) and the rename keeps that; other tools and users read
    # these files, so give them the mode a plain open() would have.
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        write(tmp)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    tmp = _staged(path, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _synced_bytes(data: bytes) -> Callable[[str], None]:
    """A `_staged` writer of `data`, flushed to disk before the rename."""
    def w(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return w


def write_all(files: dict[Path, bytes]) -> list[Path]:
    """Write several files as one step: each is first written whole to a temporary next to it,
    and only when all are written are they renamed into place. A failed write leaves none of
    them changed (a set of files that belong together, such as checkpoints and the metrics that
    describe them, is never half old and half new)."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, data in files.items():
            staged.append((_staged(path, _synced_bytes(data)), path))
    except BaseException:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise
    for i, (tmp, path) in enumerate(staged):
        try:
            os.replace(tmp, path)
        except BaseException:  # no temporary is left behind, even by a rename that fails
            for left, _ in staged[i:]:
                Path(left).unlink(missing_ok=True)
            raise
    return [path for _, path in staged]


def remove_temporaries(run_dir: str | Path) -> list[Path]:
    """Delete the temporary files that writers killed mid-write left in `run_dir` (the real files
    are whole: a temporary is only ever renamed into place once complete); the paths removed.

    Only while no other process writes to `run_dir` (the search holds its lock then)."""
    d = Path(run_dir)
    stale = sorted(d.glob(".*.tmp")) if d.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def write_text(path: str | Path, text: str) -> Path:
    def w(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    return _atomic(Path(path), w)


def json_text(obj: Any) -> str:
    """The text `write_json` writes."""
    return json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json_text(obj))


def write_csv(path: str | Path, frame: pd.DataFrame) -> Path:
    return _atomic(Path(path), lambda tmp: frame.to_csv(tmp, index=False))


def write_parquet(path: str | Path, frame: pd.DataFrame) -> Path:
    return _atomic(Path(path), lambda tmp: frame.to_parquet(tmp, index=False))


def write_bytes(path: str | Path, data: bytes) -> Path:
    return _atomic(Path(path), lambda tmp: Path(tmp).write_bytes(data))


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def json_safe(v: Any, digits: int = 6) -> Any:
    """`v` ready for strict JSON: NaN and inf become null, floats are rounded to `digits`, tuples
    become lists, numpy scalars Python ones, dict keys strings."""
    if isinstance(v, dict):
        return {str(k): json_safe(x, digits) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x, digits) for x in v]
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        v = v.item()
    if isinstance(v, float):
        return round(v, digits) if math.isfinite(v) else None
    return v


def _json_default(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, (set, tuple)):
        return list(v)
    raise TypeError(f"cannot write {type(v).__name__} to JSON")


def make_dirs(path: str | Path, what: str = "the run directory") -> Path | None:
    """Create directory `path` and its missing parents; the top-most directory this created
    (None when `path` existed), so a caller that fails before writing anything can remove it. A
    path that cannot be a directory (under a file, on a read-only place) is a SpecError."""
    d = Path(path)
    top = next((p for p in reversed((d, *d.parents)) if not p.exists()), None)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SpecError(f"cannot create {what} '{d}': {e.strerror or e}; give a directory you can write to") from None
    return top


def require(run_dir: str | Path, *names: str) -> Path:
    """The run directory, after checking it holds `names`; a clear error otherwise."""
    d = Path(run_dir)
    if d.exists() and not d.is_dir():
        raise MissingResultsError(f"'{d}' is a file, not a run directory; give the directory a search wrote "
                                  "(reports/NAME, or its --out)")
    if not d.is_dir():
        raise MissingResultsError(f"run directory '{d}' does not exist; run `taskscout search` first")
    missing = [n for n in names if not (d / n).exists()]
    if missing:
        raise MissingResultsError(
            f"run directory '{d}' has no {', '.join(missing)}; run `taskscout search` (again) to produce it"
        )
    return d


def check_can_create(path: str | Path, what: str = "the run directory") -> None:
    """Raise SpecError when directory `path` could not be created or written: it is a file, it
    lies under a file, or its nearest existing folder is not writable. Creates nothing."""
    import errno

    d = Path(path)
    fix = "give a directory you can write to"
    for p in (d, *d.parents):
        try:
            is_dir = p.is_dir()
            exists = is_dir or p.exists()
        except OSError as e:  # a folder on the way that may not be entered
            raise SpecError(f"cannot create {what} '{d}': {e.strerror or e}; {fix}") from None
        if not exists:
            continue
        if not is_dir:
            where = "is a file" if p == d else f"lies under '{p}', which is a file"
            raise SpecError(f"cannot create {what} '{d}': it {where}; {fix}")
        if not os.access(p, os.W_OK | os.X_OK):
            raise SpecError(f"cannot create {what} '{d}': {os.strerror(errno.EACCES)} in '{p}'; {fix}")
        return
