"""The report's figures: for each section, plain data computed from run-directory tables, then drawn.

Every ``*_table`` / ``*_data`` function takes pandas frames or parsed JSON from the run directory
and returns a NamedTuple of plain values, so it can be tested without plotly or a browser. Every
``draw_*`` function turns one of those into a plotly figure.

plotly renders a small subset of HTML inside titles, tick labels, legends, hover labels and
annotations, and decodes ``&lt;``, ``&gt;`` and ``&amp;``. Every string that comes from the
user's data (task, column and study names) therefore goes through ``text()`` before it enters a
figure: a column named ``<b>x</b>`` shows as those characters, never as markup.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from taskscout.recommendation import Recommendation

MEASURED = "measured"  # affinity.csv method of gains measured by training (the ground truth)
PHASE_ORDER = ("single", "pairs", "aux", "depth", "subsets", "estimators")
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)
POSITIVE, NEGATIVE = "#2166ac", "#b2182b"
MAX_EDGE_WIDTH = 8.0  # pixels, for the largest |gain| in the graph
MIN_EDGE_WIDTH = 1.0
HEATMAP_LABELS_MAX = 30  # above this many tasks the heatmap's cells carry no text (hover shows it)
GRAPH_ALL_EDGES_MAX = 20  # above this many tasks the graph is laid out by group and shows real edges only


def text(value: Any) -> str:
    """`value` as figure text: markup characters escaped so plotly shows them literally.

    Quotes stay as they are: plotly decodes only a few named entities (&amp; &lt; &gt; ...), so
    an escaped quote would show as ``&quot;``; quotes are harmless in SVG text.
    """
    return html.escape(str(value), quote=False)


def colour(index: int | None) -> str:
    """The colour of group `index` (grey for None)."""
    return "#999999" if index is None else PALETTE[index % len(PALETTE)]


def _finite(v: Any) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _error_bars(mid: Sequence[float], low: Sequence[float], high: Sequence[float]) -> dict[str, Any]:
    """Plotly asymmetric error bars from intervals; a missing bound draws no bar on that side."""
    return {"type": "data", "symmetric": False,
            "array": [h - m if _finite(h) else 0 for m, h in zip(mid, high, strict=True)],
            "arrayminus": [m - lo if _finite(lo) else 0 for m, lo in zip(mid, low, strict=True)]}


def _num(v: Any) -> float:
    return float(v) if _finite(v) else float("nan")


def significant(ci_low: Any, ci_high: Any) -> bool:
    """A gain is real when its interval excludes zero."""
    return (_finite(ci_low) and float(ci_low) > 0) or (_finite(ci_high) and float(ci_high) < 0)


def fmt(v: Any, digits: int = 3, signed: bool = False) -> str:
    """A number for display ("n/a" for missing)."""
    if not _finite(v):
        return "n/a"
    return f"{float(v):+.{digits}f}" if signed else f"{float(v):.{digits}f}"


def interval(lo: Any, hi: Any, digits: int = 3) -> str:
    if not (_finite(lo) and _finite(hi)):
        return "n/a"
    return f"[{float(lo):+.{digits}f}, {float(hi):+.{digits}f}]"


def _as_list(v: Any) -> list[str]:
    """A list cell of trials.parquet (list, numpy array or JSON text) as a list of names."""
    if v is None:
        return []
    if isinstance(v, str):
        try:
            parsed = json.loads(v)
        except json.JSONDecodeError:
            return [v]
        return [str(x) for x in parsed] if isinstance(parsed, list) else [str(parsed)]
    if isinstance(v, float) and math.isnan(v):
        return []
    return [str(x) for x in list(v)]


def _layout(fig: go.Figure, *, title: str, height: int, **kw: Any) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.01, "xanchor": "left"}, height=height,
        margin={"l": 60, "r": 30, "t": 60, "b": 50}, template="plotly_white", **kw,
    )
    return fig


def _measured(affinity: pd.DataFrame) -> pd.DataFrame:
    if affinity is None or affinity.empty:
        return pd.DataFrame(columns=["source", "target", "gain", "ci_low", "ci_high", "n_seeds", "method"])
    a = affinity.copy()
    a["source"] = a["source"].astype(str)
    a["target"] = a["target"].astype(str)
    return a[a["method"].astype(str) == MEASURED]


def _pairwise(affinity: pd.DataFrame) -> pd.DataFrame:
    """Measured pairwise gains, and the sampled-subset estimates (method "sampled") of the pairs
    nobody measured: a search over many tasks trains sampled subsets instead of pairs."""
    measured = _measured(affinity)
    if affinity is None or affinity.empty:
        return measured
    sampled = affinity[affinity["method"].astype(str) == "sampled"].copy()
    if sampled.empty:
        return measured
    sampled["source"], sampled["target"] = sampled["source"].astype(str), sampled["target"].astype(str)
    have = set(zip(measured["source"], measured["target"], strict=True))
    sampled = sampled[[(a, b) not in have for a, b in zip(sampled["source"], sampled["target"], strict=True)]]
    return pd.concat([measured, sampled], ignore_index=True) if len(measured) else sampled


def group_order(tasks: Sequence[str], recommendation: Recommendation | None
                ) -> tuple[tuple[str, ...], tuple[tuple[int, int], ...]]:
    """Tasks ordered by the group that serves them (groups in recommendation order, study order
    inside), and the [start, end) span of every group of two or more tasks in that order."""
    tasks = tuple(tasks)
    assignment = recommendation.assignment if recommendation is not None else {}
    if not assignment:
        return tasks, ()
    key = {t: (int(assignment[t]) if assignment.get(t) is not None else len(tasks), k) for k, t in enumerate(tasks)}
    ordered = tuple(sorted(tasks, key=lambda t: key[t]))
    spans, start = [], 0
    for k in range(1, len(ordered) + 1):
        if k == len(ordered) or key[ordered[k]][0] != key[ordered[start]][0]:
            if k - start >= 2 and key[ordered[start]][0] < len(tasks):
                spans.append((start, k))
            start = k
    return ordered, tuple(spans)


# ---------------------------------------------------------------- summary


class GroupRow(NamedTuple):
    tasks: tuple[str, ...]
    branch_layer: int | None
    branch_source: str
    aux: tuple[str, ...]
    gains: tuple[tuple[str, float, float, float], ...]  # (task, expected gain, ci low, ci high)
    # (auxiliary, served task): a served task's auxiliary left out of the network because it is a
    # copy of another member, which the network trains as a task anyway
    member_aux: tuple[tuple[str, str], ...] = ()


class Summary(NamedTuple):
    study: str
    data: str
    tasks: tuple[str, ...]
    main: tuple[str, ...]
    budget: str
    seeds: int | None
    epochs: int | None
    # Over every phase of compute.csv (subsets and estimators included), else over trials.parquet
    # (the single, pairs, aux and depth phases only).
    models_trained: int
    epochs_trained: int
    # compute.csv: each phase's wall time spent training (parallel models share it), summed over
    # the phases; without it, the trials' own times. The search's total time is longer: it also
    # builds the data and candidates and writes the tables.
    seconds: float
    phases: tuple[tuple[str, int, int, float], ...]  # compute.csv rows: (phase, models, epochs, seconds)
    networks: int | None
    verdict: str
    reasons: tuple[str, ...]
    groups: tuple[GroupRow, ...]


def summary_data(
    spec: Mapping[str, Any], recommendation: Recommendation | None,
    trials: pd.DataFrame | None, compute: pd.DataFrame | None,
) -> Summary:
    """What was studied, what it cost, and what taskscout recommends."""
    rec = recommendation
    training = spec.get("training", {}) or {}
    tasks = rec.tasks if rec is not None else tuple(spec.get("tasks") or ())
    main = tuple(spec.get("main") or ()) or tasks
    def total(frame: pd.DataFrame, column: str) -> float:
        return float(pd.to_numeric(frame[column], errors="coerce").fillna(0).sum())

    phases: tuple[tuple[str, int, int, float], ...] = ()
    if compute is not None and not compute.empty:
        # trials.parquet holds only the measured phases' models; compute.csv has every phase
        models, epochs, seconds = int(total(compute, "models")), int(total(compute, "epochs")), total(compute, "seconds")
        phases = tuple((str(r.phase), int(r.models) if _finite(r.models) else 0,
                        int(r.epochs) if _finite(r.epochs) else 0, _num(r.seconds))
                       for r in compute.itertuples(index=False))
    else:
        models = 0 if trials is None else len(trials)
        epochs = 0 if trials is None or "epochs" not in trials else int(total(trials, "epochs"))
        seconds = total(trials, "seconds") if trials is not None and "seconds" in trials else float("nan")
    groups = []
    for g in rec.groups if rec is not None else ():
        listed = {a.name for a in g.aux}
        member_aux = tuple(dict.fromkeys(
            (a.name, t) for t in g.serves for a in rec.auxiliaries.get(t, ()) if a.name not in listed
        ))
        gains = tuple(
            (t, _num(g.expected_gain.get(t)), _num((g.ci.get(t) or (None, None))[0]), _num((g.ci.get(t) or (None, None))[1]))
            for t in g.tasks
        )
        groups.append(GroupRow(
            tasks=g.tasks, branch_layer=g.branch_layer, branch_source=g.branch_source or "",
            aux=tuple(a.name for a in g.aux), gains=gains, member_aux=member_aux,
        ))
    networks = (rec.networks if rec.networks is not None else len(groups) or None) if rec is not None else None
    return Summary(
        study=str(spec.get("name", "")), data=str(spec.get("data", "")), tasks=tasks, main=main,
        budget=str(spec.get("budget", "")), seeds=training.get("seeds"), epochs=training.get("epochs"),
        models_trained=models, epochs_trained=epochs, seconds=seconds, phases=phases,
        networks=networks, verdict=rec.verdict if rec is not None else "",
        reasons=rec.reasons if rec is not None else (), groups=tuple(groups),
    )


# ---------------------------------------------------------------- affinity heatmap


class AffinityMatrix(NamedTuple):
    tasks: tuple[str, ...]   # row i = target, column j = source
    gain: np.ndarray         # gain[i, j]: what source j gives target i (NaN: not measured)
    ci_low: np.ndarray
    ci_high: np.ndarray
    n_seeds: np.ndarray
    significant: np.ndarray  # bool: the interval excludes zero
    blocks: tuple[tuple[int, int], ...] = ()  # [start, end) of each recommended group of 2+ tasks


def affinity_matrix(affinity: pd.DataFrame, tasks: Sequence[str],
                    recommendation: Recommendation | None = None) -> AffinityMatrix:
    """Pairwise gains (measured, else sampled-subset estimates) as a target x source matrix, in
    study order, or with a `recommendation` ordered by its groups (`group_order`)."""
    tasks, blocks = group_order(tasks, recommendation)
    n = len(tasks)
    idx = {t: i for i, t in enumerate(tasks)}
    gain, lo, hi, seeds = (np.full((n, n), np.nan) for _ in range(4))
    sig = np.zeros((n, n), dtype=bool)
    for r in _pairwise(affinity).itertuples(index=False):
        i, j = idx.get(r.target), idx.get(r.source)
        if i is None or j is None or i == j:
            continue
        gain[i, j], lo[i, j], hi[i, j], seeds[i, j] = _num(r.gain), _num(r.ci_low), _num(r.ci_high), _num(r.n_seeds)
        sig[i, j] = significant(r.ci_low, r.ci_high)
    return AffinityMatrix(tasks, gain, lo, hi, seeds, sig, blocks)


def _none_nan(a: np.ndarray) -> list:
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in a]


def draw_affinity_heatmap(m: AffinityMatrix) -> go.Figure:
    names = [text(t) for t in m.tasks]
    finite = m.gain[np.isfinite(m.gain)]
    span = float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1.0
    n = len(m.tasks)
    labels = [
        [("" if not np.isfinite(m.gain[i, j]) or n > HEATMAP_LABELS_MAX
          else f"{m.gain[i, j]:+.2f}" + (" ★" if m.significant[i, j] else ""))
         for j in range(n)] for i in range(n)
    ]
    custom = [
        [[interval(m.ci_low[i, j], m.ci_high[i, j]), fmt(m.n_seeds[i, j], 0),
          "real (interval excludes 0)" if m.significant[i, j] else "within seed noise"] for j in range(n)]
        for i in range(n)
    ]
    fig = go.Figure(go.Heatmap(
        z=_none_nan(m.gain), x=names, y=names, zmid=0, zmin=-span, zmax=span, colorscale="RdBu",
        text=labels, texttemplate="%{text}", customdata=custom,
        colorbar={"title": {"text": "gain"}},
        hovertemplate="target %{y}<br>source %{x}<br>gain %{z:+.3f} %{customdata[0]}"
                      "<br>seeds %{customdata[1]}<br>%{customdata[2]}<extra></extra>",
    ))
    for a, b in m.blocks:  # the recommended groups, outlined on the diagonal
        fig.add_shape(type="rect", x0=a - 0.5, x1=b - 0.5, y0=a - 0.5, y1=b - 0.5, xref="x", yref="y",
                      line={"color": "black", "width": 2}, fillcolor="rgba(0,0,0,0)")
    small = n <= HEATMAP_LABELS_MAX
    fig.update_xaxes(title_text="source (trained alongside)", side="bottom", type="category",
                     showticklabels=small or n <= 2 * HEATMAP_LABELS_MAX)
    fig.update_yaxes(title_text="target (whose loss is measured)", autorange="reversed", type="category",
                     showticklabels=small or n <= 2 * HEATMAP_LABELS_MAX)
    title = "Gain of the target from training with the source (★: interval excludes 0)" if small else (
        "Gain of the target from training with the source; outlined: the recommended groups (hover for values)")
    return _layout(fig, title=title, height=max(380, min(60 * n + 160, 12 * n + 520)))


# ---------------------------------------------------------------- task-affinity graph


class GraphNode(NamedTuple):
    task: str
    x: float
    y: float
    group: int | None          # index of the group that serves the task (recommendation assignment)


class GraphEdge(NamedTuple):
    source: str
    target: str
    gain: float
    ci_low: float
    ci_high: float
    width: float               # pixels: MIN_EDGE_WIDTH + (MAX - MIN) * |gain| / max |gain|
    dash: str                  # "dash" for negative transfer, else "solid"
    significant: bool


class AffinityGraph(NamedTuple):
    nodes: tuple[GraphNode, ...]
    edges: tuple[GraphEdge, ...]
    groups: tuple[tuple[str, ...], ...]


def affinity_graph(affinity: pd.DataFrame, recommendation: Recommendation | None,
                   tasks: Sequence[str]) -> AffinityGraph:
    """Tasks on a circle (first task at the top, clockwise), one directed edge per measured gain.

    Above GRAPH_ALL_EDGES_MAX tasks the circle is laid out by group (each recommended group an
    arc of its own) and only real edges (interval excluding zero) are drawn: thousands of
    within-noise edges would hide the structure and weigh megabytes."""
    tasks = tuple(tasks)
    assignment = recommendation.assignment if recommendation is not None else {}
    n = len(tasks)
    many = n > GRAPH_ALL_EDGES_MAX
    if many:
        tasks = group_order(tasks, recommendation)[0]
    nodes = tuple(
        GraphNode(t, round(math.cos(math.pi / 2 - 2 * math.pi * k / n), 12),
                  round(math.sin(math.pi / 2 - 2 * math.pi * k / n), 12),
                  None if assignment.get(t) is None else int(assignment[t]))
        for k, t in enumerate(tasks)
    )
    rows = [
        r for r in _pairwise(affinity).itertuples(index=False)
        if r.source in tasks and r.target in tasks and r.source != r.target and _finite(r.gain)
        and (not many or significant(r.ci_low, r.ci_high))
    ]
    top = max((abs(float(r.gain)) for r in rows), default=0.0)
    edges = tuple(
        GraphEdge(
            r.source, r.target, float(r.gain), _num(r.ci_low), _num(r.ci_high),
            MIN_EDGE_WIDTH + (MAX_EDGE_WIDTH - MIN_EDGE_WIDTH) * (abs(float(r.gain)) / top if top > 0 else 0.0),
            "dash" if float(r.gain) < 0 else "solid", significant(r.ci_low, r.ci_high),
        )
        for r in rows
    )
    groups = tuple(g.tasks for g in recommendation.groups) if recommendation is not None else ()
    return AffinityGraph(nodes, edges, groups)


def draw_affinity_graph(g: AffinityGraph) -> go.Figure:
    fig = go.Figure()
    pos = {n.task: (n.x, n.y) for n in g.nodes}
    for e in g.edges:
        (x0, y0), (x1, y1) = pos[e.source], pos[e.target]
        # The two directions of a pair run side by side: shift each to its own left.
        dx, dy = x1 - x0, y1 - y0
        norm = math.hypot(dx, dy) or 1.0
        ox, oy = -dy / norm * 0.035, dx / norm * 0.035
        ax, ay = x0 + ox + 0.72 * dx, y0 + oy + 0.72 * dy
        hover = f"{text(e.source)} → {text(e.target)}<br>gain {e.gain:+.3f} {interval(e.ci_low, e.ci_high)}"
        fig.add_trace(go.Scatter(
            x=[x0 + ox, ax, x1 + ox], y=[y0 + oy, ay, y1 + oy], mode="lines+markers",
            line={"width": e.width, "dash": e.dash, "color": POSITIVE if e.gain >= 0 else NEGATIVE},
            marker={"size": [0, 11, 0], "symbol": "arrow", "angleref": "previous",
                    "color": POSITIVE if e.gain >= 0 else NEGATIVE},
            opacity=1.0 if e.significant else 0.3, hoverinfo="text",
            hovertext=["", hover, ""], showlegend=False,
        ))
    by_group: dict[int | None, list[GraphNode]] = {}
    for n in g.nodes:
        by_group.setdefault(n.group, []).append(n)
    many = len(g.nodes) > GRAPH_ALL_EDGES_MAX
    for gi, members in sorted(by_group.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)):
        label = (f"group {gi + 1}: " + ", ".join(text(t) for t in g.groups[gi])) if gi is not None and gi < len(g.groups) else "no group"
        if many and gi is not None and gi < len(g.groups):
            label = f"group {gi + 1} ({len(g.groups[gi])} tasks)"
        fig.add_trace(go.Scatter(
            x=[n.x for n in members], y=[n.y for n in members], mode="markers" if many else "markers+text",
            marker={"size": 12 if many else 26, "color": colour(gi), "line": {"width": 2, "color": "white"}},
            text=[text(n.task) for n in members],
            textposition=["top center" if n.y >= 0 else "bottom center" for n in members],
            hovertext=[f"{text(n.task)}<br>{label}" for n in members], hoverinfo="text", name=label,
        ))
    fig.update_xaxes(visible=False, range=[-1.5, 1.5])
    fig.update_yaxes(visible=False, range=[-1.4, 1.4], scaleanchor="x")
    title = ("Task-affinity graph: arrow source → target, width = |gain|, dashed = negative, faint = within noise"
             if not many else "Task-affinity graph by recommended group: real gains only (interval excludes 0), "
                              "arrow source → target, width = |gain|, dashed = negative; hover a node for its name")
    return _layout(fig, title=title, height=min(max(560, 45 * len(g.nodes) + 280), 1100),
                   legend={"orientation": "h", "y": -0.05})


# ---------------------------------------------------------------- grouping: branch tree and Pareto front


class TreeNode(NamedTuple):
    group: int
    task: str | None   # None on the shared part
    layer: int         # 0 = input, 1..L trunk layers, L + 1 = the task's head
    x: float
    kind: str          # "input" | "shared" | "branch" | "head"


class TreeEdge(NamedTuple):
    group: int
    task: str | None
    x0: float
    y0: int
    x1: float
    y1: int
    kind: str          # "shared" | "branch" | "head"


class GroupTree(NamedTuple):
    depth: int
    groups: tuple[tuple[str, ...], ...]
    branch_layers: tuple[int, ...]
    nodes: tuple[TreeNode, ...]
    edges: tuple[TreeEdge, ...]


def group_tree(recommendation: Recommendation, depth: int) -> GroupTree:
    """Each group as a tree over the trunk: layers 1..b shared, b+1..L one branch per task, then heads.

    Heads sit at x = 0, 1, 2, ... left to right, with an extra 0.5 between groups; the shared
    part of a group sits above the mean x of its heads.
    """
    nodes: list[TreeNode] = []
    edges: list[TreeEdge] = []
    groups, layers = [], []
    x = 0.0
    for gi, g in enumerate(recommendation.groups):
        tasks = g.tasks
        b = max(0, min(g.branch_layer, depth))
        groups.append(tasks)
        layers.append(b)
        xs = [x + k for k in range(len(tasks))]
        x += len(tasks) + 0.5
        cx = sum(xs) / len(xs) if xs else x
        nodes.append(TreeNode(gi, None, 0, cx, "input"))
        for layer in range(1, b + 1):
            nodes.append(TreeNode(gi, None, layer, cx, "shared"))
            edges.append(TreeEdge(gi, None, cx, layer - 1, cx, layer, "shared"))
        for t, xt in zip(tasks, xs, strict=True):
            prev = (cx, b)
            for layer in range(b + 1, depth + 1):
                nodes.append(TreeNode(gi, t, layer, xt, "branch"))
                edges.append(TreeEdge(gi, t, prev[0], prev[1], xt, layer, "branch"))
                prev = (xt, layer)
            nodes.append(TreeNode(gi, t, depth + 1, xt, "head"))
            edges.append(TreeEdge(gi, t, prev[0], prev[1], xt, depth + 1, "head"))
    return GroupTree(depth, tuple(groups), tuple(layers), tuple(nodes), tuple(edges))


def draw_group_tree(tree: GroupTree, aux: Mapping[int, Sequence[str]] | None = None) -> go.Figure:
    fig = go.Figure()
    aux = aux or {}
    for gi, tasks in enumerate(tree.groups):
        c = colour(gi)
        label = f"group {gi + 1}: " + ", ".join(text(t) for t in tasks) + f" (branch after layer {tree.branch_layers[gi]})"
        xs: list[float | None] = []
        ys: list[int | None] = []
        for e in tree.edges:
            if e.group == gi and e.kind == "shared":
                xs += [e.x0, e.x1, None]
                ys += [e.y0, e.y1, None]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": c, "width": 9},
                                 name=label, legendgroup=str(gi), hoverinfo="skip"))
        xs, ys = [], []
        for e in tree.edges:
            if e.group == gi and e.kind != "shared":
                xs += [e.x0, e.x1, None]
                ys += [e.y0, e.y1, None]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": c, "width": 3},
                                 legendgroup=str(gi), showlegend=False, hoverinfo="skip"))
        layer_nodes = [n for n in tree.nodes if n.group == gi and n.kind in ("input", "shared", "branch")]
        fig.add_trace(go.Scatter(
            x=[n.x for n in layer_nodes], y=[n.layer for n in layer_nodes], mode="markers",
            marker={"size": 9, "color": c, "symbol": "square"}, legendgroup=str(gi), showlegend=False,
            hovertext=[
                ("input" if n.kind == "input" else f"layer {n.layer}, "
                 + ("shared by " + ", ".join(text(t) for t in tasks) if n.kind == "shared" else f"own to {text(n.task)}"))
                for n in layer_nodes
            ], hoverinfo="text",
        ))
        heads = [n for n in tree.nodes if n.group == gi and n.kind == "head"]
        extra = list(aux.get(gi, []))
        fig.add_trace(go.Scatter(
            x=[n.x for n in heads], y=[n.layer for n in heads], mode="markers+text",
            marker={"size": 16, "color": c, "symbol": "circle"}, text=[text(n.task) for n in heads],
            textposition="top center", legendgroup=str(gi), showlegend=False,
            hovertext=[f"head of {text(n.task)}" + (("<br>auxiliaries: " + ", ".join(text(a) for a in extra)) if extra else "")
                       for n in heads], hoverinfo="text",
        ))
    ticks = list(range(tree.depth + 2))
    names = ["input"] + [f"layer {k}" for k in range(1, tree.depth + 1)] + ["heads"]
    fig.update_yaxes(tickvals=ticks, ticktext=names, range=[-0.5, tree.depth + 1.8], zeroline=False)
    fig.update_xaxes(visible=False)
    return _layout(fig, title="Chosen groups over the trunk: thick = shared layers, thin = per-task branch",
                   height=max(340, 70 * (tree.depth + 2) + 120), legend={"orientation": "h", "y": -0.08})


class ParetoPoint(NamedTuple):
    networks: int
    loss: float                # total normalised loss (sum over tasks of loss / single-task loss)
    ci_low: float
    ci_high: float
    groups: tuple[tuple[str, ...], ...]
    chosen: bool


def _canon(groups: Sequence[Sequence[str]]) -> tuple[tuple[str, ...], ...]:
    return tuple(sorted(tuple(sorted(g)) for g in groups))


def pareto_points(recommendation: Recommendation) -> tuple[ParetoPoint, ...]:
    """The Pareto front by number of networks; `chosen` marks the recommended grouping."""
    chosen = _canon([g.tasks for g in recommendation.groups])
    out = []
    for p in recommendation.pareto:
        ci = p.ci or (None, None)
        out.append(ParetoPoint(p.networks, _num(p.total_normalised_loss), _num(ci[0]), _num(ci[1]),
                               p.groups, _canon(p.groups) == chosen))
    return tuple(sorted(out, key=lambda q: q.networks))


def draw_pareto(points: Sequence[ParetoPoint]) -> go.Figure:
    def label(p: ParetoPoint) -> str:
        return " | ".join("+".join(text(t) for t in g) for g in p.groups)

    xs = [p.networks for p in points]
    ys = [p.loss for p in points]
    fig = go.Figure(go.Scatter(
        x=xs, y=ys, mode="lines+markers", name="Pareto front",
        error_y=_error_bars([p.loss for p in points], [p.ci_low for p in points], [p.ci_high for p in points]),
        hovertext=[f"{p.networks} networks: {label(p)}<br>loss {fmt(p.loss)} {interval(p.ci_low, p.ci_high)}" for p in points],
        hoverinfo="text", marker={"size": 9, "color": "#444"},
    ))
    chosen = [p for p in points if p.chosen]
    if chosen:
        fig.add_trace(go.Scatter(
            x=[p.networks for p in chosen], y=[p.loss for p in chosen], mode="markers", name="recommended",
            marker={"size": 20, "symbol": "star", "color": "#d62728"}, hoverinfo="text",
            hovertext=[f"recommended: {label(p)}" for p in chosen],
        ))
    fig.update_xaxes(title_text="networks to train", dtick=1)
    fig.update_yaxes(title_text="total normalised loss (lower is better)")
    return _layout(fig, title="Pareto front: loss against the number of networks", height=400)


class DepthCurve(NamedTuple):
    group: str
    task: str
    layers: tuple[int, ...]
    gain: tuple[float, ...]
    ci_low: tuple[float, ...]
    ci_high: tuple[float, ...]


def depth_curves(depth: pd.DataFrame) -> tuple[DepthCurve, ...]:
    """Gain of each task per branch layer, one curve per (group, task), layers ascending."""
    out = []
    if depth is None or depth.empty:
        return ()
    for (group, task), d in depth.groupby(["group", "task"], sort=False):
        d = d.sort_values("branch_layer")
        out.append(DepthCurve(str(group), str(task), tuple(int(v) for v in d["branch_layer"]),
                              tuple(_num(v) for v in d["gain"]), tuple(_num(v) for v in d["ci_low"]),
                              tuple(_num(v) for v in d["ci_high"])))
    return tuple(out)


def draw_depth(curves: Sequence[DepthCurve]) -> go.Figure:
    fig = go.Figure()
    for k, c in enumerate(curves):
        fig.add_trace(go.Scatter(
            x=list(c.layers), y=list(c.gain), mode="lines+markers",
            name=f"{text(c.task)} in {text(c.group)}", line={"color": colour(k)},
            error_y=_error_bars(c.gain, c.ci_low, c.ci_high),
        ))
    fig.add_hline(y=0, line={"color": "#888", "width": 1})
    fig.update_xaxes(title_text="branch layer (layers shared)", dtick=1)
    fig.update_yaxes(title_text="gain vs single-task")
    return _layout(fig, title="Gain by branch layer", height=380)


# ---------------------------------------------------------------- auxiliary leaderboard


class AuxRow(NamedTuple):
    main: str
    name: str
    kind: str
    gain: float
    ci_low: float
    ci_high: float
    n_seeds: float
    significant: bool
    chosen: bool


def aux_leaderboard(affinity: pd.DataFrame, candidates: Sequence[Mapping[str, Any]] | None,
                    recommendation: Recommendation | None, tasks: Sequence[str]) -> dict[str, tuple[AuxRow, ...]]:
    """Per main task, its measured auxiliaries best first (rows of affinity.csv whose source is not a task)."""
    kinds = {str(c.get("name")): str(c.get("kind", "")) for c in candidates or []}
    chosen: set[tuple[str, str]] = set()
    if recommendation is not None:
        for main, items in recommendation.auxiliaries.items():
            chosen |= {(main, a.name) for a in items}
        for g in recommendation.groups:
            chosen |= {(t, a.name) for a in g.aux for t in a.serves}
    out: dict[str, list[AuxRow]] = {}
    for r in _measured(affinity).itertuples(index=False):
        if r.source in tasks or r.target not in tasks:
            continue
        out.setdefault(r.target, []).append(AuxRow(
            r.target, r.source, kinds.get(r.source, "unknown"), _num(r.gain), _num(r.ci_low),
            _num(r.ci_high), _num(r.n_seeds), significant(r.ci_low, r.ci_high), (r.target, r.source) in chosen,
        ))
    order = {t: i for i, t in enumerate(tasks)}
    return {
        m: tuple(sorted(rows, key=lambda a: (-a.gain if _finite(a.gain) else math.inf, a.name)))
        for m, rows in sorted(out.items(), key=lambda kv: order[kv[0]])
    }


def draw_aux_leaderboard(board: Mapping[str, Sequence[AuxRow]]) -> go.Figure:
    rows = [a for items in board.values() for a in items]
    kinds = sorted({a.kind for a in rows})
    fig = go.Figure()
    labels = {id(a): f"{text(a.main)} ← {text(a.name)}" for a in rows}
    order = [labels[id(a)] for a in rows]
    for k, kind in enumerate(kinds):
        sel = [a for a in rows if a.kind == kind]
        fig.add_trace(go.Scatter(
            x=[a.gain for a in sel], y=[labels[id(a)] for a in sel], mode="markers", name=text(kind),
            marker={"size": [14 if a.chosen else 9 for a in sel], "color": colour(k),
                    "symbol": ["star" if a.chosen else "circle" for a in sel]},
            error_x=_error_bars([a.gain for a in sel], [a.ci_low for a in sel], [a.ci_high for a in sel]),
            hovertext=[f"{labels[id(a)]}<br>kind {text(a.kind)}<br>gain {fmt(a.gain, signed=True)} {interval(a.ci_low, a.ci_high)}"
                       + ("<br>recommended" if a.chosen else "") for a in sel],
            hoverinfo="text",
        ))
    fig.add_vline(x=0, line={"color": "#888", "width": 1})
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=order[::-1])
    fig.update_xaxes(title_text="gain of the main task (★ recommended)")
    return _layout(fig, title="Auxiliary tasks: gain of the main task with its interval", height=max(300, 28 * len(rows) + 140))


# ---------------------------------------------------------------- learning curves


class CurvePanel(NamedTuple):
    task: str
    epochs: tuple[int, ...]
    train: tuple[float, ...]   # mean over the single-task models (seeds) at each epoch
    val: tuple[float, ...]
    plateau_epoch: int | None
    plateau_loss: float        # mean val loss at the plateau epoch
    models: int


def learning_curves(trials: pd.DataFrame, curves: pd.DataFrame, features: pd.DataFrame | None,
                    tasks: Sequence[str]) -> tuple[CurvePanel, ...]:
    """Mean train/val loss per epoch of each task's single-task models, with its plateau epoch."""
    plateau: dict[str, int | None] = {}
    if features is not None and not features.empty:
        for r in features.itertuples(index=False):
            plateau[str(r.task)] = int(r.plateau_epoch) if _finite(r.plateau_epoch) else None
    single = trials[trials["phase"].astype(str) == "single"]
    out = []
    for t in tasks:
        ids = [row.trial for row in single.itertuples(index=False) if _as_list(row.tasks) == [t]]
        c = curves[curves["trial"].isin(ids) & (curves["task"].astype(str) == t)]
        if c.empty:
            continue
        mean = c.groupby(["split", "epoch"])["loss"].mean()
        epochs = sorted(int(e) for e in c["epoch"].unique())
        train, val = (tuple(float(mean.get((split, e), float("nan"))) for e in epochs) for split in ("train", "val"))
        p = plateau.get(t)
        out.append(CurvePanel(t, tuple(epochs), train, val, p,
                              val[epochs.index(p)] if p in epochs else float("nan"), len(ids)))
    return tuple(out)


