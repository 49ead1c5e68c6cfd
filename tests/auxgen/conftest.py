"""Shared helpers for the auxgen tests: small data sets made here, with planted structure."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from taskscout.data import Dataset, build_dataset
from taskscout.spec import StudySpec, resolve_spec


def make_study(frame: pd.DataFrame, **settings: Any) -> tuple[Dataset, StudySpec]:
    """The dataset and spec of a study over `frame`; `settings` is the nested study mapping
    (tasks=[...], aux={...}, ...), as a study file would hold it."""
    spec = resolve_spec(None, {"data": "made-in-test.csv", **settings})
    return build_dataset(spec, frame), spec


def contract_frame(n_per_entity: int = 150, seed: int = 0) -> pd.DataFrame:
    """Three entities observed over time; every auxiliary kind applies to its main tasks.

    grade: ordinal 0..3 (main), flag: binary cut from the numeric `level` (main, smooth source),
    other: a related regression task, site: a nuisance column (adversarial), x0..x4 and the
    categorical `colour`: inputs; y depends on x0*x1, x2, and not on x3, x4.
    """
    rng = np.random.default_rng(seed)
    parts = []
    for e in range(3):
        n = n_per_entity
        x = rng.normal(size=(n, 5))
        level = x[:, 0] * x[:, 1] + 0.8 * x[:, 2] + 0.3 * rng.normal(size=n)
        grade = np.digitize(level, [-1.0, 0.0, 1.0]).astype(float)
        grade[rng.random(n) < 0.1] = np.nan
        parts.append(pd.DataFrame({
            "day": np.arange(n), "ent": f"e{e}",
            **{f"x{i}": x[:, i] for i in range(5)},
            "colour": rng.choice(["red", "green", "blue"], size=n),
            "site": rng.choice(["s1", "s2"], size=n),
            "level": level, "grade": grade, "flag": (level > 0).astype(float),
            "other": 0.5 * x[:, 2] + rng.normal(size=n),
        }))
    return pd.concat(parts, ignore_index=True).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def contract_study(frame: pd.DataFrame | None = None, **extra: Any) -> tuple[Dataset, StudySpec]:
    frame = contract_frame() if frame is None else frame
    settings: dict[str, Any] = {
        "tasks": ["grade", "flag", "other"], "main": ["grade", "flag"], "time_column": "day",
        "entity_column": "ent", "aux": {"cap": 2, "adversarial": ["site"], "smooth_source": "level", "horizon": 2},
    }
    settings.update(extra)
    return make_study(frame, **settings)
