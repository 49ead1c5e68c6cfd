"""From a study spec to a `Dataset`: load, check, split, preprocess.

Inputs: numeric columns standardised on the training split, categorical columns one-hot
(categories seen in training), NaN inputs imputed with the training mean plus a missing-indicator
column; a text column with a different value in every row (an identifier, or dates that are not
the time column) is left out of the default inputs, with a note. Targets: NaN means unlabelled
and stays NaN; classes are coded 0..C-1; regression targets are standardised on the training
split. Splits are seeded by row, or by time when a time column is given (test = the latest rows,
validation just before).
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from taskscout.data.builtin import load_builtin
from taskscout.data.checks import (
    copied_targets,
    infinite_inputs_to_missing,
    mixed_input_note,
    nested_kind,
    read_numbers,
    refuse_infinite_target,
    refuse_mixed_target,
    refuse_nested,
    unique_feature_names,
)
from taskscout.data.segments import long_to_wide, segment_tasks, with_task_column
from taskscout.data.targets import (
    ORDINAL_MAX_LEVELS,
    SPLIT_NAMES,
    TEST,
    TRAIN,
    VAL,
    infer_task_type,
    refuse_stray_text,
    stray_text,
)
from taskscout.data.times import boundary_notes, parse_times
from taskscout.errors import DataError, close_matches
from taskscout.paths import path_problem
from taskscout.spec import StudySpec

ORDINAL_GIVEN_MAX_LEVELS = 50  # --task-type NAME=ordinal accepts at most this many levels
MAX_DATE_CATEGORIES = 20  # a text input of more dates than this is left out of the default inputs
# The metric of each task type: AUC, accuracy, or RMSE in the target's own units.
METRIC_NAMES = {"binary": "auc", "multiclass": "accuracy", "ordinal": "accuracy", "soft": "accuracy",
                "regression": "rmse"}


@dataclass(frozen=True)
class TaskInfo:
    """One target column: its type and how its values were coded."""

    name: str
    type: str  # binary | multiclass | regression | ordinal
    classes: tuple = ()  # original labels in code order (classification, ordinal)
    mean: float = 0.0  # regression: training mean and std used to standardise
    std: float = 1.0

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def metric_name(self) -> str:
        """The metric reported for this task (`training.head_metric` computes it)."""
        return METRIC_NAMES.get(self.type, "metric")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Preprocessed inputs and coded targets of one study, with their split."""

    name: str
    frame: pd.DataFrame  # the raw rows, in the order of X and Y
    X: np.ndarray  # (n, d) float32, preprocessed inputs
    feature_names: tuple[str, ...]
    feature_sources: tuple[str, ...]  # raw input column behind each feature
    inputs: tuple[str, ...]  # raw input columns
    Y: np.ndarray  # (n, T) float64 coded targets, NaN = unlabelled
    tasks: tuple[TaskInfo, ...]
    split: np.ndarray  # (n,) int8: 0 train, 1 val, 2 test
    time_column: str | None = None
    entity_column: str | None = None
    notes: tuple[str, ...] = ()  # what the data stage decided on its own, for the user to read
    left_out: tuple[str, ...] = ()  # columns it left out of the default inputs (identifiers, dates)
    meta: dict[str, Any] = field(default_factory=dict)
    times: pd.Series | None = None  # the time column as read by the data stage (numbers or datetimes)

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    def task(self, name: str) -> TaskInfo:
        return self.tasks[self.task_names.index(name)]

    def rows(self, split: str) -> np.ndarray:
        """Row indices of 'train', 'val' or 'test'."""
        return np.flatnonzero(self.split == SPLIT_NAMES.index(split))

    def features_of(self, column: str) -> tuple[int, ...]:
        """Indices of the features built from raw input column `column`."""
        return tuple(i for i, s in enumerate(self.feature_sources) if s == column)

    def labelled(self, task: str) -> dict[str, int]:
        y = self.Y[:, self.task_names.index(task)]
        return {s: int(np.isfinite(y[self.split == k]).sum()) for k, s in enumerate(SPLIT_NAMES)}


