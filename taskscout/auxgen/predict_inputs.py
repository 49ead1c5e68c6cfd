"""Predict inputs: input columns that do little as inputs may help as outputs (Caruana).

Each raw input column is ranked by its mutual information with the main target on training
rows; the least informative become targets and are removed from the inputs of every model that
trains on them (`drops_inputs`), so a model never sees the column it must predict. The most
informative scored column is never proposed, so a model always keeps its best known input.
"""

from __future__ import annotations

import math

from taskscout.auxgen.base import AuxGenerator, AuxTask, register
from taskscout.auxgen.scoring import input_importance
from taskscout.auxgen.values import raw_values
from taskscout.data import Dataset, infer_task_type
from taskscout.spec import StudySpec


@register
class PredictInputsGenerator(AuxGenerator):
    """Low-importance input columns moved from input to output, least important first."""

    kind = "predict_inputs"

    def why_not(self, ds: Dataset, spec: StudySpec, main: str) -> str | None:
        if len(ds.inputs) < 2:
            return "only one input column: moving it to the outputs would leave the model no inputs"
        return None

    def propose(self, ds: Dataset, spec: StudySpec, main: str) -> list[AuxTask]:
        importance = input_importance(ds, main, seed=spec.seed)
        # A column of unknown importance (too few rows to score it) is never moved on a guess, and
        # the most informative scored column always stays an input: the inputs left must not be
        # only columns nobody could score.
        known = sorted((c for c in ds.inputs if not math.isnan(importance[c])), key=lambda c: importance[c])
        out = []
        for col in known[:-1]:
            out.append(AuxTask(
                name=f"{col}__input", kind=self.kind, serves=(main,), values=raw_values(ds.frame[col]),
                type=infer_task_type(ds.frame[col]),
                provenance={"columns": [col], "transform": "identity, moved from input to output",
                            "importance": "mutual information with the main target"},
                training_only=False, drops_inputs=(col,), score=importance[col],
            ))
        return out
