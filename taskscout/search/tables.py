"""The run directory's tables, rebuilt from the Optuna storage alone.

Any process that can reach the storage (a worker on another machine, `taskscout report`) can call
`rebuild_tables(run_dir, storage)` and get the same measured tables: each is a function of the
COMPLETE trials and the spec. The subsets and estimators phases run once, in the search that
finishes the run, and the storage cannot rebuild their rows: a rebuild keeps them from the run
directory's affinity.csv and compute.csv and re-scores their agreement against the rebuilt
measured gains (`carry_estimator_rows`). Written atomically through taskscout.rundir.

trials.parquet: one row per COMPLETE trial; `tasks` and `main` are the model's main tasks, `aux`
its auxiliaries; val_loss / val_metric map every head of the model (tasks and auxiliaries) to its
value at the best epoch; test_loss / test_metric are "{}" (the search never looks at test rows).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from taskscout import rundir
from taskscout.affinity.agreement import MEASURED, agreement_table
from taskscout.affinity.base import Compute, EstimatorResult
from taskscout.affinity.measured import (
    LOSS_COLUMNS,
    depth_gains,
    group_scores,
    measured_affinity,
    paired_with_alone,
)
from taskscout.affinity.sampled import sampled_affinity
from taskscout.curves import mean_curve_features
from taskscout.errors import MissingResultsError
from taskscout.search.plan import PHASE_ORDER, SELECTION_PHASE
from taskscout.search.storage import (
    UNFINISHED_ATTR,
    TrialRecord,
    load_records,
    open_existing,
    spec_json_from_storage,
)
from taskscout.spec import StudySpec, spec_from_json


def trials_frame(records: Sequence[TrialRecord]) -> pd.DataFrame:
    rows = []
    for r in records:
        m = r.model
        rows.append({
            "trial": r.number, "phase": m.phase, "key": m.key, "tasks": list(m.tasks), "main": list(m.tasks),
            "aux": list(m.aux), "branch_layer": m.branch_layer, "seed": m.seed, "state": "COMPLETE",
            "val_loss": json.dumps(r.result.get("val_loss", {}), sort_keys=True),
            "val_metric": json.dumps(r.result.get("val_metric", {}), sort_keys=True),
            "test_loss": "{}", "test_metric": "{}",
            "epochs": int(r.result.get("epochs", 0)), "best_epoch": int(r.result.get("best_epoch", 0)),
            "seconds": float(r.result.get("seconds", 0.0)),
            "finished": pd.Timestamp(r.finished) if r.finished is not None else pd.NaT,
        })
    frame = pd.DataFrame(rows, columns=list(rundir.TRIAL_COLUMNS))
    return frame.sort_values("trial", kind="stable").reset_index(drop=True)


def curves_frame(records: Sequence[TrialRecord]) -> pd.DataFrame:
    # one frame from plain columns: a frame per curve cost seconds on a search of a thousand models
    cols: dict[str, list] = {"trial": [], "task": [], "epoch": [], "split": [], "loss": []}
    for r in records:
        for split, per_task in r.curves.items():
            for task, points in per_task.items():
                arr = np.asarray(points, dtype=float).reshape(len(points), -1)
                cols["trial"] += [r.number] * len(points)
                cols["task"] += [task] * len(points)
                cols["split"] += [split] * len(points)
                cols["epoch"].append(arr[:, 0].astype(int) if len(points) else np.zeros(0, dtype=int))
                cols["loss"].append(arr[:, 1] if len(points) else np.zeros(0))
    if not cols["trial"]:
        return pd.DataFrame({"trial": pd.Series(dtype=int), "task": pd.Series(dtype=str),
                             "epoch": pd.Series(dtype=int), "split": pd.Series(dtype=str),
                             "loss": pd.Series(dtype=float)})
    return pd.DataFrame({"trial": np.asarray(cols["trial"], dtype=np.int64), "task": np.asarray(cols["task"], dtype=object),
                         "epoch": np.concatenate(cols["epoch"]), "split": np.asarray(cols["split"], dtype=object),
                         "loss": np.concatenate(cols["loss"])})[list(rundir.CURVE_COLUMNS)]


def measured_records(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """The records of the measured phases: all but the selection stage's models."""
    return [r for r in records if not r.model.phase.startswith(SELECTION_PHASE)]


