"""The training problem of a search: inputs, the target matrix and its heads, and model plans.

Targets are the main tasks' coded columns (Dataset.Y) followed by the encoded screened auxiliaries
(auxgen.encode_aux), each as one trainer Head. A PlannedModel becomes a trainer ModelPlan here:
its tasks and auxiliaries as target indices, its main tasks as the targets that select the best
epoch, and the input features its predict-inputs auxiliaries remove from the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from taskscout.data import Dataset, Head, task_head
from taskscout.errors import DataError
from taskscout.search.plan import PlannedModel


@dataclass(frozen=True, eq=False)
class SearchProblem:
    """Everything the trainer needs, shared by every model of the search."""

    X: np.ndarray
    Y: np.ndarray
    split: np.ndarray
    heads: tuple[Head, ...]  # one per target
    main: tuple[str, ...]  # main tasks, study order
    serves: dict[str, tuple[str, ...]] = field(default_factory=dict)  # screened aux -> main tasks it serves
    dropped: dict[str, tuple[int, ...]] = field(default_factory=dict)  # aux -> input features it removes

    @property
    def head_index(self) -> dict[str, int]:
        return {h.name: i for i, h in enumerate(self.heads)}

    def model_plan(self, model: PlannedModel, key: str | None = None) -> Any:
        """The trainer's ModelPlan for `model`."""
        from taskscout.training import ModelPlan

        index = self.head_index
        unknown = [n for n in (*model.tasks, *model.aux) if n not in index]
        if unknown:
            raise DataError(
                f"model {model.key} names {unknown[0]!r}, which is not a target of this search; "
                f"targets: {', '.join(index)}. The study's tasks or auxiliaries changed: rerun with --fresh"
            )
        dropped = sorted({f for a in model.aux for f in self.dropped.get(a, ())})
        return ModelPlan(
            targets=tuple(index[n] for n in (*model.tasks, *model.aux)),
            main=tuple(index[n] for n in model.tasks),
            seed=model.seed,
            branch_layer=model.branch_layer,
            dropped_features=tuple(dropped),
            key=key if key is not None else model.key,
        )


def build_problem(ds: Dataset, main: Sequence[str], aux_tasks: Sequence[Any] = ()) -> SearchProblem:
    """Targets: the main tasks of `ds`, then every auxiliary in `aux_tasks` (screened ones only)."""
    from taskscout.auxgen import dropped_features, encode_aux

    heads = []
    columns = []
    for name in main:
        k = ds.task_names.index(name)
        heads.append(task_head(ds.tasks[k]))
        columns.append(ds.Y[:, k:k + 1])
    serves: dict[str, tuple[str, ...]] = {}
    dropped: dict[str, tuple[int, ...]] = {}
    for aux in aux_tasks:
        if aux.name in main or aux.name in serves:
            raise DataError(f"auxiliary task name {aux.name!r} is also the name of another target; names must be unique")
        coded, info = encode_aux(ds, aux)
        coded = np.asarray(coded, dtype=float).reshape(len(ds.frame), -1)
        heads.append(task_head(info, name=aux.name, type=aux.type,
                               n_classes=coded.shape[1] if aux.type == "soft" else None,
                               adversarial=aux.adversarial))
        columns.append(coded)
        serves[aux.name] = tuple(t for t in aux.serves if t in main)
        dropped[aux.name] = tuple(dropped_features(ds, [aux]))
    Y = np.concatenate(columns, axis=1) if columns else np.zeros((len(ds.frame), 0))
    return SearchProblem(X=ds.X, Y=Y, split=ds.split, heads=tuple(heads), main=tuple(main),
                         serves=serves, dropped=dropped)
