"""The extension point for affinity estimators: one abstract base, one registry.

An affinity estimator answers "how much does training on task j help task i?" for every ordered
pair of tasks, at some cost. `measured` trains the pairs and is the ground truth; the others
(`tag`, `gradcos`, `rsa`, `surrogate`) are cheaper or see higher-order effects, and
`taskscout.affinity.agreement` scores them against `measured` on the user's own data.

Every estimator takes the same `AffinityProblem` (the coded data, the heads the models can train,
which of them are main tasks, the model and training settings, the seeds and the device) and
returns an `EstimatorResult`: source -> target rows in the `affinity.csv` format
(`rundir.AFFINITY_COLUMNS`, its own `method`) plus the compute it spent (models trained, epochs,
seconds). Implementations live one per file and register themselves with `register_estimator`;
`make_estimator(name, **params)` builds one by name.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from taskscout.affinity.measured import t_interval
from taskscout.data import Dataset, Head, task_head
from taskscout.errors import SpecError, close_matches
from taskscout.rundir import AFFINITY_COLUMNS, COMPUTE_COLUMNS
from taskscout.spec import ModelSettings, TrainingSettings


@dataclass(frozen=True)
class Compute:
    """What an estimate cost: models trained, epochs summed over those models, wall seconds."""

    models: int = 0
    epochs: int = 0
    seconds: float = 0.0

    def __add__(self, other: Compute) -> Compute:
        return Compute(self.models + other.models, self.epochs + other.epochs, self.seconds + other.seconds)

    def row(self, phase: str) -> dict[str, Any]:
        """One row of compute.csv (`rundir.COMPUTE_COLUMNS`)."""
        return dict(zip(COMPUTE_COLUMNS, (phase, self.models, self.epochs, round(self.seconds, 3)), strict=True))


@dataclass(frozen=True, eq=False)
class AffinityProblem:
    """Everything an estimator may use: coded data, heads, main tasks, settings, seeds, device.

    `Y` holds one block of `head.width` columns per head, in head order (NaN = unlabelled), as
    `training.train_models` expects; `main` are indices into `heads`. Estimators write a row for
    every ordered pair of main tasks, and for a non-main source (an auxiliary head) -> main target
    where they can score it (`ordered_pairs`; `surrogate` scores main tasks only).
    """

    X: np.ndarray
    Y: np.ndarray
    heads: tuple[Head, ...]
    split: np.ndarray
    main: tuple[int, ...]
    model: ModelSettings = field(default_factory=ModelSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    seeds: tuple[int, ...] = (0,)
    device: str = "auto"

    def __post_init__(self) -> None:
        width = sum(h.width for h in self.heads)
        if self.Y.ndim != 2 or self.Y.shape[1] != width:
            raise SpecError(
                f"Y has shape {self.Y.shape} but the {len(self.heads)} heads occupy {width} columns; "
                f"give one block of head.width columns per head"
            )
        if self.X.shape[0] != self.Y.shape[0] or self.split.shape[0] != self.X.shape[0]:
            raise SpecError(f"X, Y and split must have the same rows; got {self.X.shape[0]}, {self.Y.shape[0]}, {self.split.shape[0]}")
        if not self.main or any(not 0 <= m < len(self.heads) for m in self.main):
            raise SpecError(f"main must name head indices in 0..{len(self.heads) - 1}; got {self.main}")
        if len(set(h.name for h in self.heads)) != len(self.heads):
            raise SpecError(f"head names must be unique; got {[h.name for h in self.heads]}")
        if not self.seeds:
            raise SpecError("an affinity estimate needs at least one seed")

    @classmethod
    def from_dataset(
        cls,
        ds: Dataset,
        *,
        main: Sequence[str] | None = None,
        model: ModelSettings | None = None,
        training: TrainingSettings | None = None,
        seeds: Sequence[int] | None = None,
        device: str = "auto",
    ) -> AffinityProblem:
        """The problem over the data set's tasks; `main` names main tasks (default: every task)."""
        heads = tuple(task_head(t) for t in ds.tasks)
        names = [h.name for h in heads]
        main = tuple(main) if main else tuple(names)
        for m in main:
            if m not in names:
                raise SpecError(f"main task {m!r} is not a task of the data set{close_matches(m, names)}")
        training = training or TrainingSettings()
        return cls(
            X=ds.X, Y=ds.Y, heads=heads, split=ds.split, main=tuple(names.index(m) for m in main),
            model=model or ModelSettings(), training=training,
            seeds=tuple(seeds) if seeds is not None else tuple(range(training.seeds)), device=device,
        )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.heads)

    @property
    def main_names(self) -> tuple[str, ...]:
        return tuple(self.heads[m].name for m in self.main)

    def columns(self, head: int) -> slice:
        """The columns of Y that belong to head `head`."""
        start = sum(h.width for h in self.heads[:head])
        return slice(start, start + self.heads[head].width)

    def labelled(self, head: int) -> np.ndarray:
        """Bool (n,): rows where head `head` has a label."""
        return np.isfinite(self.Y[:, self.columns(head)]).all(axis=1)

    def ordered_pairs(self) -> list[tuple[int, int]]:
        """(source, target) head indices: every target a main task, every other head a source."""
        return [(s, t) for t in self.main for s in range(len(self.heads)) if s != t]


