"""taskscout: which tasks to train together, which auxiliary tasks help, where to branch.

`import taskscout` stays fast: heavy parts (torch, optuna, plotly) load when first used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "StudySpec": "taskscout.spec",
    "resolve_spec": "taskscout.spec",
    "build_dataset": "taskscout.data",
    "Dataset": "taskscout.data",
    "TaskscoutError": "taskscout.errors",
    "run_search": "taskscout.search",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'taskscout' has no attribute {name!r}")
