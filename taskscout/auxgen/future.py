"""Future as target: values known only after the fact, at t+1..t+h, as training-only targets.

With a time column (and an entity column, if given) rows are ordered by time within each
entity; the target of row t at horizon h is the value of the h-th next row of the same entity.
Sources are the main target itself and the input columns most informative about it (mutual
information on training rows). A row has no label when it has no h-th next row in its entity,
or when that row lies in another split: validation and test labels never become training
targets. Row t only ever sees these values as targets; the inputs of row t stay those of row t.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from taskscout.auxgen.base import AuxGenerator, AuxTask, register
from taskscout.auxgen.scoring import column_view, input_importance, mi_with_main
from taskscout.auxgen.values import raw_values
from taskscout.data import Dataset, infer_task_type
from taskscout.data.times import parse_times
from taskscout.spec import StudySpec


def time_order(ds: Dataset) -> np.ndarray:
    """Row indices sorted by entity, then time (stable, so ties keep the data's order)."""
    # as the data stage read them (day-first dates, offsets): the order the split was made in
    times = ds.times if ds.times is not None else parse_times(ds.frame[ds.time_column], ds.time_column, ds.name)[0]
    keys = [np.arange(len(ds.frame)), times.to_numpy()]
    if ds.entity_column:
        entity, _ = pd.factorize(ds.frame[ds.entity_column], use_na_sentinel=False)
        keys.append(entity)
    return np.lexsort(keys)


def future_rows(ds: Dataset, horizon: int) -> np.ndarray:
    """For each row, the index of its `horizon`-th next row in the same entity and split, or -1."""
    order = time_order(ds)
    nxt = np.full(len(order), -1)
    if horizon >= len(order):
        return nxt
    src, dst = order[:-horizon], order[horizon:]
    same = ds.split[src] == ds.split[dst]
    if ds.entity_column:
        entity = ds.frame[ds.entity_column].to_numpy()
        same &= pd.Series(entity[src]).eq(pd.Series(entity[dst])).to_numpy()
    nxt[src[same]] = dst[same]
    return nxt


def shifted(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """values[rows] where rows >= 0, NaN elsewhere (object arrays stay object arrays)."""
    out = np.full(len(values), np.nan, dtype=values.dtype if values.dtype == object else float)
    have = rows >= 0
    out[have] = values[rows[have]]
    return out


@register
class FutureGenerator(AuxGenerator):
    """The main target and its most informative inputs at t+1..t+h, main target first."""

    kind = "future"

    def why_not(self, ds: Dataset, spec: StudySpec, main: str) -> str | None:
        if not ds.time_column:
            return "no time column; name it with --time-column COL"
        return None

    def propose(self, ds: Dataset, spec: StudySpec, main: str) -> list[AuxTask]:
        importance = input_importance(ds, main, seed=spec.seed)
        features = sorted(
            (c for c in ds.inputs if np.isfinite(importance[c])), key=lambda c: -importance[c]
        )[: spec.aux.cap_for(self.kind)]
        out = []
        nexts = {h: future_rows(ds, h) for h in range(1, spec.aux.horizon + 1)}
        for col in [main, *features]:
            kind = ds.task(col).type if col in ds.task_names else infer_task_type(ds.frame[col])
            raw = raw_values(ds.frame[col])
            for h, rows in nexts.items():
                v = shifted(raw, rows)
                out.append(AuxTask(
                    name=f"{col}__future_{h}", kind=self.kind, serves=(main,), values=v, type=kind,
                    provenance={"columns": [col], "transform": "future value", "shift": h,
                                "time_column": ds.time_column, "entity_column": ds.entity_column},
                    training_only=True,  # unknown at prediction time
                    score=mi_with_main(ds, main, *column_view(v), seed=spec.seed),
                ))
        return out