def draw_learning_curves(panels: Sequence[CurvePanel]) -> go.Figure:
    cols = min(3, len(panels)) or 1
    rows = max(1, math.ceil(len(panels) / cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[text(p.task) for p in panels],
                        horizontal_spacing=0.07, vertical_spacing=0.5 / rows if rows > 1 else 0.1)
    for k, p in enumerate(panels):
        r, c = k // cols + 1, k % cols + 1
        first = k == 0
        fig.add_trace(go.Scatter(x=list(p.epochs), y=list(p.train), mode="lines", name="train",
                                 line={"color": "#999", "dash": "dot"}, legendgroup="train", showlegend=first,
                                 hovertemplate="epoch %{x}<br>train loss %{y:.4f}<extra></extra>"), row=r, col=c)
        fig.add_trace(go.Scatter(x=list(p.epochs), y=list(p.val), mode="lines", name="validation",
                                 line={"color": POSITIVE}, legendgroup="val", showlegend=first,
                                 hovertemplate="epoch %{x}<br>val loss %{y:.4f}<extra></extra>"), row=r, col=c)
        if p.plateau_epoch is not None and _finite(p.plateau_loss):
            fig.add_trace(go.Scatter(x=[p.plateau_epoch], y=[p.plateau_loss], mode="markers", name="plateau",
                                     marker={"size": 12, "symbol": "diamond", "color": NEGATIVE},
                                     legendgroup="plateau", showlegend=first,
                                     hovertemplate=f"plateau at epoch {p.plateau_epoch}<extra></extra>"), row=r, col=c)
            fig.add_vline(x=p.plateau_epoch, line={"color": NEGATIVE, "dash": "dot", "width": 1}, row=r, col=c)
    fig.update_xaxes(title_text="epoch")
    return _layout(fig, title="Single-task learning curves (mean over seeds), plateau epoch marked",
                   height=260 * rows + 120)


# ---------------------------------------------------------------- estimator agreement


class EstimatorPanel(NamedTuple):
    method: str
    pairs: tuple[tuple[str, str], ...]   # (source, target)
    measured: tuple[float, ...]
    estimate: tuple[float, ...]
    spearman: float                      # from agreement.csv (NaN when absent)
    negative_transfer_recall: float
    relative_compute: float


def estimator_agreement(affinity: pd.DataFrame, agreement: pd.DataFrame | None,
                        tasks: Sequence[str]) -> tuple[EstimatorPanel, ...]:
    """Each cheap estimator's score against the measured gain of the same task pair."""
    measured = {(r.source, r.target): _num(r.gain) for r in _measured(affinity).itertuples(index=False)
                if r.source in tasks and r.target in tasks}
    stats: dict[str, tuple[float, float, float]] = {}
    if agreement is not None and not agreement.empty:
        for r in agreement.itertuples(index=False):
            stats[str(r.method)] = (_num(r.spearman), _num(r.negative_transfer_recall), _num(r.relative_compute))
    methods: list[str] = []
    if affinity is not None and not affinity.empty:
        methods = [m for m in dict.fromkeys(affinity["method"].astype(str)) if m != MEASURED]
    methods += [m for m in stats if m not in methods and m != MEASURED]
    out = []
    for m in methods:
        pairs, xs, ys = [], [], []
        if affinity is not None and not affinity.empty:
            est = affinity[affinity["method"].astype(str) == m]
            for r in est.itertuples(index=False):
                key = (str(r.source), str(r.target))
                if key in measured and _finite(r.gain) and _finite(measured[key]):
                    pairs.append(key)
                    xs.append(measured[key])
                    ys.append(float(r.gain))
        s = stats.get(m, (float("nan"),) * 3)
        out.append(EstimatorPanel(m, tuple(pairs), tuple(xs), tuple(ys), *s))
    return tuple(out)


def draw_estimator_agreement(panels: Sequence[EstimatorPanel]) -> go.Figure:
    cols = min(3, len(panels)) or 1
    rows = max(1, math.ceil(len(panels) / cols))
    titles = [f"{text(p.method)}: Spearman {fmt(p.spearman, 2)}" for p in panels]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.08,
                        vertical_spacing=0.5 / rows if rows > 1 else 0.1)
    for k, p in enumerate(panels):
        r, c = k // cols + 1, k % cols + 1
        fig.add_trace(go.Scatter(
            x=list(p.measured), y=list(p.estimate), mode="markers", name=text(p.method), showlegend=False,
            marker={"size": 9, "color": colour(k)},
            hovertext=[f"{text(s)} → {text(t)}<br>measured {x:+.3f}<br>{text(p.method)} {y:+.4g}"
                       for (s, t), x, y in zip(p.pairs, p.measured, p.estimate, strict=True)], hoverinfo="text",
        ), row=r, col=c)
        fig.update_xaxes(title_text="measured gain", row=r, col=c)
    return _layout(fig, title="Cheap estimators against measured gains (one point per task pair)",
                   height=320 * rows + 100)


