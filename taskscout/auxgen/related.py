"""Related tasks: another target of the same data (every other task or label column)."""

from __future__ import annotations

from taskscout.auxgen.base import AuxGenerator, AuxTask, register
from taskscout.auxgen.scoring import column_view, mi_with_main
from taskscout.auxgen.values import best_first, raw_values
from taskscout.data import Dataset, infer_task_type
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
        for col in related_columns(ds, spec, main):
            kind = ds.task(col).type if col in ds.task_names else infer_task_type(ds.frame[col])
            out.append(AuxTask(
                name=f"{col}__related", kind=self.kind, serves=(main,), values=raw_values(ds.frame[col]),
                type=kind, provenance={"columns": [col], "transform": "identity"},
                # another task's label is unknown when the model predicts: never an input
                training_only=True,
                score=mi_with_main(ds, main, *column_view(ds.frame[col]), seed=spec.seed),
            ))
        return best_first(out)
