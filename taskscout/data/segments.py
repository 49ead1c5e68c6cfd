"""Long format: one task per (segment, target), where a segment is a value of the task column.

A long table has one row per example, a task column saying which segment (store, patient,
school) the row belongs to, and one or more target columns. `--task-column School --target
ExamScore` makes one task per school, labelled on that school's rows only; the data stage turns
the table into the wide form the rest of taskscout reads (one column per task, empty outside its
segment), with a split made per segment.

Task names. With one target a task is named by its segment value as written (`17`); with several
targets by value and target joined by a colon (`17:total_UPDRS`). Numbers are written without a
trailing `.0`. `--tasks` and `--main` name segment values (all targets of the segment) or task
names (one target). A value that would make an ambiguous name is refused: one containing `,`
(the separator of --tasks), `|` (the separator of group names) or `__` (the separator of
auxiliary task names), one containing `:` when there are several targets, two values written
alike (`1` and `1.0`), and a value equal to a column name of the table.

Segments with fewer than `min_rows` rows (default 10), and (segment, target) pairs whose target
holds one value only, are left out with a note. More than MAX_SEGMENTS segments need a selection.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from taskscout.data.targets import SPLIT_NAMES, TEST, VAL, infer_task_type, refuse_stray_text
from taskscout.errors import DataError, close_matches
from taskscout.spec import StudySpec, check_long_format

MAX_SEGMENTS = 300  # segments a study takes without --tasks naming them
SEGMENT_TARGET_SEP = ":"
_RESERVED = (",", "|", "__")  # the --tasks list, group names, auxiliary task names


@dataclass(frozen=True)
class SegmentTasks:
    """The tasks of a long table: their names, segment and target, and what was left out."""

    tasks: tuple[str, ...]  # every task of the study, in table order of segments, then targets
    main: tuple[str, ...]
    segment: dict[str, str]  # task -> segment value (as written)
    target: dict[str, str]  # task -> target column
    notes: tuple[str, ...]


def segment_label(value: object) -> str:
    """A segment value as written in task names: numbers without a trailing `.0`."""
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def task_name(segment: str, target: str, n_targets: int) -> str:
    """The name of the task of `target` on `segment` (see the module docstring)."""
    return segment if n_targets == 1 else f"{segment}{SEGMENT_TARGET_SEP}{target}"


def _labels(frame: pd.DataFrame, spec: StudySpec) -> pd.Series:
    """The segment label of every row; refuses empty cells and values that break the names."""
    col, source = spec.task_column, spec.data
    raw = frame[col]
    empty = raw.isna() | (raw.astype(str).str.strip() == "")
    if empty.any():
        raise DataError(
            f"task column {col!r} of {source} is empty in {int(empty.sum())} of {len(frame)} rows; such rows belong "
            f"to no segment and would be dropped: fill them, or drop those rows from the data"
        )
    labels = raw.map(segment_label)
    by_label = pd.Series(raw.to_numpy(), index=labels.to_numpy())
    for label, values in by_label.groupby(level=0):
        distinct = pd.unique(values.to_numpy())
        if len(distinct) > 1:
            raise DataError(f"task column {col!r} of {source} holds {distinct[0]!r} and {distinct[1]!r}, which both "
                            f"name the task {label!r}; make the segment values distinct as text")
    seps = _RESERVED + ((SEGMENT_TARGET_SEP,) if len(spec.targets) > 1 else ())
    for label in pd.unique(labels):
        bad = next((s for s in seps if s in label), None)
        if bad is not None:
            raise DataError(f"segment {label!r} of task column {col!r} contains {bad!r}, which task names use as a "
                            f"separator (see docs/guide/segments.md); rename the segment values")
        if label in frame.columns:
            raise DataError(f"segment {label!r} of task column {col!r} is also a column name of {source}, so "
                            f"--tasks {label} would be ambiguous; rename the segment or the column")
    return labels


def _check_columns(frame: pd.DataFrame, spec: StudySpec) -> None:
    col, source = spec.task_column, spec.data
    for role, names in (("task", [col]), ("target", spec.targets)):
        for c in names:
            if c not in frame.columns:
                raise DataError(f"{role} column {c!r} is not in {source}{close_matches(c, frame.columns)}; "
                                f"it has {len(frame.columns)} columns")


def _constant_targets(frame: pd.DataFrame, labels: pd.Series, spec: StudySpec) -> set[tuple[str, str]]:
    """The (segment, target) pairs whose target holds one value (or none) on the segment's rows;
    an error when a target is constant in every segment."""
    out = set()
    for target in spec.targets:
        distinct = frame[target].groupby(labels.to_numpy()).nunique()
        const = set(distinct.index[distinct < 2])
        if len(const) == len(distinct):
            raise DataError(f"target {target!r} of {spec.data} holds a single value in every segment of "
                            f"{spec.task_column!r}; a constant task cannot be learned, choose another target")
        out |= {(s, target) for s in const}
    return out


def _select(entries: tuple[str, ...], names: list[str], segment: dict[str, str], frame: pd.DataFrame,
            spec: StudySpec, role: str, left_out: set[str]) -> list[str]:
    """The task names `entries` (segment values or task names) select among `names`."""
    out: list[str] = []
    by_segment: dict[str, list[str]] = {}
    for n in names:
        by_segment.setdefault(segment[n], []).append(n)
    for e in entries:
        if e in segment:
            chosen = [e]
        elif e in by_segment:
            chosen = by_segment[e]
        elif e in left_out:
            continue  # named, but too small or constant: its note says so
        elif e in frame.columns:
            raise DataError(f"--{role} names {e!r}, a column of {spec.data}; with --task-column {spec.task_column} "
                            f"the tasks are its segment values (such as {', '.join(list(by_segment)[:3])}), "
                            f"and the targets are given with --target")
        else:
            raise DataError(f"--{role} names {e!r}, which is not a segment of task column {spec.task_column!r}"
                            f"{close_matches(e, list(by_segment))}; it has {len(by_segment)} segments")
        out += [c for c in chosen if c not in out]
    return out


def segment_tasks(frame: pd.DataFrame, spec: StudySpec) -> SegmentTasks:
    """The tasks of long table `frame` under `spec` (task_column, targets, min_rows, tasks, main).

    Raises DataError for a missing task or target column, empty task cells, segment values that
    break the naming scheme, a target constant in every segment, more than MAX_SEGMENTS segments
    without a selection, and `--tasks`/`--main` entries that are no segment or task."""
    _check_columns(frame, spec)
    labels = _labels(frame, spec)
    counts = labels.value_counts(sort=False)
    order = list(pd.unique(labels))
    small = [s for s in order if counts[s] < spec.min_rows]
    const = _constant_targets(frame, labels, spec)
    notes = []
    if small:
        shown = ", ".join(f"{s} ({counts[s]} rows)" for s in small[:10]) + (f", ... {len(small) - 10} more" if len(small) > 10 else "")
        notes.append(f"{len(small)} segments of {spec.task_column!r} have fewer than min_rows={spec.min_rows} rows "
                     f"and are left out: {shown}; lower --min-rows to keep them")
    kept = [s for s in order if s not in small]
    if len(kept) > MAX_SEGMENTS and not spec.tasks:
        raise DataError(f"task column {spec.task_column!r} of {spec.data} has {len(kept)} segments with at least "
                        f"{spec.min_rows} rows, more than {MAX_SEGMENTS} a study takes without a selection; "
                        f"name the segments with --tasks v1,v2,... or raise --min-rows")
    nt = len(spec.targets)
    names, segment, target = [], {}, {}
    dropped = []
    for s in kept:
        for t in spec.targets:
            name = task_name(s, t, nt)
            if (s, t) in const:
                dropped.append(name)
                continue
            names.append(name)
            segment[name], target[name] = s, t
    if dropped:
        notes.append(f"{len(dropped)} tasks hold a single target value on their segment's rows and are left out: "
                     + ", ".join(dropped[:10]) + (" ..." if len(dropped) > 10 else ""))
    left_out = set(small) | set(dropped) | {s for s, _ in const if all((s, t) in const for t in spec.targets)}
    tasks = _select(spec.tasks, names, segment, frame, spec, "tasks", left_out) if spec.tasks else names
    if not tasks:
        raise DataError(f"no task is left in {spec.data}: every named segment of {spec.task_column!r} is too small "
                        f"or constant (see the notes); lower --min-rows or name other segments")
    main = _select(spec.main, tasks, segment, frame, spec, "main", left_out) if spec.main and spec.main != spec.tasks else tasks
    return SegmentTasks(tuple(tasks), tuple(main or tasks), {n: segment[n] for n in tasks},
                        {n: target[n] for n in tasks}, tuple(notes))


def with_task_column(spec: StudySpec, frame: pd.DataFrame) -> StudySpec:
    """`spec` with the task column of a bundled long table filled in when the study gives targets
    but no task column (`builtin:school --target ExamScore`)."""
    if spec.task_column or not spec.targets:
        return spec
    column = frame.attrs.get("task_column")
    if not column:
        raise DataError(f"targets {list(spec.targets)} are given without a task column, and {spec.data} names none; "
                        f"long format needs --task-column COL (for a wide table name the target columns with --tasks)")
    spec = dataclasses.replace(spec, task_column=column)
    check_long_format(spec)
    return spec


@dataclass(frozen=True, eq=False)
class LongTable:
    """A long table turned wide: the frame with one column per task, the spec naming those
    columns, and what the split needs to know."""

    frame: pd.DataFrame
    spec: StudySpec
    segment_of_row: np.ndarray  # segment label of each row of `frame`
    tasks: SegmentTasks
    long_spec: StudySpec

    def split(self, times: pd.Series | None) -> np.ndarray:
        """The per-segment split (`segment_split`), checked: every task has labelled rows in every
        split."""
        split = segment_split(self.segment_of_row, self.long_spec, times)

        for name in self.tasks.tasks:
            labelled = self.frame[name].notna().to_numpy()
            for code, split_name in enumerate(SPLIT_NAMES):
                if not labelled[split == code].any():
                    seg, target = self.tasks.segment[name], self.tasks.target[name]
                    raise DataError(
                        f"segment {seg!r} of {self.long_spec.task_column!r} has no labelled {target!r} in the "
                        f"{split_name} split ({int(labelled.sum())} labelled rows in all); label more of its rows, "
                        f"leave it out of --tasks, or raise --min-rows"
                    )
        return split

    def meta(self) -> dict:
        """What the data stage records about the long format (Dataset.meta)."""
        return {"task_column": self.long_spec.task_column, "targets": list(self.long_spec.targets),
                "segment": dict(self.tasks.segment), "target": dict(self.tasks.target)}


def long_to_wide(frame: pd.DataFrame, spec: StudySpec) -> LongTable:
    """The rows of the study's segments with one column per task (the target on the task's
    segment, empty elsewhere); the task column and the targets are not inputs unless named."""
    spec = with_task_column(spec, frame)
    st = segment_tasks(frame, spec)
    labels = _labels(frame, spec)
    keep = labels.isin(set(st.segment.values())).to_numpy()
    attrs = dict(frame.attrs)
    out = frame.loc[keep].reset_index(drop=True)
    seg = labels.to_numpy()[keep]
    types = {t: spec.task_types[t] for t in spec.targets if t in spec.task_types}
    for t in spec.targets:
        if t not in types:
            types[t] = _target_type(frame[t], t, spec)
        if types[t] == "regression":
            _require_numbers(frame[t], t, spec)
    new = {name: out[st.target[name]].where(seg == st.segment[name]) for name in st.tasks}
    # the targets live on in the task columns; the task column stays (an input only when named)
    out = pd.concat([out.drop(columns=list(spec.targets)), pd.DataFrame(new)], axis=1)
    out.attrs.update(attrs)
    out.attrs["label_columns"] = [c for c in attrs.get("label_columns", ()) if c not in spec.targets]
    out.attrs["task_column"] = spec.task_column
    wide = dataclasses.replace(spec, tasks=st.tasks, main=st.main, task_column=None, targets=(),
                               task_types={n: types[st.target[n]] for n in st.tasks})
    return LongTable(out, wide, seg, st, spec)


def _target_type(values: pd.Series, target: str, spec: StudySpec) -> str:
    """A target's type, inferred on the whole column (so every segment's task has the same one)."""

    refuse_stray_text(values, name=target, source=spec.data)
    return infer_task_type(values)


def _require_numbers(values: pd.Series, target: str, spec: StudySpec) -> None:
    numeric = pd.to_numeric(values, errors="coerce")
    bad = values.notna() & numeric.isna()
    if bad.any():
        raise DataError(f"target {target!r} of {spec.data} is a regression target but holds non-numeric values such "
                        f"as {values[bad].iloc[0]!r} ({int(bad.sum())} rows); clean the column, or set its type with "
                        f"--task-type {target}=multiclass")


def segment_split(segments: np.ndarray, spec: StudySpec, times: pd.Series | None) -> np.ndarray:
    """A train/val/test split made in each segment alone: seeded by row within the segment (the
    seed and the segment's label fix it, whatever other segments the study has), or with a time
    column its latest rows are its test rows and those just before its validation rows."""

    split = np.zeros(len(segments), dtype=np.int8)
    for label in pd.unique(segments):
        rows = np.flatnonzero(segments == label)
        n = len(rows)
        n_test = max(1, int(round(n * spec.split.test)))
        n_val = max(1, int(round(n * spec.split.val)))
        if n - n_test - n_val < 1:
            raise DataError(f"segment {label!r} of {spec.task_column!r} has {n} rows: too few for train/val/test "
                            f"splits; raise --min-rows to leave it out")
        if times is not None:
            order = rows[np.argsort(times.to_numpy()[rows], kind="stable")]
        else:
            rng = np.random.default_rng([spec.seed, zlib.crc32(str(label).encode())])
            order = rows[rng.permutation(n)]
        split[order[n - n_test:]] = TEST
        split[order[n - n_test - n_val:n - n_test]] = VAL
    return split
