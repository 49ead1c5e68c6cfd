"""The search: which models to train (Optuna, resumable), and the tables measured from them.

    plan.py     phases and the stable key of each model
    problem.py  the target matrix, trainer heads and model plans
    storage.py  Optuna storage: enqueue, claim, record, recover (the only optuna user)
    workers.py  several workers on a shared storage: heartbeats, locks, fair shares
    runner.py   run_search: phases in stacks, time limit, progress; finalize
    tables.py   rebuild_tables: every run-directory table from the storage
    summary.py  the closing text
"""

import sys
import types
from typing import Any

from taskscout import _api_search
from taskscout.search.plan import PHASE_ORDER, PlannedModel, model_seeds
from taskscout.search.runner import (
    PhaseOutcome,
    SearchProgress,
    SearchResult,
    finalize,
    run_phase,
    run_search,
    storage_url,
)
from taskscout.search.storage import claim_pending, enqueue_missing, recover_abandoned
from taskscout.search.summary import summary_text
from taskscout.search.tables import build_tables, rebuild_tables, unfinished_phases

__all__ = [
    "PHASE_ORDER", "PhaseOutcome", "PlannedModel", "SearchProgress", "SearchResult", "build_tables",
    "claim_pending", "enqueue_missing", "finalize", "model_seeds", "rebuild_tables", "recover_abandoned", "unfinished_phases",
    "run_phase", "run_search", "storage_url", "summary_text",
]


class _SearchPackage(types.ModuleType):
    """This package, which is also callable: `taskscout.search(data, ...)` is the Python API's
    search (taskscout.api.search; the root package names it, so search does not import the API)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _api_search(*args, **kwargs)


sys.modules[__name__].__class__ = _SearchPackage
