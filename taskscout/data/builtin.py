"""Bundled data sets usable as `builtin:NAME`.

Each comes from a package that ships its file, or from a generator in taskscout; nothing is
downloaded. A data set registers a loader that takes its options (from `[data_options]`) and
returns a frame, plus the tasks a study would name by default.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from taskscout.data.planted import planted_frame, planted_segments
from taskscout.errors import DataError, close_matches


@dataclass(frozen=True)
class BuiltinDataset:
    name: str
    description: str
    tasks: tuple[str, ...]
    package: str | None  # the package that bundles it (None: generated)
    load: Callable[..., pd.DataFrame]
    time_column: str | None = None
    label_prefixes: tuple[str, ...] = ()  # every column starting with one of them is a label
    task_column: str | None = None  # long format: the column naming each row's segment (then `tasks` are targets)
    source: str = ""  # where the data comes from, and its licence

    def label_columns(self, frame: pd.DataFrame) -> list[str]:
        """Every label column of `frame`: never an input, even when a study does not name it as a task."""
        if not self.label_prefixes:
            return [c for c in self.tasks if c in frame.columns]
        return [c for c in frame.columns if str(c).startswith(self.label_prefixes)]


BUILTINS: dict[str, BuiltinDataset] = {}


def register(ds: BuiltinDataset) -> BuiltinDataset:
    """Make `ds` available as `builtin:NAME` (and in `taskscout datasets`)."""
    BUILTINS[ds.name] = ds
    return ds


def _require(package: str, name: str) -> Any:
    try:
        return importlib.import_module(package)
    except ImportError:
        raise DataError(
            f"builtin:{name} needs the package '{package}'; install it with "
            f"pip install 'taskscout[datasets]'"
        ) from None


def _no_options(name: str, options: dict[str, Any]) -> None:
    if options:
        raise DataError(f"builtin:{name} takes no data_options; got {sorted(options)}")


def _load_yeast(**options: Any) -> pd.DataFrame:
    _no_options("yeast", options)
    datasets = _require("river.datasets", "yeast")
    frame = pd.read_csv(datasets.Yeast().path)
    for c in frame.columns:
        if c.startswith("Class"):
            frame[c] = frame[c].map(
                lambda v: float(v in (True, 1, "1", "TRUE", "True", "true")) if pd.notna(v) else float("nan")
            )
    return frame


def _load_seattle(**options: Any) -> pd.DataFrame:
    _no_options("seattle-weather", options)
    vega = _require("vega_datasets", "seattle-weather")
    frame = vega.data.seattle_weather()
    frame["date"] = pd.to_datetime(frame["date"]).dt.strftime("%Y-%m-%d")
    return frame


_PLANTED_OPTIONS = {
    "n_rows", "n_inputs", "groups", "tasks_per_group", "independent_tasks", "latent_dim",
    "label_fraction", "noise", "shared", "classification", "seed", "long_format", "rows_per_segment",
}


def _load_planted(**options: Any) -> pd.DataFrame:
    unknown = sorted(set(options) - _PLANTED_OPTIONS)
    if unknown:
        raise DataError(
            f"builtin:planted has no option {unknown[0]!r}{close_matches(unknown[0], _PLANTED_OPTIONS)}; "
            f"allowed: {', '.join(sorted(_PLANTED_OPTIONS))}"
        )
    options = dict(options)
    long_format = options.pop("long_format", False)
    try:
        if not isinstance(long_format, bool):
            raise ValueError(f"long_format must be true or false. Got {long_format!r} instead.")
        if long_format:  # one target 'y' per segment of the column 'segment'
            frame = planted_segments(**{k: v for k, v in options.items() if k != "n_rows"})
            frame.attrs["task_column"] = "segment"
            return frame
        if "rows_per_segment" in options:
            raise ValueError("rows_per_segment is an option of the long format only (long_format = true).")
        return planted_frame(**options)
    except (TypeError, ValueError) as e:
        raise DataError(f"builtin:planted: {e} Set it in [data_options] or with --option KEY=VALUE.") from None


def _load_vendored(name: str, categories: tuple[str, ...], options: dict[str, Any]) -> pd.DataFrame:
    """A table shipped inside taskscout (taskscout/data/files/NAME.csv.gz); integer codes of the
    `categories` columns become text, so they are one-hot inputs rather than quantities."""
    from importlib import resources

    _no_options(name, options)
    with resources.files("taskscout.data").joinpath(f"files/{name}.csv.gz").open("rb") as fh:
        frame = pd.read_csv(fh, compression="gzip")
    for c in categories:
        frame[c] = c + frame[c].astype(str)
    return frame


def _load_school(**options: Any) -> pd.DataFrame:
    return _load_vendored("school", ("Ethnicity", "School_Gender", "School_Denomination", "VR_BAND_Student"), options)


def _load_parkinsons(**options: Any) -> pd.DataFrame:
    return _load_vendored("parkinsons", (), options)


register(BuiltinDataset(
    "yeast", "Yeast gene functions: 2417 rows, 103 inputs, 14 binary labels (river)",
    tuple(f"Class{i}" for i in range(1, 15)), "river", _load_yeast, label_prefixes=("Class",),
))
register(BuiltinDataset(
    "seattle-weather", "Seattle daily weather 2012-2015: 5-class weather and 4 measurements (vega_datasets)",
    ("weather", "precipitation", "temp_max"), "vega_datasets", _load_seattle, time_column="date",
))
register(BuiltinDataset(
    "planted", "Generated: tasks in planted groups with sparse labels (known answer)",
    tuple(f"g{g}_t{i}" for g in range(3) for i in range(3)), None, _load_planted,
    label_prefixes=("g", "ind_t"),
))


register(BuiltinDataset(
    "school", "ILEA school exams 1985-87, long format: 15362 students of 139 schools (one task per school), "
    "target ExamScore, 8 inputs (bundled)",
    ("ExamScore",), None, _load_school, task_column="School",
    source="Inner London Education Authority examination data (Goldstein 1991), as distributed with the "
    "multi-task learning literature (Bakker & Heskes 2003; Evgeniou & Pontil 2004); no licence is stated with it",
))
register(BuiltinDataset(
    "parkinsons", "Parkinsons telemonitoring, long format: 5875 voice recordings of 42 patients (one task per "
    "patient), targets motor_UPDRS and total_UPDRS, 19 inputs (bundled)",
    ("motor_UPDRS", "total_UPDRS"), None, _load_parkinsons, task_column="subject#",
    source="UCI Machine Learning Repository, Parkinsons Telemonitoring (Tsanas, Little, McSharry & Ramig 2010); "
    "licence CC BY 4.0",
))


def load_builtin(name: str, options: dict[str, Any] | None = None) -> pd.DataFrame:
    """The frame of `builtin:NAME`.

    `frame.attrs["label_columns"]` lists every label column and `frame.attrs["time_column"]` the
    time stamps (if any), so that neither becomes a default input when a study does not name them.
    """
    if name not in BUILTINS:
        raise DataError(
            f"unknown data set 'builtin:{name}'{close_matches(name, BUILTINS)}; "
            f"available: {', '.join(sorted(BUILTINS))} (see `taskscout datasets`)"
        )
    ds = BUILTINS[name]
    frame = ds.load(**(options or {}))
    frame.attrs["label_columns"] = ds.label_columns(frame)
    if ds.time_column is not None:
        frame.attrs["time_column"] = ds.time_column
    if ds.task_column is not None:
        frame.attrs["task_column"] = ds.task_column
    return frame