def losses_frame(records: Sequence[TrialRecord]) -> pd.DataFrame:
    """The long validation-loss table of affinity.measured: one row per (model, main task).

    A task's loss is its lowest validation loss over the model's epochs (its own best epoch), read
    from the curves; the loss at the model's best joint epoch only when no curve was kept. Reading
    both tasks of a pair at the pair's joint best epoch penalises a task whose partner peaks at
    another epoch: on `builtin:planted` (3 seeds) own-epoch selection found 13 of 18 real gains
    inside groups instead of 10, and 4 spurious real losses across groups instead of 10. A
    single-task model's own and joint best epochs are the same epoch, so the comparison stays paired.
    """
    rows = []
    for r in measured_records(records):
        val = r.result.get("val_loss", {})
        curves = r.curves.get("val", {})
        for task in r.model.tasks:
            points = [v for _, v in curves.get(task, ()) if math.isfinite(v)]
            loss = min(points) if points else val.get(task)
            if loss is not None:
                rows.append((r.model.tasks, r.model.aux, r.model.branch_layer, r.model.seed, task, float(loss)))
    return pd.DataFrame(rows, columns=list(LOSS_COLUMNS))


def curve_feature_frame(records: Sequence[TrialRecord], spec: StudySpec) -> pd.DataFrame:
    """Per main task: plateau epoch and slopes of its single-task models, averaged over seeds."""
    singles = (
        (r.model.tasks[0], [p[1] for p in r.curves.get("train", {}).get(r.model.tasks[0], [])],
         [p[1] for p in r.curves.get("val", {}).get(r.model.tasks[0], [])])
        for r in records if r.model.phase == "single" and len(r.model.tasks) == 1
    )
    rows = mean_curve_features(singles, epsilon=spec.search.plateau_epsilon, window=spec.search.plateau_window,
                               order=spec.main_tasks)
    return pd.DataFrame(rows, columns=list(rundir.CURVE_FEATURE_COLUMNS))


def compute_frame(records: Sequence[TrialRecord]) -> pd.DataFrame:
    rows = []
    phases = [p for p in PHASE_ORDER if any(r.model.phase == p for r in records)]
    phases += sorted({r.model.phase for r in records} - set(phases))
    for phase in phases:
        mine = [r for r in records if r.model.phase == phase]
        rows.append((phase, len(mine), int(sum(int(r.result.get("epochs", 0)) for r in mine)),
                     float(sum(float(r.result.get("seconds", 0.0)) for r in mine))))
    return pd.DataFrame(rows, columns=list(rundir.COMPUTE_COLUMNS))


def sampled_affinity_rows(records: Sequence[TrialRecord], losses: pd.DataFrame, spec: StudySpec) -> pd.DataFrame:
    """affinity.csv rows of method "sampled" from the sampled subsets' models (none without them):
    each subset task's loss over its single-task loss on the same seed (`affinity.sampled`)."""
    main = tuple(spec.main_tasks)
    subsets = {tuple(r.model.tasks) for r in records if r.model.phase == "sampled" and len(r.model.tasks) < len(main)}
    rows = paired_with_alone(losses)
    rows = rows[[tuple(t) in subsets for t in rows["tasks"]]] if len(rows) else rows
    if len(subsets) < 2 or rows.empty:
        return pd.DataFrame(columns=list(rundir.AFFINITY_COLUMNS))
    observations = pd.DataFrame({"group": [rundir.group_key(t, main) for t in rows["tasks"]], "task": rows["task"],
                                 "seed": rows["seed"], "norm_loss": rows["loss"] / rows["alone"]})
    return sampled_affinity(observations, main, seed=spec.seed).affinity_rows()


def build_tables(records: Sequence[TrialRecord], spec: StudySpec) -> dict[str, pd.DataFrame]:
    """Every table of the search, keyed by its run-directory file name (the selection stage's
    models are left out: their rows and seeds take no part in measuring gains)."""
    records = measured_records(records)
    losses = losses_frame(records)
    order = list(spec.tasks)
    full = spec.model.depth
    affinity = measured_affinity(losses, full_layer=full)
    sampled = sampled_affinity_rows(records, losses, spec)
    if len(sampled):
        affinity = pd.concat([affinity, sampled], ignore_index=True)
    return {
        rundir.TRIALS: trials_frame(records),
        rundir.CURVES: curves_frame(records),
        rundir.CURVE_FEATURES: curve_feature_frame(records, spec),
        rundir.AFFINITY: affinity,
        rundir.GROUP_SCORES: group_scores(losses, full_layer=full, order=order),
        rundir.DEPTH: _halved_out(depth_gains(losses, order=order), spec),
        rundir.COMPUTE: compute_frame(records),
    }


def _halved_out(depth: pd.DataFrame, spec: StudySpec) -> pd.DataFrame:
    """depth.csv without the layers successive halving left at one seed (search/halving.py): with
    an interval of (-inf, inf) they would tie with every layer, and none of them can hold a real gain."""
    if spec.training.seeds < 2:
        return depth
    return depth[depth["n_seeds"] > 1].reset_index(drop=True)


