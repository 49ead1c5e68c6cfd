"""Related tasks: another target of the same data (every other task or label column).

With many tasks every main task has T - 1 related columns, and scoring each by mutual information
(a nearest-neighbour estimate) costs T^2 estimates: at 100 tasks 9,900 of them, and the search
did not start training within 20 minutes. So above a shortlist of max(SHORTLIST_MIN,
SHORTLIST_PER_CAP x the related cap) columns, only the shortlist is proposed and scored: the
columns with the largest absolute rank correlation with the main target on their common labelled
training rows (one vectorised pass), those with fewer than MI_MIN_ROWS common rows last. With
few tasks nothing changes. The pairs (or sampled subsets) of the search measure every other main
task anyway; the related kind adds label columns that are not tasks.
"""

from __future__ import annotations

import numpy as np

from taskscout.auxgen.base import AuxGenerator, AuxTask, register
from taskscout.auxgen.scoring import MI_MIN_ROWS, column_view, main_target, mi_with_main
from taskscout.auxgen.values import best_first, raw_values
from taskscout.data import TRAIN, Dataset, infer_task_type
from taskscout.spec import StudySpec


def related_columns(ds: Dataset, spec: StudySpec, main: str) -> list[str]:
    """Every task other than `main`, then label columns of the data that are neither tasks nor
    inputs (a builtin data set lists them in `frame.attrs["label_columns"]`). Columns named
    adversarial are left out: the user wants them unlearned, not learned."""
    labels = [str(c) for c in ds.frame.attrs.get("label_columns", ())]
    adversarial = set(spec.aux.adversarial)
    others = [t for t in ds.task_names if t != main and t not in adversarial]
    excluded = set(ds.task_names) | set(ds.inputs) | {ds.time_column, ds.entity_column} | adversarial
    others += [c for c in labels if c in ds.frame.columns and c not in excluded]
    return others


@register
class RelatedGenerator(AuxGenerator):
    """Each other task column as an extra target, best mutual information with the main first."""

    kind = "related"

    def why_not(self, ds: Dataset, spec: StudySpec, main: str) -> str | None:
        if not related_columns(ds, spec, main):
            return f"'{main}' is the only task and the data has no other label column"
        return None

    def propose(self, ds: Dataset, spec: StudySpec, main: str) -> list[AuxTask]:
        out = []
        for col in shortlist(ds, spec, main, related_columns(ds, spec, main)):
            kind = ds.task(col).type if col in ds.task_names else infer_task_type(ds.frame[col])
            out.append(AuxTask(
                name=f"{col}__related", kind=self.kind, serves=(main,), values=raw_values(ds.frame[col]),
                type=kind, provenance={"columns": [col], "transform": "identity"},
                # another task's label is unknown when the model predicts: never an input
                training_only=True,
                score=mi_with_main(ds, main, *column_view(ds.frame[col]), seed=spec.seed),
            ))
        return best_first(out)


SHORTLIST_MIN = 12  # related columns always scored in full up to this many
SHORTLIST_PER_CAP = 3  # else this many per candidate the screen keeps (spec.aux cap for "related")


def shortlist(ds: Dataset, spec: StudySpec, main: str, columns: list[str]) -> list[str]:
    """`columns`, or above max(SHORTLIST_MIN, SHORTLIST_PER_CAP x cap) of them the ones most rank
    correlated with `main` on common labelled training rows (module docstring), in their order."""
    keep = max(SHORTLIST_MIN, SHORTLIST_PER_CAP * spec.aux.cap_for("related"))
    if len(columns) <= keep:
        return columns
    y, _ = main_target(ds, main)
    train = np.isfinite(y) & (ds.split == TRAIN)
    ranks = _ranks(y[train])
    strength = np.full(len(columns), -1.0)
    rows = ds.frame.loc[train, columns]
    rows.attrs = {}  # pandas deep-copies a frame's attrs on every column access: T^2 copies otherwise
    for k, col in enumerate(columns):
        x = column_view(rows[col].to_numpy())[0]
        both = np.isfinite(x)
        if both.sum() >= MI_MIN_ROWS:
            r = np.corrcoef(_ranks(x[both]), ranks[both])[0, 1] if np.ptp(x[both]) > 0 else 0.0
            strength[k] = abs(r) if np.isfinite(r) else 0.0
    chosen = set(np.argsort(-strength, kind="stable")[:keep].tolist())
    return [c for k, c in enumerate(columns) if k in chosen]


def _ranks(v: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(v, kind="stable"), kind="stable").astype(float)
