"""Heads: the targets a model is trained on, described without torch.

A `Head` is what the trainer needs to know about one column group of the target matrix Y: its
name, its type (which loss and metric), its number of classes, whether it sits behind a
gradient-reversal layer, and the scale of a regression target. It lives in the data stage, so
every later stage (training, affinity, grouping, search, report, export) can name it without
importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from taskscout.errors import SpecError

HEAD_TYPES = ("binary", "multiclass", "ordinal", "regression", "soft")
# Loss families: binary and ordinal use cumulative BCE, multiclass and soft a softmax
# cross-entropy against class probabilities, regression the squared error.
FAMILIES = ("cumulative", "softmax", "squared")
_FAMILY = {"binary": 0, "ordinal": 0, "multiclass": 1, "soft": 1, "regression": 2}


@dataclass(frozen=True)
class Head:
    """One target the models can be trained on."""

    name: str
    type: str  # "binary" | "multiclass" | "ordinal" | "regression" | "soft"
    n_classes: int = 0  # multiclass/ordinal/soft: number of classes
    adversarial: bool = False  # behind a gradient-reversal layer
    scale: float = 1.0  # regression: std of the original units (RMSE is reported in them)

    def __post_init__(self) -> None:
        if self.type not in HEAD_TYPES:
            raise SpecError(f"head {self.name!r} has type {self.type!r}; expected one of {list(HEAD_TYPES)}")
        if self.type in ("multiclass", "ordinal", "soft") and self.n_classes < 2:
            raise SpecError(
                f"head {self.name!r} of type {self.type} needs n_classes >= 2. Got {self.n_classes} instead; "
                "pass the number of classes"
            )

    @property
    def width(self) -> int:
        """Columns this head occupies in Y: n_classes for "soft", else 1."""
        return self.n_classes if self.type == "soft" else 1

    @property
    def outputs(self) -> int:
        """Output units of this head's final layer."""
        if self.type in ("multiclass", "soft"):
            return self.n_classes
        if self.type == "ordinal":
            return self.n_classes - 1
        return 1

    @property
    def family(self) -> int:
        return _FAMILY[self.type]


def task_head(info: Any, *, name: str | None = None, type: str | None = None, n_classes: int | None = None,
              adversarial: bool = False) -> Head:
    """The head of a coded target described by a `TaskInfo` (type, classes, regression scale);
    `name`, `type` and `n_classes` override the task's own (an auxiliary coded from it)."""
    kind = type or info.type
    classes = n_classes if n_classes is not None else (info.n_classes if kind in ("multiclass", "ordinal") else 0)
    return Head(name=name or info.name, type=kind, n_classes=classes, adversarial=adversarial,
                scale=float(info.std) if kind == "regression" else 1.0)