# ---------------------------------------------------------------- loading


PARQUET_SUFFIXES = (".parquet", ".pq")


def _read_csv(path: Path, source: str) -> pd.DataFrame:
    with path.open("rb") as fh:
        head = fh.read(65536)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or (len(head) > 3 and head[1::2].count(0) > 0.9 * len(head[1::2])):
        raise DataError(f"'{source}' is UTF-16 text; save it as a UTF-8 CSV (or as Parquet)")
    if b"\x00" in head:
        raise DataError(f"'{source}' is a binary file, not a CSV text file; give a UTF-8 CSV or a .parquet file")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            # pandas skips blank lines before the header, so the header is the first non-blank row
            rows = [row for row in itertools.islice(csv.reader(fh), 12) if row]
        if not rows:
            raise DataError(f"'{source}' is empty: expected a CSV file with a header row and data rows")
        if len(rows[0]) <= 2 and rows[0][0].lower().startswith("sep=") and not any(rows[0][1:]):
            raise DataError(f"'{source}' starts with Excel's {','.join(rows[0])!r} line; delete that first line, so "
                            f"that the header row comes first (or save the sheet as a plain comma-separated CSV)")
        if len(rows[0]) == 1:
            _refuse_one_field_header(rows, source)
        _require_unique(rows[0], source)
        return pd.read_csv(path, encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(
            f"'{source}' is not UTF-8 text (byte {e.object[e.start]:#04x} at position {e.start}); "
            f"save it as a UTF-8 CSV or as Parquet"
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"'{source}' is empty: expected a CSV file with a header row and data rows") from None
    except (pd.errors.ParserError, csv.Error) as e:
        raise DataError(f"cannot read '{source}' as CSV: {str(e).strip().splitlines()[0]}") from None


def _refuse_one_field_header(rows: list[list[str]], source: str) -> None:
    """DataError for the usual reasons a CSV header has a single field: a title line above the
    header, or fields separated by something other than commas."""
    first = rows[0][0]
    wider = [len(r) for r in rows[1:] if len(r) > 1]
    if wider:
        raise DataError(f"the first line of '{source}' ({first[:40]!r}) has 1 field but the lines below it have "
                        f"{max(wider)}: it looks like a title; delete the line(s) above the header row")
    for sep, label in ((";", "semicolons"), ("\t", "tabs"), ("|", "'|'")):
        if sep in first:
            raise DataError(f"'{source}' has a single column named {first[:40]!r}: its fields look separated by {label}, "
                            f"not commas; save it as a comma-separated CSV (or as Parquet)")


def _read_parquet(path: Path, source: str) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # pandas cannot even load a Parquet file with repeated column names, so look at the schema first
        _require_unique(pq.read_schema(path).names, source)
        frame = pd.read_parquet(path)
    except (pa.ArrowException, ValueError) as e:
        raise DataError(f"cannot read '{source}' as Parquet: {str(e).strip().splitlines()[0]}") from None
    # A named index (df.set_index("id").to_parquet(...)) is a column to the user; an unnamed one
    # (the row numbers left by a filter) is not.
    named = [n for n in frame.index.names if n is not None and n not in frame.columns]
    return frame.reset_index(level=named) if named else frame


def _require_unique(names: list, source: str) -> None:
    seen: set[str] = set()
    for name in (str(n) for n in names):
        if name in seen:
            raise DataError(
                f"column name {name!r} appears more than once in '{source}'; column names must be unique, rename one of them"
            )
        seen.add(name)


def load_frame(source: str, options: dict[str, Any] | None = None) -> pd.DataFrame:
    """The raw table behind `source`: a CSV or Parquet path, or `builtin:NAME`.

    Column names come back as strings, exactly as written in the file. Raises DataError for a
    missing, unreadable or empty file and for repeated column names.
    """
    if source.startswith("builtin:"):
        return load_builtin(source.split(":", 1)[1], options)
    if options:
        raise DataError(f"data_options are only for builtin data sets; '{source}' is a file")
    path = Path(source)
    problem = path_problem(path)
    if problem is not None:
        raise DataError(f"data file '{source}' {problem}; give a CSV or Parquet path or builtin:NAME")
    if path.is_dir():
        raise DataError(f"'{source}' is a directory; give a CSV or Parquet file")
    if path.suffix.lower() in (".xlsx", ".xlsm", ".xls", ".ods"):
        raise DataError(f"'{source}' is an Excel workbook (a spreadsheet), not a table file; save the sheet as CSV "
                        f"(UTF-8) or as Parquet")
    try:
        if path.suffix.lower() in PARQUET_SUFFIXES:
            frame = _read_parquet(path, source)
        else:
            frame = _read_csv(path, source)
    except OSError as e:
        raise DataError(f"cannot read '{source}': {e.strerror or e}") from None
    _require_unique(list(frame.columns), source)
    if len(frame) == 0:
        raise DataError(f"'{source}' has column names but no data rows")
    frame.columns = [str(c) for c in frame.columns]
    return frame


# ---------------------------------------------------------------- targets


def refuse_identifier_task(values: pd.Series, *, name: str, source: str = "the data") -> None:
    """Raise DataError when most labelled rows of a text task hold a value no other row has (an
    identifier, a free-text field): a class seen once can be neither learned nor evaluated."""
    counts = values.dropna().value_counts()
    once = int(counts[counts == 1].sum())
    if once > 0.5 * int(counts.sum()):
        raise DataError(
            f"column {name!r} of {source} looks like an identifier, not a class label: {once} of its "
            f"{int(counts.sum())} labelled rows hold a value no other row has; drop it from the tasks, "
            f"or group its values into fewer classes"
        )


def encode_target(
    values: pd.Series, kind: str, train_mask: np.ndarray, *, name: str, source: str = "the data"
) -> tuple[np.ndarray, TaskInfo]:
    """Code one target column: classes to 0..C-1, regression standardised on training rows."""
    labelled = values.notna().to_numpy()
    if not labelled.any():
        raise DataError(f"column {name!r} of {source} is a task but has no labelled rows")
    if kind == "regression":
        numeric = pd.to_numeric(values, errors="coerce")
        bad = labelled & numeric.isna().to_numpy()
        if bad.any():
            example = values[bad].iloc[0]
            raise DataError(
                f"column {name!r} of {source} is a regression task but holds non-numeric values such as {example!r}; "
                f"set its type to binary or multiclass, or clean the column"
            )
        y = numeric.to_numpy(dtype=float)
        train = y[train_mask & labelled]
        if len(train) == 0:
            raise DataError(f"column {name!r} of {source} is a task but has no labelled rows in the training split")
        mean, std = float(np.mean(train)), float(np.std(train))
        if std == 0.0:
            raise DataError(
                f"column {name!r} of {source} is constant ({float(train[0])!r}) in the training split; "
                f"a constant task cannot be learned, drop it from the tasks"
            )
        return (y - mean) / std, TaskInfo(name, kind, (), mean, std)
    classes = sorted({_plain(v) for v in values.dropna()}, key=lambda v: (str(type(v)), v))
    if len(classes) < 2:
        need = "a binary task needs two classes" if kind == "binary" else "a task with one value cannot be learned"
        raise DataError(f"column {name!r} of {source} has only one class ({classes[0]!r}); {need}")
    if kind == "binary" and len(classes) != 2:
        raise DataError(f"column {name!r} of {source} is binary but has {len(classes)} classes; set its type to multiclass or ordinal")
    if kind == "ordinal" and len(classes) > ORDINAL_GIVEN_MAX_LEVELS:
        raise DataError(
            f"column {name!r} of {source} is ordinal but has {len(classes)} levels (at most {ORDINAL_GIVEN_MAX_LEVELS}: "
            f"an ordinal task is a few ordered grades, one output per level); set its type to regression"
        )
    lookup = {c: i for i, c in enumerate(classes)}
    y = np.array([lookup[_plain(v)] if pd.notna(v) else np.nan for v in values], dtype=float)
    return y, TaskInfo(name, kind, tuple(classes))


def _plain(v: Any) -> Any:
    """A Python scalar for a label; whole-number floats become ints (CSV reads 0/1 with NaN as 0.0/1.0)."""
    v = v.item() if hasattr(v, "item") else v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


# ---------------------------------------------------------------- splits


def make_split(frame: pd.DataFrame, spec: StudySpec, times: pd.Series | None) -> np.ndarray:
    n = len(frame)
    n_test = max(1, int(round(n * spec.split.test)))
    n_val = max(1, int(round(n * spec.split.val)))
    if n - n_test - n_val < 2:
        raise DataError(f"the data has only {n} rows: too few for train/val/test splits")
    if times is not None:
        order = np.argsort(times.to_numpy(), kind="stable")
    else:
        order = np.random.default_rng(spec.seed).permutation(n)
    split = np.zeros(n, dtype=np.int8)
    split[order[n - n_test:]] = TEST
    split[order[n - n_test - n_val:n - n_test]] = VAL
    return split


# ---------------------------------------------------------------- inputs


def _preprocess_inputs(frame: pd.DataFrame, inputs: tuple[str, ...], train: np.ndarray, *, named: bool = False):
    """(X, feature names, feature sources, notes): numbers standardised with a missing indicator,
    text one-hot over the training categories. `named`: the user listed the inputs (no note on
    a text input's many categories, only on one that mixes numbers and text)."""
    cols: list[np.ndarray] = []
    names: list[str] = []
    sources: list[str] = []
    notes: list[str] = []
    for c in inputs:
        s = frame[c]
        if pd.api.types.is_bool_dtype(s):
            s = s.astype(float)
        if pd.api.types.is_numeric_dtype(s):
            v = s.to_numpy(dtype=float)
            missing = ~np.isfinite(v)
            tr = v[train & ~missing]
            mean = float(tr.mean()) if len(tr) else 0.0
            std = float(tr.std()) if len(tr) else 1.0
            std = std if std > 0 else 1.0
            z = np.where(missing, 0.0, (v - mean) / std)
            cols.append(z)
            names.append(c)
            sources.append(c)
            if missing.any():
                cols.append(missing.astype(float))
                names.append(f"{c}__missing")
                sources.append(c)
        else:
            cats = sorted({str(v) for v in s[train].dropna()})
            as_str = s.map(lambda v: str(v) if pd.notna(v) else None)
            for cat in cats:
                cols.append((as_str == cat).to_numpy(dtype=float))
                names.append(f"{c}={cat}")
                sources.append(c)
            if s.isna().any():
                cols.append(s.isna().to_numpy(dtype=float))
                names.append(f"{c}__missing")
                sources.append(c)
            notes += [n for n in [mixed_input_note(s, c, len(cats), only_mixed=named)] if n]
    names, renamed = unique_feature_names(names)
    X = np.stack(cols, axis=1).astype(np.float32) if cols else np.zeros((len(frame), 0), np.float32)
    return X, tuple(names), tuple(sources), notes + renamed


# ---------------------------------------------------------------- the whole stage


# The flag and the study-file key behind each role, for names a comma-separated flag cannot carry.
_ROLE_KEYS = {"task": ("--tasks", "tasks"), "input": ("--inputs", "inputs"),
              "adversarial": ("--adversarial", "aux.adversarial")}


def _require_columns(frame: pd.DataFrame, names, role: str, source: str) -> None:
    for c in names:
        if c not in frame.columns:
            hint = close_matches(c, frame.columns)
            odd = [m for m in frame.columns if m in hint and ("," in m or m != m.strip())]
            if odd and role in _ROLE_KEYS:
                flag, key = _ROLE_KEYS[role]
                listed = ", ".join(json.dumps(m) for m in odd)
                hint += (f"; {flag} cannot carry a name with a comma or surrounding spaces: list it in the study "
                         f"file ({key.split('.')[-1]} = [{listed}]) or with --set '{key}=[{listed}]'")
            raise DataError(f"{role} column {c!r} is not in {source}{hint}; it has {len(frame.columns)} columns")


def default_inputs(frame: pd.DataFrame, spec: StudySpec) -> tuple[str, ...]:
    """Every column that is not a task, the time or entity column, an adversarial or smoothing
    source, nor (for builtins) another label column or the data set's time column."""
    excluded = set(spec.tasks) | set(spec.aux.adversarial) | set(frame.attrs.get("label_columns", ()))
    excluded |= {c for c in (spec.time_column, spec.entity_column, spec.aux.smooth_source) if c}
    if frame.attrs.get("time_column"):
        excluded.add(frame.attrs["time_column"])
    if frame.attrs.get("task_column") and frame.attrs["task_column"] not in (spec.inputs or ()):
        excluded.add(frame.attrs["task_column"])  # long format: the segment is not an input unless named
    return tuple(c for c in frame.columns if c not in excluded)


def identifier_columns(frame: pd.DataFrame, columns: Iterable[str]) -> tuple[str, ...]:
    """The text columns of `columns` that one-hot coding would turn into noise: a different value
    in every non-empty row (at least two), or dates (more than MAX_DATE_CATEGORIES of them).

    One-hot coding gives such a column about one feature per training row (per date), on in those
    rows alone and off in most validation and test rows: a model can only memorise it, and its
    size grows with the rows. Identifiers and dates are the usual cases.
    """
    out = []
    for c in columns:
        s = frame[c]
        if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            continue
        present = s.dropna()
        distinct = present.nunique()
        if len(present) > 1 and distinct == len(present):
            out.append(c)
        elif distinct > MAX_DATE_CATEGORIES and _looks_like_dates(present):
            out.append(c)
    return tuple(out)


def _looks_like_dates(present: pd.Series) -> bool:
    if pd.api.types.is_datetime64_any_dtype(present):
        return True
    sample = present.iloc[:100].astype(str)  # enough to tell dates from other text, fast on any size
    # A date has parts (2024-01-31, 31/01/2024, Jan 31 2024): codes of digits alone, such as zip
    # codes "02100", parse as dates too but are not.
    parts = sample.str.contains(r"[-/:\s]|[A-Za-z]", regex=True).all()
    return bool(parts and pd.to_datetime(sample, errors="coerce", format="mixed", utc=True).notna().all())


def _left_out_note(frame: pd.DataFrame, column: str) -> str:
    present = frame[column].dropna()
    keep = "name it in --inputs to keep it as a one-hot input"
    fix = f"give it as --time-column if it orders the rows, or {keep}" if _looks_like_dates(present) else keep
    distinct, rows = present.nunique(), len(present)
    counts = f"{distinct} distinct values in {rows} non-empty rows"
    what, per = (f"a different value in every row ({counts})", "row") if distinct == rows else (f"dates ({counts})", "date")
    return (
        f"input column {column!r} left out: {what}, so one-hot coding would give a feature per {per} "
        f"that nothing else shares; {fix}"
    )


def build_dataset(spec: StudySpec, frame: pd.DataFrame | None = None) -> Dataset:
    """Load (unless `frame` is given), check and preprocess the data of `spec`."""
    source = spec.data
    if frame is None:
        frame = load_frame(source, spec.data_options)
    attrs = dict(frame.attrs)
    frame = frame.reset_index(drop=True)
    frame.attrs.update(attrs)
    frame, spec, long = _long_format(frame, spec)
    _check_named_columns(frame, spec, source)
    used = [*spec.tasks, *(spec.inputs if spec.inputs is not None else default_inputs(frame, spec)),
            *spec.aux.adversarial, *([spec.aux.smooth_source] if spec.aux.smooth_source else [])]
    notes = read_numbers(frame, dict.fromkeys(used), source)
    inputs, left_out, input_notes = _choose_inputs(frame, spec, source)
    notes = input_notes + notes

    times, time_notes = parse_times(frame[spec.time_column], spec.time_column, source) if spec.time_column else (None, ())
    split = long.split(times) if long else make_split(frame, spec, times)
    if times is not None:
        time_notes += boundary_notes(times, split, spec.time_column)
    train = split == TRAIN
    encoded = [_encode_task(frame, spec, name, split, source) for name in spec.tasks]
    Y = np.stack([y for y, _ in encoded], axis=1) if encoded else np.empty((len(frame), 0))

    # A number column with a few text cells ("n/a", "about 3") is numbers: the text cells count as
    # missing (one-hot coding it would make a category of every number).
    for c in inputs:
        stray = stray_text(frame[c])
        if stray is not None:
            frame[c] = pd.to_numeric(frame[c], errors="coerce")
            notes.append(f"input column {c!r} holds numbers except {len(stray)} text cells such as {stray.iloc[0]!r}: "
                         f"those count as missing values")
    notes += infinite_inputs_to_missing(frame, inputs)
    notes += copied_targets(frame, spec.tasks, inputs)
    X, names, sources, feature_notes = _preprocess_inputs(frame, tuple(inputs), train, named=spec.inputs is not None)
    return Dataset(
        name=spec.name, frame=frame, X=X, feature_names=names, feature_sources=sources, inputs=tuple(inputs),
        Y=Y, tasks=tuple(info for _, info in encoded), split=split, time_column=spec.time_column,
        entity_column=spec.entity_column,
        notes=(*notes, *time_notes, *feature_notes, *_unused_time_column_note(frame, spec),
               *(long.tasks.notes if long else ())),
        left_out=left_out, times=times, meta=long.meta() if long else {},
    )


def _check_named_columns(frame: pd.DataFrame, spec: StudySpec, source: str) -> None:
    """Every column the study names exists; none that must hold plain values holds lists."""
    _require_columns(frame, spec.tasks, "task", source)
    _require_columns(frame, spec.inputs or (), "input", source)
    _require_columns(frame, [c for c in (spec.time_column, spec.entity_column) if c], "time/entity", source)
    _require_columns(frame, spec.aux.adversarial, "adversarial", source)
    _require_columns(frame, [spec.aux.smooth_source] if spec.aux.smooth_source else [], "smooth-source", source)
    refuse_nested(frame, spec.tasks, "task", source)
    refuse_nested(frame, spec.inputs or (), "input", source)
    refuse_nested(frame, [c for c in (spec.time_column, spec.entity_column) if c], "time/entity", source)
    refuse_nested(frame, spec.aux.adversarial, "adversarial", source)


def _choose_inputs(frame: pd.DataFrame, spec: StudySpec, source: str) -> tuple[tuple[str, ...], tuple[str, ...], list[str]]:
    """(inputs, columns left out of the default inputs, notes on them)."""
    left_out: tuple[str, ...] = ()
    notes: list[str] = []
    if spec.inputs is not None:
        inputs = tuple(spec.inputs)
    else:
        inputs = default_inputs(frame, spec)
        nested = tuple(c for c in inputs if nested_kind(frame[c]))
        inputs = tuple(c for c in inputs if c not in nested)
        identifiers = identifier_columns(frame, inputs)
        inputs = tuple(c for c in inputs if c not in identifiers)
        left_out = identifiers + nested
        notes = [_left_out_note(frame, c) for c in identifiers]
        notes += [f"input column {c!r} left out: its cells hold {nested_kind(frame[c])}, not one value each; "
                  f"flatten it into plain columns to use it" for c in nested]
    overlap = set(inputs) & set(spec.tasks)
    if overlap:
        raise DataError(f"column {sorted(overlap)[0]!r} is both an input and a task; a target cannot be its own input")
    if not inputs:
        also = "".join(f"; {c!r} was left out (an identifier, dates or nested values)" for c in left_out)
        raise DataError(f"{source} has no input columns left after removing the tasks{also}; name inputs with --inputs")
    return inputs, left_out, notes


def _encode_task(frame: pd.DataFrame, spec: StudySpec, name: str, split: np.ndarray, source: str) -> tuple[np.ndarray, TaskInfo]:
    """The coded column of task `name` and its TaskInfo, after the checks that refuse it."""
    values = frame[name]
    refuse_infinite_target(values, name=name, source=source)
    observed = values.dropna().unique()
    given = name in spec.task_types
    if not given and len(observed) == 1:
        raise DataError(
            f"column {name!r} of {source} is constant (every labelled row holds {_plain(observed[0])!r}); "
            f"a constant task cannot be learned, drop it from the tasks"
        )
    if not given:
        refuse_stray_text(values, name=name, source=source)
    kind = spec.task_types.get(name) or infer_task_type(values)
    if not given and kind == "multiclass":
        refuse_mixed_target(values, name=name, source=source, max_levels=ORDINAL_MAX_LEVELS)
        refuse_identifier_task(values, name=name, source=source)
    train = split == TRAIN
    y, info = encode_target(values, kind, train, name=name, source=source)
    for s, split_name in enumerate(SPLIT_NAMES):
        if not np.isfinite(y[split == s]).any():
            raise DataError(
                f"column {name!r} of {source} is a task but has no labelled rows in the {split_name} split; "
                f"label more rows or drop the task"
            )
    if kind == "binary" and len(np.unique(y[train & np.isfinite(y)])) < 2:
        seen = info.classes[int(np.nanmax(y[train]))]
        raise DataError(
            f"column {name!r} of {source} is a binary task but its training split holds only the class {seen!r}; "
            f"label more rows of the other class or drop the task"
        )
    return y, info


def resolve_segments(spec: StudySpec, frame: pd.DataFrame | None = None) -> StudySpec:
    """`spec` with its task column (a bundled table's own when not given) and with its tasks and
    main tasks named as tasks (segment values expanded to the tasks of their targets); unchanged
    for a wide table. Applying it again changes nothing."""
    if not spec.task_column and not spec.targets:
        return spec
    if frame is None:
        frame = load_frame(spec.data, spec.data_options)
    spec = with_task_column(spec, frame)
    st = segment_tasks(frame, spec)
    return dataclasses.replace(spec, tasks=st.tasks, main=st.main)


def _long_format(frame: pd.DataFrame, spec: StudySpec) -> tuple[pd.DataFrame, StudySpec, Any]:
    """A long table (a task column and targets, see data/segments.py) as the wide table of its
    tasks, the spec naming them and the `LongTable` that splits it per segment; a wide table as it
    is, with None."""
    if not (spec.task_column or spec.targets):
        return frame, spec, None
    long = long_to_wide(frame, spec)
    return long.frame, long.spec, long


def _unused_time_column_note(frame: pd.DataFrame, spec: StudySpec) -> tuple[str, ...]:
    """A note when a bundled data set's time column is left unused (not an input, no time split)."""
    column = frame.attrs.get("time_column")
    if not column or spec.time_column or (spec.inputs and column in spec.inputs):
        return ()
    return (f"time column {column!r} of {spec.data} is left out of the inputs and the split is random by row; "
            f"give --time-column {column} to split by time (and allow future-as-target auxiliaries)",)


def summarize(ds: Dataset) -> dict[str, Any]:
    """Rows, inputs, per task: type, labelled rows per split, class balance; the data stage's notes."""
    tasks = {}
    for k, t in enumerate(ds.tasks):
        y = ds.Y[:, k]
        entry: dict[str, Any] = {"type": t.type, "labelled": ds.labelled(t.name)}
        if t.classes:
            lab = y[np.isfinite(y)].astype(int)
            counts = np.bincount(lab, minlength=t.n_classes)
            entry["balance"] = {str(c): round(float(n) / max(1, len(lab)), 3) for c, n in zip(t.classes, counts, strict=True)}
        else:
            entry["mean"], entry["std"] = round(t.mean, 4), round(t.std, 4)
        tasks[t.name] = entry
    return {
        "rows": len(ds.frame),
        "split_rows": {s: int((ds.split == k).sum()) for k, s in enumerate(SPLIT_NAMES)},
        "inputs": len(ds.inputs),
        "features": len(ds.feature_names),
        "tasks": tasks,
        "notes": list(ds.notes),
    }
