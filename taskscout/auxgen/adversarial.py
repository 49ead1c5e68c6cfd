"""Adversarial targets: nuisance or domain columns the shared representation should not encode.

The user names them (`--adversarial COL`); each becomes a target trained through a
gradient-reversal layer (its head minimises its loss, the trunk receives the negated gradient).
"""

from __future__ import annotations

from taskscout.auxgen.base import AuxGenerator, AuxTask, register
from taskscout.auxgen.scoring import column_view, mi_with_main
from taskscout.auxgen.values import raw_values
from taskscout.data import Dataset, infer_task_type
from taskscout.spec import StudySpec


@register
class AdversarialGenerator(AuxGenerator):
    """One gradient-reversal target per named column, in the order the user gave them."""

    kind = "adversarial"

    def why_not(self, ds: Dataset, spec: StudySpec, main: str) -> str | None:
        if not spec.aux.adversarial:
            return "no nuisance columns named; name them with --adversarial COL"
        if all(c == main for c in spec.aux.adversarial):
            return f"the only adversarial column is '{main}' itself"
        return None

    def propose(self, ds: Dataset, spec: StudySpec, main: str) -> list[AuxTask]:
        out = []
        for col in spec.aux.adversarial:
            if col == main:
                continue
            kind = ds.task(col).type if col in ds.task_names else infer_task_type(ds.frame[col])
            out.append(AuxTask(
                name=f"{col}__adversarial", kind=self.kind, serves=(main,), values=raw_values(ds.frame[col]),
                type=kind, provenance={"columns": [col], "transform": "identity, gradient reversal"},
                training_only=True, adversarial=True,
                score=mi_with_main(ds, main, *column_view(ds.frame[col]), seed=spec.seed),
            ))
        return out  # the user's order: the cap keeps the first ones named
