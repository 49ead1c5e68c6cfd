"""The auxiliary-task record and the base class every generator implements.

An auxiliary task is an extra target trained next to a main task so that the shared trunk learns
something the main task alone would not teach it (Ruder 2017 names six kinds; METHODS.md). A
generator looks at the data and one main task and proposes candidate targets of its kind, each an
`AuxTask` holding the target values row by row, what produced them (provenance) and whether they
may ever be a model input. Generators only propose and rank; one screening step
(`taskscout.auxgen.screening`) applies the shared rules: caps, too few labels, constant values and
near-copies of the main target (leaks).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd

from taskscout.data import SPLIT_NAMES, Dataset
from taskscout.spec import AUX_KINDS, StudySpec

AUX_TYPES = ("binary", "multiclass", "ordinal", "regression", "soft")


@dataclass(frozen=True, eq=False)
class AuxTask:
    """One candidate auxiliary target, aligned with the rows of a `Dataset`."""

    name: str  # stable, readable, unique in a candidate list, e.g. "price__ge_3"
    kind: str  # one of spec.AUX_KINDS
    serves: tuple[str, ...]  # the main task(s) it is meant to help
    values: np.ndarray  # (n,) raw target values, NaN = unlabelled; (n, C) probabilities for "soft"
    type: str  # one of AUX_TYPES
    provenance: dict  # {"columns": [...], "transform": "...", ...params}; JSON-able
    training_only: bool  # holds information a model may never take as input
    drops_inputs: tuple[str, ...] = ()  # raw input columns removed from any model trained on it
    adversarial: bool = False  # trained through gradient reversal
    score: float = float("nan")  # screening score (mutual information with the main target)
    dropped: str | None = None  # None, or why screening dropped it

    @property
    def labelled_mask(self) -> np.ndarray:
        """Rows that carry a label for this target."""
        return labelled_mask(self.values)

    def labelled(self, ds: Dataset) -> dict[str, int]:
        """Labelled rows per split ("train", "val", "test")."""
        mask = self.labelled_mask
        return {s: int(mask[ds.split == k].sum()) for k, s in enumerate(SPLIT_NAMES)}


def labelled_mask(values: np.ndarray) -> np.ndarray:
    """True where `values` holds a label: a non-missing scalar, or a fully finite soft row."""
    if values.ndim == 2:
        return np.isfinite(values.astype(float)).all(axis=1)
    return pd.notna(pd.Series(values)).to_numpy()


class AuxGenerator(abc.ABC):
    """Proposes auxiliary targets of one kind for one main task.

    The idea: a main task may learn better when the network must also predict something related
    (another label, a smoother version of the target, a hard-to-learn feature, a future value...).
    Each subclass encodes one recipe for such targets. `propose` returns candidates in the order
    the generator prefers them (best first), each with `serves=(main,)` and a `score`; screening
    keeps the first `spec.aux.cap_for(kind)` that pass the shared checks. Names must depend only
    on the construction (columns and transform), so the same target proposed for two main tasks
    merges into one candidate serving both. A generator must be deterministic for a given
    dataset and spec, and never read labels of validation or test rows into training rows.
    """

    kind: ClassVar[str]

    def why_not(self, ds: Dataset, spec: StudySpec, main: str) -> str | None:
        """Why this kind has no candidates for `main` (None when it applies)."""
        return None

    @abc.abstractmethod
    def propose(self, ds: Dataset, spec: StudySpec, main: str) -> list[AuxTask]:
        """Candidates for main task `main`, best first."""


GENERATORS: dict[str, AuxGenerator] = {}


def register(cls: type[AuxGenerator]) -> type[AuxGenerator]:
    """Class decorator: add one instance of a generator to `GENERATORS` under its kind."""
    if cls.kind not in AUX_KINDS:
        raise ValueError(f"generator kind {cls.kind!r} is not one of {list(AUX_KINDS)}")
    GENERATORS[cls.kind] = cls()
    return cls
