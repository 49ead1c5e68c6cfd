"""The affinity graph: one directed edge per measured gain(j -> i), strongest partners, GraphML."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import pandas as pd

from taskscout import rundir
from taskscout.errors import SpecError
from taskscout.grouping._tables import _num, _require_columns

# ---------------------------------------------------------------- the affinity graph


@dataclass(frozen=True)
class Transfer:
    """One edge of the affinity graph: what `source` does to `target`'s loss."""

    source: str
    target: str
    gain: float
    ci_low: float
    ci_high: float
    method: str
    real: bool


_METHOD_RANK = {"measured": 0, "surrogate": 1, "sampled": 2}


def _method_order(method: str) -> tuple[int, str]:
    return (_METHOD_RANK.get(method, 2), method)


def build_graph(
    affinity: pd.DataFrame, *, tasks: Sequence[str], aux_kinds: Mapping[str, str] | None = None
) -> nx.DiGraph:
    """The task-affinity graph: an edge j -> i for every measured or estimated gain(j -> i).

    Nodes are the main `tasks` (kind "task") and every auxiliary that appears as a source of a
    row whose target is a main task (kind "aux:<kind>" from `aux_kinds`, "aux" when unknown).
    Edge attributes: gain, ci_low, ci_high, n_seeds, method and real (the interval excludes zero,
    i.e. ci_low > 0). When several methods give a gain for the same edge the measured one is used
    (then the surrogate, then the others by name); every method's gain is kept as `gain_<method>`.
    """
    _require_columns(affinity, rundir.AFFINITY_COLUMNS, "affinity")
    aux_kinds = dict(aux_kinds or {})
    graph = nx.DiGraph()
    for t in tasks:
        graph.add_node(t, kind="task")
    main = set(tasks)
    rows = affinity[affinity["target"].isin(main) & (affinity["source"] != affinity["target"])]
    for (source, target), edge_rows in rows.groupby(["source", "target"], sort=False):
        source, target = str(source), str(target)
        if source not in graph:
            kind = aux_kinds.get(source)
            graph.add_node(source, kind=f"aux:{kind}" if kind else "aux")
        ordered = sorted(edge_rows.to_dict("records"), key=lambda r: _method_order(str(r["method"])))
        best = ordered[0]
        lo, hi = _num(best["ci_low"]), _num(best["ci_high"])
        n_seeds = _num(best["n_seeds"])
        attrs: dict[str, Any] = {
            "gain": _num(best["gain"]),
            "ci_low": lo,
            "ci_high": hi,
            "n_seeds": int(n_seeds) if math.isfinite(n_seeds) else 0,
            "method": str(best["method"]),
            "real": bool(lo > 0),
        }
        for r in ordered:
            attrs.setdefault(f"gain_{r['method']}", _num(r["gain"]))
        graph.add_edge(source, target, **attrs)
    return graph


def _transfer(graph: nx.DiGraph, u: str, v: str) -> Transfer:
    d = graph.edges[u, v]
    return Transfer(u, v, d["gain"], d["ci_low"], d["ci_high"], d["method"], bool(d["real"]))


def strongest_partners(
    graph: nx.DiGraph, task: str, k: int = 3, *, include_aux: bool = False
) -> list[Transfer]:
    """The (at most) `k` sources with the largest gain on `task`, best first.

    Only main tasks are partners unless `include_aux`; edges with an unknown gain are skipped.
    """
    if task not in graph:
        raise SpecError(f"task '{task}' is not in the affinity graph; it has {sorted(graph.nodes)}")
    edges = [
        _transfer(graph, u, task)
        for u in graph.predecessors(task)
        if (include_aux or graph.nodes[u]["kind"] == "task") and math.isfinite(graph.edges[u, task]["gain"])
    ]
    edges.sort(key=lambda e: (-e.gain, e.source))
    return edges[:k]


def negative_transfer_edges(graph: nx.DiGraph) -> list[Transfer]:
    """Every edge whose whole interval lies below zero (the source hurts the target), worst first."""
    edges = [_transfer(graph, u, v) for u, v, d in graph.edges(data=True) if d["ci_high"] < 0]
    edges.sort(key=lambda e: (e.gain, e.source, e.target))
    return edges


def save_graphml(graph: nx.DiGraph, path: str | Path) -> Path:
    """Write `graph` as GraphML, atomically (every attribute must be a str, int, float or bool)."""
    for owner, attrs in [*graph.nodes(data=True), *(((u, v), d) for u, v, d in graph.edges(data=True))]:
        for name, value in attrs.items():
            if not isinstance(value, (str, int, float, bool)):
                raise TypeError(f"attribute {name!r} of {owner!r} is a {type(value).__name__}; GraphML needs scalars")
    return rundir.write_text(path, "\n".join(nx.generate_graphml(graph)) + "\n")


def load_graphml(path: str | Path) -> nx.DiGraph:
    """Read a graph written by `save_graphml`."""
    return nx.read_graphml(Path(path))