# ---------------------------------------------------------------- search history and compute


class History(NamedTuple):
    trial: tuple[int, ...]
    phase: tuple[str, ...]
    seconds: tuple[float, ...]
    epochs: tuple[float, ...]
    label: tuple[str, ...]   # tasks (+ auxiliaries) of the model


def search_history(trials: pd.DataFrame) -> History:
    """One point per trained model, in trial order."""
    t = trials.sort_values("trial", kind="stable")
    labels = []
    for r in t.itertuples(index=False):
        aux = _as_list(getattr(r, "aux", None))
        labels.append("+".join(_as_list(r.tasks)) + ((" with " + ", ".join(aux)) if aux else ""))
    return History(
        tuple(int(v) for v in t["trial"]), tuple(str(v) for v in t["phase"]),
        tuple(_num(v) for v in t["seconds"]),
        tuple(_num(v) for v in (t["epochs"] if "epochs" in t else [float("nan")] * len(t))), tuple(labels),
    )


def _phase_rank(p: str) -> tuple[int, str]:
    return (PHASE_ORDER.index(p) if p in PHASE_ORDER else len(PHASE_ORDER), p)


def draw_search_history(h: History) -> go.Figure:
    fig = go.Figure()
    for k, phase in enumerate(sorted(set(h.phase), key=_phase_rank)):
        idx = [i for i, p in enumerate(h.phase) if p == phase]
        fig.add_trace(go.Scatter(
            x=[h.trial[i] for i in idx], y=[h.seconds[i] for i in idx], mode="markers", name=text(phase),
            marker={"size": 7, "color": colour(k)},
            hovertext=[f"trial {h.trial[i]} ({text(phase)})<br>{text(h.label[i])}<br>{fmt(h.seconds[i], 2)} s, {fmt(h.epochs[i], 0)} epochs"
                       for i in idx], hoverinfo="text",
        ))
    fig.update_xaxes(title_text="trial")
    fig.update_yaxes(title_text="seconds (model's share of its stack)")
    return _layout(fig, title="Search history: every trained model, coloured by phase", height=380)


