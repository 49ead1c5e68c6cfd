"""Shared helpers over the run-directory tables: column checks, group keys, numbers."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from taskscout import rundir
from taskscout.errors import MissingResultsError

_EPS = 1e-12


# ---------------------------------------------------------------- table checks


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MissingResultsError(
            f"the {what} table has no column(s) {', '.join(missing)}; expected columns "
            f"{', '.join(columns)}; rerun `taskscout search` to rewrite it"
        )


def _split_group(name: str) -> tuple[str, ...]:
    return tuple(str(name).split(rundir.GROUP_SEP))


def _key(tasks: Iterable[str], order: Sequence[str]) -> tuple[str, ...]:
    """A group as a tuple of task names in study order (the hashable twin of rundir.group_key)."""
    if not isinstance(order, tuple):
        return tuple(rundir.group_key(tasks, order).split(rundir.GROUP_SEP))
    rank, plain = _rank(order)  # solvers call this O(T^2) times: the study order's ranks are built once
    if plain:
        try:
            return tuple(sorted(tasks, key=rank.__getitem__))
        except KeyError:  # a name outside the study order: sorted after it, by name
            pass
    n = len(rank)
    ordered = sorted(tasks, key=lambda t: (rank.get(t, n), t))
    return tuple(rundir.GROUP_SEP.join(ordered).split(rundir.GROUP_SEP))


@functools.lru_cache(maxsize=64)
def _rank(order: tuple[str, ...]) -> tuple[dict[str, int], bool]:
    """The study order's ranks, and whether no name holds the group separator (then a group's
    key is its members sorted by rank, with no need to join and split)."""
    return {t: i for i, t in enumerate(order)}, not any(rundir.GROUP_SEP in t for t in order)


def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f
