"""The Python API: `search` a data set, `open_run` a run directory, and work with the `Run`.

What the commands do, for a notebook::

    run = taskscout.search("data.csv", tasks=["a", "b", "c"], budget="small")
    run.recommendation.groups      # typed, frozen (taskscout.grouping.Recommendation)
    run.affinity                   # affinity.csv as a DataFrame
    run.report()                   # report.html
    run.export("train.yaml")       # the training config of `taskscout train`
    run.verify()                   # recommended vs all-separate vs all-together on test rows

The CLI commands `search`, `report`, `export` and `verify` are thin calls of these functions.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from taskscout import rundir
from taskscout.data.builtin import BUILTINS, load_builtin
from taskscout.device import resolve_device
from taskscout.errors import DataError, SpecError
from taskscout.export import check_config_path, export_config, write_config
from taskscout.progress import search_bars
from taskscout.recommendation import Recommendation, read_recommendation
from taskscout.spec import resolve_spec, spec_from_json
from taskscout.verify import Verification, check_verify_inputs, verify_run

FRAME_FILE = "data.parquet"  # a DataFrame given to `search` is kept in the run directory under this name
_WHERE = "the arguments of taskscout.search"


@dataclass(frozen=True)
class Run:
    """A run directory and what a search wrote into it; the results load when first read.

    `result` is the search's own account (models trained, phases, time) when this Run comes from
    `search`, None when it comes from `open_run`.
    """

    path: Path
    result: Any = None  # taskscout.search.SearchResult

    @cached_property
    def spec(self) -> Any:
        """The resolved study spec (spec.json) as a frozen `taskscout.spec.StudySpec`."""
        return spec_from_json((self.path / rundir.SPEC).read_text(encoding="utf-8"))

    @cached_property
    def recommendation(self) -> Recommendation:
        """recommendation.json, parsed and checked: groups, assignment, verdict, reasons."""
        return read_recommendation(self.path)

    @cached_property
    def affinity(self) -> Any:
        """affinity.csv as a pandas DataFrame: source, target, gain, ci_low, ci_high, n_seeds, method."""
        import pandas as pd

        rundir.require(self.path, rundir.AFFINITY)
        return pd.read_csv(self.path / rundir.AFFINITY)

    def summary(self) -> str:
        """The closing text of `taskscout search` (needs a Run returned by `search`)."""
        from taskscout.search import summary_text

        if self.result is None:
            return f"run directory {self.path}: {self.recommendation.verdict}"
        return summary_text(self.result)

    def rebuild(self, storage: str | None = None) -> dict[str, Path]:
        """Rebuild the measured tables and the recommendation from the search's storage (`taskscout
        report --rebuild`, e.g. after distributed workers); the tables written."""
        from taskscout.search import finalize, rebuild_tables, unfinished_phases

        tables = rebuild_tables(self.path, storage)
        finalize(self.path, unfinished=unfinished_phases(self.path, storage))
        self.__dict__.pop("recommendation", None)
        self.__dict__.pop("affinity", None)
        return tables

    def report(self) -> Path:
        """(Re)build report.html from the saved results (`taskscout report`); its path."""
        from taskscout.report import build_report  # plotly: loaded when a report is drawn

        return build_report(self.path)

    def write_pngs(self) -> list[Path]:
        """Every report figure as figures/NAME.png (`taskscout report --png`; needs kaleido and
        Chromium); the files written."""
        from taskscout.report import write_pngs

        return write_pngs(self.path)

    def export(self, path: str | Path, *, format: str | None = None) -> Path:
        """Write the recommendation as a training config for `taskscout train` (`taskscout export`):
        YAML or JSON, from `path`'s suffix unless `format` says. The path written."""
        check_config_path(path, format)
        return write_config(export_config(self.path), path, format=format)

    def verify(self, *, seeds: int | None = None, device: str = "auto", report: bool = True) -> Verification:
        """Train the recommendation, all-separate and all-together with fresh seeds and compare them
        on the test split (`taskscout verify`); writes verify.json and, with `report`, rebuilds
        report.html. A `taskscout.verify.Verification`."""
        resolve_device(device)
        check_verify_inputs(self.path, seeds=seeds)
        result = verify_run(self.path, seeds=seeds, device=device)
        if report:
            self.report()
        return result

    def __repr__(self) -> str:
        return f"Run('{self.path}')"


def open_run(path: str | Path) -> Run:
    """The run directory `path` that a search wrote (it must hold spec.json).

    Example:
        >>> import taskscout
        >>> taskscout.open_run("no/such/run")
        Traceback (most recent call last):
        ...
        taskscout.errors.MissingResultsError: run directory 'no/such/run' does not exist; run `taskscout search` first
    """
    return Run(rundir.require(path, rundir.SPEC))


def search(
    data: Any,
    *,
    tasks: str | Sequence[str] | None = None,
    out: str | Path | None = None,
    quiet: bool = False,
    fresh: bool = False,
    **settings: Any,
) -> Run:
    """Run (or resume) a search and return its Run, as `taskscout search` does.

    `data`: a CSV or Parquet file, `builtin:NAME`, a .toml study file, or a pandas DataFrame (kept
    in the run directory as data.parquet, so verify and export can rebuild it). `tasks`: the
    target columns (a list or "a,b,c"); for `builtin:NAME` it defaults to the data set's labels.
    `out`: the run directory (default reports/NAME). `settings`: any study setting, a section as a
    dict: `budget="small"`, `seed=1`, `training={"epochs": 10}`. `quiet`: no progress bars.
    `fresh`: start over instead of reusing the models a previous search of the same run stored.

    Example:
        >>> import taskscout
        >>> run = taskscout.search("builtin:planted", tasks="g0_t0,g0_t1,g1_t0", out="reports/example",
        ...                        budget="small", quiet=True, data_options={"n_rows": 400},
        ...                        training={"epochs": 3, "seeds": 2}, search={"phases": ["single", "pairs"]})
        >>> run.recommendation.tasks
        ('g0_t0', 'g0_t1', 'g1_t0')
        >>> sorted(run.affinity["method"].unique())
        ['measured']
    """
    frame = None
    if _is_frame(data):
        frame, data = data, None
    elif not isinstance(data, (str, os.PathLike)):
        raise SpecError(f"data must be a file path, builtin:NAME, a .toml study file or a pandas DataFrame. "
                        f"Got {type(data).__name__} instead.")
    overrides = dict(settings)
    if tasks is not None:
        overrides["tasks"] = [t.strip() for t in tasks.split(",") if t.strip()] if isinstance(tasks, str) else list(tasks)
    if out is not None:
        overrides["out"] = str(out)
    if frame is not None:
        overrides.setdefault("name", "dataframe")
        overrides["data"] = FRAME_FILE  # a placeholder until the spec says where the run directory is
    elif tasks is None and str(data).startswith("builtin:") and "tasks" not in overrides:
        overrides["tasks"] = _builtin_tasks(str(data), overrides.get("data_options"))
    spec = resolve_spec(None if data is None else str(data), overrides, overrides_from=_WHERE)
    if frame is None:
        return search_spec(spec, quiet=quiet, fresh=fresh)
    return _search_frame(frame, spec, quiet=quiet, fresh=fresh)


def _is_frame(data: Any) -> bool:
    import sys

    pd = sys.modules.get("pandas")  # a DataFrame means pandas is already imported
    return pd is not None and isinstance(data, pd.DataFrame)


def _builtin_tasks(source: str, options: Mapping[str, Any] | None) -> list[str]:
    """The label columns of `builtin:NAME` with `options`: what a search of it predicts by default."""
    name = source.split(":", 1)[1]
    if name in BUILTINS and not options:
        return list(BUILTINS[name].tasks)
    frame = load_builtin(name, dict(options) if isinstance(options, Mapping) else None)
    return list(frame.attrs["label_columns"])


def _search_frame(frame: Any, spec: Any, *, quiet: bool, fresh: bool) -> Run:
    """Keep `frame` as the run directory's data.parquet, then search it; nothing is left behind
    when the data turn out unusable."""
    import dataclasses

    if not all(isinstance(c, str) for c in frame.columns):
        bad = next(c for c in frame.columns if not isinstance(c, str))
        raise DataError(f"the DataFrame's column names must be strings; column {bad!r} is a "
                        f"{type(bad).__name__}: rename it, e.g. frame.columns = frame.columns.map(str)")
    run_dir = Path(spec.run_dir).absolute()
    top = rundir.make_dirs(run_dir)
    path = run_dir / FRAME_FILE
    existed = path.exists()
    rundir.write_parquet(path, frame)
    try:
        return search_spec(dataclasses.replace(spec, data=str(path)), quiet=quiet, fresh=fresh)
    except DataError:
        if not existed:
            path.unlink(missing_ok=True)
            for d in (run_dir, *run_dir.parents) if top is not None else ():
                if any(d.iterdir()):
                    break
                d.rmdir()
                if d == top:
                    break
        raise


def search_spec(spec: Any, *, quiet: bool = False, fresh: bool = False, join: bool = False) -> Run:
    """`search` for a resolved `taskscout.spec.StudySpec` (what `taskscout search` calls); `join`:
    work on a run that already exists in the spec's shared storage, as one of several workers."""
    from taskscout.search import run_search

    if spec.device == "cuda":
        resolve_device(spec.device)
    bars = None
    if not quiet:
        bars = search_bars()
    with bars if bars is not None else contextlib.nullcontext():
        result = run_search(spec, fresh=fresh, progress=bars, join=join)
    if "recommendation" in result.finalized:  # this process finished the run: the report is the last stage
        import dataclasses

        if not (result.rerun and report_current(result.run_dir)):  # a finished run's rerun: nothing to redraw
            from taskscout.report import build_report

            build_report(result.run_dir)
        result = dataclasses.replace(result, finalized=(*result.finalized, "report"))
    return Run(Path(result.run_dir), result)


# What report.html is drawn from: every file of the run directory but the storage and the report.
REPORT_INPUTS = (rundir.SPEC, rundir.CANDIDATES, rundir.TRIALS, rundir.CURVES, rundir.CURVE_FEATURES, rundir.AFFINITY,
                 rundir.DEPTH, rundir.GROUP_SCORES, rundir.AGREEMENT, rundir.RSA_LAYERS, rundir.SUBSET_OBSERVATIONS,
                 rundir.COMPUTE, rundir.GRAPH, rundir.RECOMMENDATION, rundir.VERIFY, rundir.SELECTION)


def report_current(run_dir: str | Path) -> bool:
    """Whether `run_dir`/report.html exists and no file it is drawn from changed after it was
    written (so drawing it again would give the same page)."""
    report = Path(run_dir) / rundir.REPORT
    if not report.exists():
        return False
    written = report.stat().st_mtime_ns
    return all(not p.exists() or p.stat().st_mtime_ns <= written for p in (Path(run_dir) / n for n in REPORT_INPUTS))