@dataclass(frozen=True, eq=False)
class EstimatorResult:
    """An estimator's answer: affinity rows, what it cost, and any tables of its own.

    `rows` has `rundir.AFFINITY_COLUMNS`; `gain` is the estimator's score for source -> target
    (higher = the source helps the target more; its scale is the estimator's own, only
    `measured` is a relative loss change). `tables` holds extras, e.g. the per-layer similarities
    of `rsa` ("rsa_layers") or the coefficients of `surrogate`.
    """

    method: str
    rows: pd.DataFrame
    compute: Compute
    tables: Mapping[str, pd.DataFrame] = field(default_factory=dict)


def affinity_rows(
    method: str,
    values: Mapping[tuple[str, str], Sequence[float]],
    *,
    level: float = 0.95,
) -> pd.DataFrame:
    """Rows for `affinity.csv` from per-seed values: mean and a Student t interval over seeds
    (`measured.t_interval`: non-finite values dropped; one seed gives (-inf, inf), as for the
    measured gains).

    `values[(source, target)]` lists one value per seed.
    """
    out = []
    for (source, target), vals in values.items():
        iv = t_interval(vals, level=level)
        out.append((source, target, iv.mean, iv.low, iv.high, iv.n, method))
    return pd.DataFrame(out, columns=list(AFFINITY_COLUMNS))


class AffinityEstimator(abc.ABC):
    """Base of every affinity estimator: scores how much each task helps each main task.

    The idea: multi-task learning helps task i when what task j teaches the shared layers also
    lowers task i's loss. Training i with j and comparing with i alone measures this directly
    (`measured`, O(T^2) models); an estimator answers the same question from cheaper evidence:
    the effect of j's gradient step on i's loss (`tag`), the alignment of their gradients
    (`gradcos`), the similarity of what single-task networks learn (`rsa`), or a regression over
    random task subsets that also captures higher-order effects (`surrogate`).

    Subclasses set `name` (the `method` of their rows), store their parameters in a keyword-only
    constructor (no work there), and implement `estimate`. They register with
    `@register_estimator`, so the registry is filled where estimators are defined.
    """

    name: ClassVar[str]

    @abc.abstractmethod
    def estimate(
        self, problem: AffinityProblem, *, progress: Callable[[int], None] | None = None
    ) -> EstimatorResult:
        """Affinity rows for every ordered pair of `problem.ordered_pairs()` and the compute spent.

        Promises: one row per (source, target) pair, `method == self.name`, a finite `gain`
        whenever the source and target have labelled training rows; `progress(n)` (if given) is
        called with the number of models or steps finished.
        """

    def params(self) -> dict[str, Any]:
        """The constructor parameters, for records (sklearn-style: stored as given)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


ESTIMATORS: dict[str, type[AffinityEstimator]] = {}


def register_estimator(cls: type[AffinityEstimator]) -> type[AffinityEstimator]:
    """Class decorator: add an estimator to the registry under its `name`."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} must set a non-empty class attribute `name`")
    if name in ESTIMATORS and ESTIMATORS[name] is not cls:
        raise TypeError(f"two estimators are named {name!r}: {ESTIMATORS[name].__name__} and {cls.__name__}")
    ESTIMATORS[name] = cls
    return cls


def make_estimator(name: str, **params: Any) -> AffinityEstimator:
    """The registered estimator `name`, built with `params`; a clear error for unknown names."""
    if name not in ESTIMATORS:
        raise SpecError(
            f"unknown affinity estimator {name!r}{close_matches(name, ESTIMATORS)}; "
            f"available: {', '.join(sorted(ESTIMATORS))}"
        )
    try:
        return ESTIMATORS[name](**params)
    except TypeError as e:
        raise SpecError(f"estimator {name!r} got invalid parameters {sorted(params)}: {e}") from None