class PhaseCompute(NamedTuple):
    phase: str
    models: int
    epochs: int
    seconds: float


def compute_per_phase(compute: pd.DataFrame) -> tuple[PhaseCompute, ...]:
    rows = [PhaseCompute(str(r.phase), int(r.models), int(r.epochs), float(r.seconds)) for r in compute.itertuples(index=False)]
    return tuple(sorted(rows, key=lambda r: _phase_rank(r.phase)))


def draw_compute(rows: Sequence[PhaseCompute]) -> go.Figure:
    fig = go.Figure(go.Bar(
        x=[text(r.phase) for r in rows], y=[r.seconds for r in rows], marker={"color": [colour(k) for k in range(len(rows))]},
        hovertext=[f"{text(r.phase)}: {r.models} models, {r.epochs} epochs, {r.seconds:.1f} s" for r in rows],
        hoverinfo="text", text=[f"{r.models} models" for r in rows], textposition="auto",
    ))
    fig.update_xaxes(title_text="phase", type="category")
    fig.update_yaxes(title_text="seconds")
    return _layout(fig, title="Compute spent per phase", height=340)


# ---------------------------------------------------------------- verify


class VerifyRow(NamedTuple):
    task: str
    metric_name: str
    loss: dict[str, float]     # setup ("recommended", "separate", "together") -> test loss
    metric: dict[str, float]
    gain_vs_separate: tuple[float, float, float]   # mean, low, high
    gain_vs_together: tuple[float, float, float]


