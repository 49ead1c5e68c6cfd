"""From generators to the candidate list: shared checks, caps, merging, coding, input guards.

For every requested kind and main task, the generator proposes candidates best first; each one
is checked in order and dropped, with the reason recorded, when it

1. has fewer than `spec.aux.min_labelled` labelled training rows,
2. is constant on its labelled training rows,
3. is training-only but built, unshifted, from a column that is a model input (a leak),
4. is a near-copy of the main target it serves: |corr| > 0.98 on training rows (when neither is
   an unordered class label), or identical labels up to renaming (a leak, or nothing new),
5. comes after the first `spec.aux.cap_for(kind)` survivors for that main task.

The same construction proposed for several main tasks becomes one candidate serving every main
task that kept it (`provenance["scores"]` holds its score per main task).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from taskscout.auxgen.base import GENERATORS, AuxTask
from taskscout.data import TRAIN, Dataset, TaskInfo, encode_target
from taskscout.errors import DataError
from taskscout.spec import AUX_KINDS, StudySpec

NEAR_COPY_CORR = 0.98


# ---------------------------------------------------------------- coding


def encode_aux(ds: Dataset, aux: AuxTask) -> tuple[np.ndarray, TaskInfo]:
    """The coded target (n, width) and its TaskInfo.

    Single-column types go through `data.encode_target` (classes coded 0..C-1 in sorted order,
    regression standardised on training rows, NaN = unlabelled); "soft" probabilities are
    returned as they are, with TaskInfo.classes naming the C columns.
    """
    if aux.type == "soft":
        values = np.asarray(aux.values, dtype=float)
        classes = tuple(aux.provenance.get("classes", range(values.shape[1])))
        return values, TaskInfo(aux.name, "soft", classes)
    y, info = encode_target(
        pd.Series(aux.values), aux.type, ds.split == TRAIN, name=aux.name, source="the auxiliary candidates"
    )
    return y[:, None], info


def dropped_features(ds: Dataset, auxes: list[AuxTask] | tuple[AuxTask, ...]) -> tuple[int, ...]:
    """Indices of the input features (columns of ds.X) a model training on `auxes` must not see.

    These are the features of every column in an auxiliary task's `drops_inputs` (predict-inputs)
    and, as a second guard, of any unshifted source column of a training-only task that is an
    input (screening already drops such candidates).
    """
    columns: set[str] = set()
    for aux in auxes:
        columns.update(aux.drops_inputs)
        if aux.training_only and not aux.provenance.get("shift"):
            columns.update(aux.provenance.get("columns", ()))
    return tuple(i for i, s in enumerate(ds.feature_sources) if s in columns)


# ---------------------------------------------------------------- checks


def _ordered(info: TaskInfo) -> bool:
    if info.type == "multiclass":
        return all(isinstance(c, (int, float, np.integer, np.floating)) and not isinstance(c, bool) for c in info.classes)
    return info.type != "soft"


def _near_copy(ds: Dataset, main: str, aux: AuxTask) -> str | None:
    if aux.type == "soft":  # a smoothed copy of the main labels by design
        return None
    k = ds.task_names.index(main)
    y, y_info = ds.Y[:, k], ds.tasks[k]
    a, a_info = encode_aux(ds, aux)
    a = a[:, 0]
    rows = (ds.split == TRAIN) & np.isfinite(y) & np.isfinite(a)
    if rows.sum() < 3:
        return None
    ya, aa = y[rows], a[rows]
    pairs = np.unique(np.stack([ya, aa], axis=1), axis=0)
    n_y, n_a = len(np.unique(ya)), len(np.unique(aa))
    # Two continuous columns with all-distinct values pair up one-to-one trivially: the
    # correlation below judges those.
    both_continuous = y_info.type == "regression" and a_info.type == "regression"
    if not both_continuous and len(pairs) == n_y == n_a:
        return f"identical labels to main task '{main}' up to renaming: a leak"
    if _ordered(y_info) and _ordered(a_info) and np.std(ya) > 0 and np.std(aa) > 0:
        r = abs(float(np.corrcoef(ya, aa)[0, 1]))
        if r > NEAR_COPY_CORR:
            return f"near-copy of main task '{main}' (|corr| = {r:.3f} > {NEAR_COPY_CORR}): a leak"
    return None


def check(ds: Dataset, spec: StudySpec, aux: AuxTask, main: str) -> str | None:
    """Why `aux` must be dropped as a candidate for `main` (None when it passes); see the module doc."""
    mask = aux.labelled_mask & (ds.split == TRAIN)
    n = int(mask.sum())
    if n < spec.aux.min_labelled:
        return f"only {n} labelled training rows (at least {spec.aux.min_labelled} needed)"
    v = np.asarray(aux.values)[mask]
    distinct = len(np.unique(v.astype(float), axis=0)) if aux.type == "soft" else pd.Series(v).nunique()
    if distinct < 2:
        return "constant on the labelled training rows"
    if aux.training_only and not aux.provenance.get("shift"):
        for col in aux.provenance.get("columns", ()):
            if col in ds.inputs:
                return f"built from model input '{col}': a training-only target must not be an input (remove it from --inputs)"
    try:
        return _near_copy(ds, main, aux)
    except DataError as e:
        return f"cannot be coded as a {aux.type} target: {e}"


# ---------------------------------------------------------------- the candidate list


def _screen(ds: Dataset, spec: StudySpec, kind: str, main: str, proposed: list[AuxTask]) -> list[AuxTask]:
    cap = spec.aux.cap_for(kind)
    kept = 0
    out = []
    for aux in proposed:
        reason = check(ds, spec, aux, main)
        if reason is None:
            if kept < cap:
                kept += 1
            else:
                reason = f"beyond the cap of {cap} {kind} candidates per main task"
        out.append(replace(aux, dropped=reason))
    return out


def _merge(screened: list[AuxTask]) -> list[AuxTask]:
    """One candidate per construction (kind + provenance), serving every main task that kept it."""
    groups: dict[str, list[AuxTask]] = {}
    for aux in screened:
        key = json.dumps([aux.kind, aux.name, aux.provenance], sort_keys=True, default=str)
        groups.setdefault(key, []).append(aux)
    merged = []
    for same in groups.values():
        kept = [a for a in same if a.dropped is None]
        first = (kept or same)[0]
        scores = {a.serves[0]: (None if math.isnan(a.score) else a.score) for a in same}
        reasons = {a.serves[0]: a.dropped for a in same}
        if not kept and len(set(reasons.values())) > 1:
            first = replace(first, dropped="; ".join(f"for '{m}': {r}" for m, r in reasons.items()))
        merged.append(replace(
            first,
            serves=tuple(a.serves[0] for a in (kept or same)),
            provenance={**first.provenance, "scores": scores},
        ))
    return merged


def _unique_names(cands: list[AuxTask], taken: tuple[str, ...] = ()) -> list[AuxTask]:
    """Distinct constructions that print alike (odd column names), or that print like a task in
    `taken` (a column named `a__related`), get a stable suffix ~2, ~3..."""
    seen: dict[str, int] = dict.fromkeys(taken, 1)
    out = []
    for aux in cands:
        n = seen.get(aux.name, 0) + 1
        seen[aux.name] = n
        out.append(aux if n == 1 else replace(aux, name=f"{aux.name}~{n}"))
    return out


def generate_candidates(ds: Dataset, spec: StudySpec) -> list[AuxTask]:
    """Every auxiliary candidate for the study's main tasks, dropped ones included.

    Kinds come in the order of spec.AUX_KINDS, candidates of a kind in the generators' order
    of preference. The list and its names are the same on every call with the same inputs.
    """
    out: list[AuxTask] = []
    for kind in AUX_KINDS:
        if kind not in spec.aux.kinds:
            continue
        gen = GENERATORS[kind]
        screened: list[AuxTask] = []
        for main in spec.main_tasks:
            if gen.why_not(ds, spec, main) is None:
                screened += _screen(ds, spec, kind, main, gen.propose(ds, spec, main))
        out += _merge(screened)
    return _unique_names(out, taken=ds.task_names)


def best_per_task(candidates: list[AuxTask], main_tasks: Sequence[str], reason: str) -> list[AuxTask]:
    """`candidates` with each main task served by its best kept candidate only (highest screening
    score for that task, any kind; the first on ties); a candidate left serving no task is dropped
    with `reason`. The auxiliary phase then trains at most one candidate per main task and seed
    (a search over many tasks: `search.runner`)."""
    def score(a: AuxTask, main: str) -> float:
        v = a.provenance.get("scores", {}).get(main, a.score)
        return -math.inf if v is None or not math.isfinite(float(v)) else float(v)

    best: dict[str, int] = {}
    for main in main_tasks:
        serving = [k for k, a in enumerate(candidates) if a.dropped is None and main in a.serves]
        if serving:
            best[main] = max(serving, key=lambda k: (score(candidates[k], main), -k))
    out = []
    for k, a in enumerate(candidates):
        if a.dropped is not None:
            out.append(a)
            continue
        serves = tuple(m for m in a.serves if best.get(m) == k or m not in best)
        out.append(replace(a, serves=serves) if serves else replace(a, dropped=reason))
    return out


def why_none(ds: Dataset, spec: StudySpec) -> list[tuple[str, str, str]]:
    """(kind, main task, reason) for every kind that yields no candidate for a main task."""
    out = []
    for kind in AUX_KINDS:
        for main in spec.main_tasks:
            if kind not in spec.aux.kinds:
                out.append((kind, main, "not requested (--aux-kinds)"))
                continue
            reason = GENERATORS[kind].why_not(ds, spec, main)
            if reason is not None:
                out.append((kind, main, reason))
    return out


def candidate_records(ds: Dataset, candidates: list[AuxTask]) -> list[dict[str, Any]]:
    """The JSON objects of `taskscout candidates --json` and candidates.json."""
    return [
        {
            "name": a.name, "kind": a.kind, "serves": list(a.serves), "type": a.type,
            "training_only": a.training_only, "adversarial": a.adversarial, "drops_inputs": list(a.drops_inputs),
            "labelled": a.labelled(ds), "score": None if math.isnan(a.score) else round(a.score, 6),
            "dropped": a.dropped, "provenance": a.provenance,
        }
        for a in candidates
    ]
