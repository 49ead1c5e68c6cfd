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
    "open_run": "taskscout.api",
    "Run": "taskscout.api",
    "Recommendation": "taskscout.recommendation",
}

__all__ = ["__version__", "search", *_LAZY]


def _api_search(*args: Any, **kwargs: Any) -> Any:
    """taskscout.api.search: what calling `taskscout.search` runs."""
    return importlib.import_module("taskscout.api").search(*args, **kwargs)


def __getattr__(name: str) -> Any:
    # `taskscout.search` is both the search package and, called, taskscout.api.search (a package
    # attribute cannot be two things, so the package is made callable: taskscout/search/__init__.py)
    if name == "search":
        return importlib.import_module("taskscout.search")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'taskscout' has no attribute {name!r}")