def measured_compute(compute: pd.DataFrame) -> Compute:
    """What the measured phases (single and pairs) cost, from a compute.csv frame: the baseline
    the estimators' relative compute is taken against."""
    rows = compute[compute["phase"].isin(["single", "pairs"])]
    return Compute(int(rows["models"].sum()), int(rows["epochs"].sum()), float(rows["seconds"].sum()))


def carry_estimator_rows(run_dir: str | Path, tables: dict[str, pd.DataFrame]) -> None:
    """Add to freshly built measured `tables` (in place) the subsets and estimators phases' rows
    of the run directory's current affinity.csv and compute.csv, and their agreement.csv re-scored
    against the new measured gains. Nothing happens when the run has no such rows."""
    run_dir = Path(run_dir)
    aff_path, compute_path = run_dir / rundir.AFFINITY, run_dir / rundir.COMPUTE
    if not aff_path.exists():
        return
    old = pd.read_csv(aff_path)
    kept = old[~old["method"].isin((MEASURED, "sampled"))]  # sampled rows are rebuilt from the trials too
    if kept.empty:
        return
    old_compute = pd.read_csv(compute_path) if compute_path.exists() else pd.DataFrame(columns=list(rundir.COMPUTE_COLUMNS))
    phases = old_compute["phase"].astype(str)
    kept_compute = old_compute[phases.str.startswith("estimator:") | (phases == "subsets")]

    def cost(method: str) -> Compute:
        row = kept_compute[kept_compute["phase"] == ("subsets" if method == "surrogate" else f"estimator:{method}")]
        if row.empty:
            return Compute()
        return Compute(int(row["models"].iloc[0]), int(row["epochs"].iloc[0]), float(row["seconds"].iloc[0]))

    results = [EstimatorResult(str(m), part.reset_index(drop=True), cost(str(m)))
               for m, part in kept.groupby("method", sort=False)]
    tables[rundir.AGREEMENT] = agreement_table(tables[rundir.AFFINITY], results,
                                               measured_compute=measured_compute(tables[rundir.COMPUTE]))
    tables[rundir.AFFINITY] = pd.concat([tables[rundir.AFFINITY], kept], ignore_index=True)
    tables[rundir.COMPUTE] = pd.concat([tables[rundir.COMPUTE], kept_compute], ignore_index=True)


def default_storage(run_dir: str | Path) -> str:
    """The SQLite URL of a run directory's own study.db."""
    return f"sqlite:///{(Path(run_dir) / rundir.STUDY_DB).resolve()}"


def write_tables(run_dir: str | Path, tables: dict[str, pd.DataFrame]) -> dict[str, Path]:
    out = {}
    for name, frame in tables.items():
        path = Path(run_dir) / name
        out[name] = rundir.write_parquet(path, frame) if name.endswith(".parquet") else rundir.write_csv(path, frame)
    return out


def rebuild_tables(run_dir: str | Path, storage: str | None = None, *, study_name: str | None = None) -> dict[str, Path]:
    """Rebuild every measured table of `run_dir` from the storage, keeping the subsets and
    estimators phases' rows (`carry_estimator_rows`); the paths written.

    The spec comes from run_dir/spec.json, or, when that file is absent, from the study
    `study_name` in `storage` (and spec.json is written). `storage` defaults to the spec's storage,
    else the run directory's study.db."""
    run_dir = Path(run_dir)
    spec_path = run_dir / rundir.SPEC
    if spec_path.exists():
        spec = spec_from_json(spec_path.read_text(encoding="utf-8"))
    elif storage and study_name:
        text = spec_json_from_storage(storage, study_name)
        if text is None:
            raise MissingResultsError(f"no study '{study_name}' in the storage; run `taskscout search` first")
        spec = spec_from_json(text)
        rundir.write_text(spec_path, text)
    else:
        raise MissingResultsError(f"run directory '{run_dir}' has no {rundir.SPEC}; run `taskscout search` first")
    url = storage or spec.search.storage or default_storage(run_dir)
    store = open_existing(url, url, study_name or spec.name)
    tables = build_tables(load_records(store), spec)
    carry_estimator_rows(run_dir, tables)
    return write_tables(run_dir, tables)


def unfinished_phases(run_dir: str | Path, storage: str | None = None) -> list[str]:
    """The phases the study's last finished search left unfinished (its time limit), from the
    storage (`storage`, else the spec's, else the run directory's study.db)."""
    spec = spec_from_json((Path(run_dir) / rundir.SPEC).read_text(encoding="utf-8"))
    url = storage or spec.search.storage or default_storage(run_dir)
    return list(open_existing(url, url, spec.name).study.user_attrs.get(UNFINISHED_ATTR, []))