SETUPS = ("recommended", "separate", "together")


def verify_rows(verify: Mapping[str, Any]) -> tuple[VerifyRow, ...]:
    """verify.json as one row per task."""
    out = []

    def triple(v: Any) -> tuple[float, float, float]:
        v = list(v or []) + [None] * 3
        return (_num(v[0]), _num(v[1]), _num(v[2]))

    for task, setups in (verify.get("tasks", {}) or {}).items():
        name = next((str(s.get("metric_name")) for s in setups.values() if isinstance(s, Mapping) and s.get("metric_name")), "")
        out.append(VerifyRow(
            str(task), name,
            {k: _num((setups.get(k) or {}).get("loss")) for k in SETUPS},
            {k: _num((setups.get(k) or {}).get("metric")) for k in SETUPS},
            triple((verify.get("gain_vs_separate") or {}).get(task)),
            triple((verify.get("gain_vs_together") or {}).get(task)),
        ))
    return tuple(out)


def draw_verify(rows: Sequence[VerifyRow]) -> go.Figure:
    fig = go.Figure()
    names = [text(r.task) for r in rows]
    for k, (label, attr) in enumerate((("vs all separate", "gain_vs_separate"), ("vs all together", "gain_vs_together"))):
        vals = [getattr(r, attr) for r in rows]
        fig.add_trace(go.Bar(
            x=names, y=[v[0] for v in vals], name=label, marker={"color": colour(k)},
            error_y=_error_bars([v[0] for v in vals], [v[1] for v in vals], [v[2] for v in vals]),
            hovertext=[f"{n} {label}: {fmt(v[0], signed=True)} {interval(v[1], v[2])}" for n, v in zip(names, vals, strict=True)],
            hoverinfo="text",
        ))
    fig.add_hline(y=0, line={"color": "#888", "width": 1})
    fig.update_xaxes(type="category")
    fig.update_yaxes(title_text="test-loss gain of the recommendation")
    return _layout(fig, title="Verification on the test split: gain of the recommended grouping", height=380, barmode="group")
