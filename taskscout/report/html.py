"""Assemble report.html from a run directory: one self-contained page, plotly.js inlined once.

The page reads nothing from the network: plotly.js sits in one inline <script>, every figure is a
<div> plus an inline call to Plotly.newPlot. Strings from the user's data are escaped twice over:
with ``html.escape`` where they enter the page, and with ``figures.text`` where they enter a
figure (plotly renders some HTML in figure text). A section whose input file is missing says
which command produces it instead of failing.
"""

from __future__ import annotations

import html
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from taskscout import rundir
from taskscout.errors import TaskscoutError
from taskscout.recommendation import Recommendation, read_recommendation
from taskscout.report import figures as F

PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}


@dataclass(frozen=True)
class FigureBlock:
    """A plotly figure inside a section; `name` is its stable id (div id and PNG file name)."""

    name: str
    figure: Any


@dataclass(frozen=True)
class Section:
    """One report section: `blocks` are safe HTML strings or FigureBlocks, in page order."""

    id: str
    title: str
    blocks: tuple = field(default_factory=tuple)

    @property
    def figures(self) -> tuple[FigureBlock, ...]:
        return tuple(b for b in self.blocks if isinstance(b, FigureBlock))


SECTION_TITLES = {
    "summary": "Summary",
    "affinity": "Task affinity",
    "graph": "Task-affinity graph",
    "grouping": "Grouping",
    "auxiliaries": "Auxiliary tasks",
    "curves": "Learning curves",
    "agreement": "Estimator agreement",
    "history": "Search history and compute",
    "verify": "Verification",
}


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _missing(message: str) -> str:
    return f'<p class="missing">{message}</p>'


def _code(cmd: str) -> str:
    return f"<code>{esc(cmd)}</code>"


TABLE_OPEN_ROWS = 30  # a longer table is collapsed under a <details> summary (one click opens it)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    """An HTML table; every cell is escaped text. Tables of more than TABLE_OPEN_ROWS rows come
    collapsed, with their row count in the summary line."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    table = f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    if len(rows) > TABLE_OPEN_ROWS:
        return f"<details><summary>{len(rows)} rows (click to show)</summary>{table}</details>"
    return table


class RunFiles:
    """Lazy, cached reads of a run directory; a missing optional file reads as None."""

    def __init__(self, run_dir: str | Path) -> None:
        self.dir = rundir.require(run_dir, rundir.SPEC)
        self._cache: dict[str, Any] = {}

    def has(self, name: str) -> bool:
        return (self.dir / name).is_file()

    def get(self, name: str) -> Any:
        if name not in self._cache:
            path = self.dir / name
            if not path.is_file():
                value = None
            elif name.endswith(".json"):
                value = rundir.read_json(path)
            elif name.endswith(".csv"):
                value = pd.read_csv(path)
            else:
                value = pd.read_parquet(path)
            self._cache[name] = value
        return self._cache[name]

    @property
    def spec(self) -> dict[str, Any]:
        return self.get(rundir.SPEC)

    @property
    def recommendation(self) -> Recommendation | None:
        """recommendation.json, parsed and checked (None when absent)."""
        if "recommendation" not in self._cache:
            self._cache["recommendation"] = read_recommendation(self.dir) if self.has(rundir.RECOMMENDATION) else None
        return self._cache["recommendation"]

    @property
    def tasks(self) -> tuple[str, ...]:
        rec = self.recommendation
        return rec.tasks if rec is not None else tuple(self.spec.get("tasks") or ())

    def cmd(self, what: str) -> str:
        return what.replace("RUN_DIR", str(self.dir))

    def search(self, change: str = "") -> str:
        """The search command of this run, to rerun (it resumes, reusing completed models) `change`d."""
        cmd = shlex.join(["taskscout", "search", str(self.spec.get("data", "DATA")), "--tasks", ",".join(self.tasks),
                          "--out", str(self.dir)])
        return _code(cmd) + " (with the study's other flags" + (f", {change}" if change else "") + "; completed models are reused)"


# ---------------------------------------------------------------- sections


def _group_aux(g: F.GroupRow) -> str:
    """A group's auxiliaries, and those of its served tasks that it trains as members."""
    notes = [f"{a} (for {t}) is a copy of a member task of this network, trained in it as a task"
             for a, t in g.member_aux]
    return "; ".join(x for x in (", ".join(g.aux), *notes) if x) or "none"


def _summary(run: RunFiles) -> list:
    s = F.summary_data(run.spec, run.recommendation, run.get(rundir.TRIALS), run.get(rundir.COMPUTE))
    def duration(x: float) -> str:
        return "n/a" if x != x else f"{x:.1f} s ({x / 60:.1f} min)"

    facts = [
        ("study", s.study), ("data set", s.data), ("tasks", ", ".join(s.tasks)),
        ("main tasks", ", ".join(s.main)),
        ("budget", f"{s.budget} (seeds {s.seeds}, epochs {s.epochs}); {s.models_trained} models, "
                   f"{s.epochs_trained} epochs trained" + (" over every phase" if s.phases else
                                                           " in the single, pairs, aux and depth phases")),
        ("training time", duration(s.seconds) + (
            " of wall time spent training, summed over the phases (" + ", ".join(
                f"{p} {sec:.1f} s" for p, _, _, sec in s.phases) + "); the search's own total is longer: "
            "it also builds the data and the candidates and writes the tables" if s.phases else
            " summed over the models of trials.parquet (no compute.csv; subsets and estimators not counted)")),
        ("networks recommended", "n/a" if s.networks is None else str(s.networks)),
    ]
    blocks = ['<dl class="facts">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts) + "</dl>"]
    if not run.has(rundir.RECOMMENDATION):
        blocks.append(_missing(f"No recommendation.json yet: run {run.search()} to the end."))
        return blocks
    blocks.append(f'<p class="verdict">{esc(s.verdict)}</p>')
    sel = run.recommendation.selection
    blocks += _selection_table(sel.to_dict() if sel is not None else None)
    if s.reasons:
        blocks.append("<ul>" + "".join(f"<li>{esc(r)}</li>" for r in s.reasons) + "</ul>")
    rows = [
        (f"{k + 1}", ", ".join(g.tasks), "n/a" if g.branch_layer is None else g.branch_layer, g.branch_source,
         _group_aux(g),
         "; ".join(f"{t} {F.fmt(m, signed=True)} {F.interval(lo, hi)}" for t, m, lo, hi in g.gains))
        for k, g in enumerate(s.groups)
    ]
    blocks.append(_table(["group", "tasks", "branch layer", "branch from", "auxiliaries", "expected gain [95% interval]"], rows))
    return blocks


def _selection_table(sel: dict | None) -> list:
    """The selection stage's candidates side by side (recommendation.json's `selection` block)."""
    if not sel:
        return []
    def iv(t: list) -> str:
        return F.interval(t[1], t[2]) if len(t) == 3 else ""
    rows = [
        ("chosen" if c["name"] == sel["chosen"] else "", c["name"] + (f" (= {', '.join(c['aliases'])})" if c.get("aliases") else ""),
         len(c["networks"]), "; ".join("{" + ", ".join(n["tasks"]) + "}" for n in c["networks"] if len(n["tasks"]) > 1) or "none",
         f"{c['total'][0]:.3f} {iv(c['total'])}", f"{c['vs_best_baseline'][0]:+.3f} {iv(c['vs_best_baseline'])}")
        for c in sel["candidates"]
    ]
    head = (f"<p>Selection stage: {len(sel['candidates'])} candidates retrained with {len(sel['seeds'])} fresh seeds, "
            f"scored on {esc(sel.get('rows_detail', sel['rows']))}. Total normalised loss = sum over tasks of the "
            f"held-out loss over all-separate's (same seed); lower is better; the better baseline is "
            f"{esc(sel['best_baseline'])}.</p>")
    return [head, _table(["", "candidate", "networks", "shared networks", "held-out total [95% interval]",
                          f"minus {sel['best_baseline']} [95% interval]"], rows)]


def _affinity(run: RunFiles) -> list:
    aff = run.get(rundir.AFFINITY)
    m = F.affinity_matrix(aff, run.tasks, run.recommendation) if aff is not None else None
    if m is None or not (m.gain == m.gain).any():
        return [_missing(f"No measured pairwise gains (affinity.csv): run {run.search('without --skip pairs')}.")]
    return ["<p>Rows are targets, columns sources: a cell is the relative drop in the target's validation loss "
            "when the source is trained alongside it (positive = helps). Hover for the 95% interval over seeds; "
            "★ marks gains whose interval excludes zero.</p>",
            FigureBlock("affinity_heatmap", F.draw_affinity_heatmap(m))]


def _graph(run: RunFiles) -> list:
    aff, rec = run.get(rundir.AFFINITY), run.recommendation
    if aff is None:
        return [_missing(f"No affinity.csv: run {run.search()}.")]
    g = F.affinity_graph(aff, rec, run.tasks)
    blocks: list = []
    if rec is None:
        blocks.append(_missing("No recommendation.json: nodes are not coloured by group; run the search to the end."))
    blocks.append(FigureBlock("affinity_graph", F.draw_affinity_graph(g)))
    return blocks


def _grouping(run: RunFiles) -> list:
    rec = run.recommendation
    if rec is None:
        return [_missing(f"No recommendation.json: run {run.search()} to the end.")]
    depth = int((run.spec.get("model") or {}).get("depth", 2))
    tree = F.group_tree(rec, depth)
    aux = {k: [a.name for a in g.aux] for k, g in enumerate(rec.groups)}
    blocks: list = [f"<p>{len(tree.groups)} network(s) over a trunk of {depth} layers; "
                    "each group shares layers 1..b and branches after layer b.</p>",
                    FigureBlock("group_tree", F.draw_group_tree(tree, aux))]
    points = F.pareto_points(rec)
    if points:
        blocks.append(FigureBlock("pareto", F.draw_pareto(points)))
    else:
        blocks.append(_missing("recommendation.json has no Pareto front (the grouping budget was fixed)."))
    curves = F.depth_curves(run.get(rundir.DEPTH)) if run.has(rundir.DEPTH) else ()
    if curves:
        blocks.append(FigureBlock("depth", F.draw_depth(curves)))
    else:
        blocks.append(_missing(f"No gains per branch layer (depth.csv): run {run.search('without --skip depth')}; "
                               "branch layers then come from measurements."))
    return blocks


def _auxiliaries(run: RunFiles) -> list:
    aff, cands = run.get(rundir.AFFINITY), run.get(rundir.CANDIDATES)
    board = F.aux_leaderboard(aff, cands, run.recommendation, run.tasks) if aff is not None else {}
    if not board:
        return [_missing(f"No measured auxiliary tasks: run {run.search('without --skip aux')}; "
                         f"{_code('taskscout candidates')} with the same data and flags lists the candidates without training.")]
    blocks: list = [FigureBlock("aux_leaderboard", F.draw_aux_leaderboard(board))]
    for main, rows in board.items():
        blocks.append(f"<h3>{esc(main)}</h3>")
        blocks.append(_table(
            ["auxiliary", "kind", "gain", "95% interval", "seeds", "real", "recommended"],
            [(a.name, a.kind, F.fmt(a.gain, signed=True), F.interval(a.ci_low, a.ci_high), F.fmt(a.n_seeds, 0),
              "yes" if a.significant else "no", "yes" if a.chosen else "") for a in rows]))
    dropped = [c for c in cands or [] if c.get("dropped")]
    if dropped:
        blocks.append(f"<details><summary>{len(dropped)} candidate(s) were screened out before training</summary>"
                      + _table(["candidate", "kind", "why"], [(c.get("name"), c.get("kind"), c.get("dropped")) for c in dropped])
                      + "</details>")
    return blocks


def _curves(run: RunFiles) -> list:
    trials, curves, feats = run.get(rundir.TRIALS), run.get(rundir.CURVES), run.get(rundir.CURVE_FEATURES)
    panels = F.learning_curves(trials, curves, feats, run.tasks) if trials is not None and curves is not None else ()
    blocks: list = []
    if panels:
        blocks.append(FigureBlock("learning_curves", F.draw_learning_curves(panels)))
    else:
        blocks.append(_missing(f"No single-task learning curves (curves.parquet): run {run.search('without --skip single')}."))
    if feats is not None and not feats.empty:
        cols = [c for c in rundir.CURVE_FEATURE_COLUMNS if c in feats.columns]
        blocks.append("<h3>Curve features</h3><p>Plateau epoch and loss slopes at 10..70% of training "
                      "(Bingel &amp; Søgaard): a main task that plateaus early gains most from a partner still falling.</p>")
        blocks.append(_table(cols, [
            [r[c] if c == "task" else (F.fmt(r[c], 0) if c == "plateau_epoch" else F.fmt(r[c], 4)) for c in cols]
            for _, r in feats.iterrows()
        ]))
    else:
        blocks.append(_missing("No curve_features.csv: it is written with the single-task phase."))
    return blocks


def _agreement(run: RunFiles) -> list:
    aff, agr = run.get(rundir.AFFINITY), run.get(rundir.AGREEMENT)
    not_run = _missing(f"The cheap estimators (tag, gradcos, rsa) were not run: they are diagnostics, off by default. "
                       f"Run {run.search('with --phase estimators')} to score them against the measured gains; "
                       f"their results are kept, so later runs show them without recomputing.")
    if agr is None:
        return [not_run]
    panels = F.estimator_agreement(aff, agr, run.tasks)
    blocks: list = [] if {"tag", "gradcos", "rsa"} & set(agr["method"].astype(str)) else [not_run]
    if any(p.pairs for p in panels):
        blocks.append(FigureBlock("estimator_agreement", F.draw_estimator_agreement([p for p in panels if p.pairs])))
    blocks.append(_table(
        ["estimator", "Spearman with measured", "negative-transfer recall", "compute relative to measuring"],
        [(p.method, F.fmt(p.spearman, 2), F.fmt(p.negative_transfer_recall, 2), F.fmt(p.relative_compute, 3)) for p in panels]))
    return blocks


def _history(run: RunFiles) -> list:
    trials, compute = run.get(rundir.TRIALS), run.get(rundir.COMPUTE)
    blocks: list = []
    if trials is not None and not trials.empty:
        blocks.append(FigureBlock("search_history", F.draw_search_history(F.search_history(trials))))
    else:
        blocks.append(_missing(f"No trials.parquet: run {run.search()}."))
    if compute is not None and not compute.empty:
        rows = F.compute_per_phase(compute)
        blocks.append(FigureBlock("compute", F.draw_compute(rows)))
        blocks.append(_table(["phase", "models", "epochs", "seconds"], [(r.phase, r.models, r.epochs, f"{r.seconds:.1f}") for r in rows]))
    else:
        blocks.append(_missing("No compute.csv: it is written at the end of `taskscout search`."))
    return blocks


def _verify(run: RunFiles) -> list:
    v = run.get(rundir.VERIFY)
    if v is None:
        return [_missing(f"Not verified yet: run {_code(run.cmd('taskscout verify RUN_DIR'))} to compare the recommendation "
                         "with all-separate and all-together models on the test split.")]
    rows = F.verify_rows(v)
    blocks: list = [f'<p class="verdict">{esc(v.get("verdict", ""))}</p>']
    if rows:
        blocks.append(FigureBlock("verify", F.draw_verify(rows)))
        blocks.append(_table(
            ["task", "metric", *(f"{s} loss" for s in F.SETUPS), *(f"{s} metric" for s in F.SETUPS),
             "gain vs separate", "gain vs together"],
            [(r.task, r.metric_name, *(F.fmt(r.loss[s], 4) for s in F.SETUPS), *(F.fmt(r.metric[s], 4) for s in F.SETUPS),
              f"{F.fmt(r.gain_vs_separate[0], signed=True)} {F.interval(*r.gain_vs_separate[1:])}",
              f"{F.fmt(r.gain_vs_together[0], signed=True)} {F.interval(*r.gain_vs_together[1:])}") for r in rows]))
    return blocks


_BUILDERS = {
    "summary": _summary, "affinity": _affinity, "graph": _graph, "grouping": _grouping,
    "auxiliaries": _auxiliaries, "curves": _curves, "agreement": _agreement, "history": _history,
    "verify": _verify,
}


def build_sections(run_dir: str | Path) -> list[Section]:
    """Every report section of the run directory, in page order."""
    run = RunFiles(run_dir)
    return [Section(sid, SECTION_TITLES[sid], tuple(build(run))) for sid, build in _BUILDERS.items()]


# ---------------------------------------------------------------- page

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1200px;padding:0 20px 60px;color:#222}
header{border-bottom:1px solid #ddd;margin-bottom:10px}
nav a{margin-right:14px;font-size:14px}
section{margin-top:34px}
h2{border-bottom:2px solid #1f77b4;padding-bottom:4px}
table{border-collapse:collapse;margin:10px 0;font-size:14px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f6f8}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:4px 16px}
dt{font-weight:600}
dd{margin:0}
p.verdict{font-size:18px;background:#eef5fb;border-left:4px solid #1f77b4;padding:8px 12px}
p.missing{color:#8a5a00;background:#fff8e6;border-left:4px solid #e0a800;padding:8px 12px}
.figure{margin:12px 0}
"""


def render_html(sections: Sequence[Section], *, title: str) -> str:
    """The page: plotly.js inlined once, each figure a div plus an inline newPlot call."""
    import plotly.io as pio
    import plotly.offline

    nav = "".join(f'<a href="#{s.id}">{esc(s.title)}</a>' for s in sections)
    parts = []
    for s in sections:
        body = []
        for b in s.blocks:
            if isinstance(b, FigureBlock):
                div = pio.to_html(b.figure, full_html=False, include_plotlyjs=False, div_id=f"fig-{b.name}",
                                  config=PLOTLY_CONFIG, validate=True)
                body.append(f'<div class="figure" data-figure="{esc(b.name)}">{div}</div>')
            else:
                body.append(b)
        parts.append(f'<section id="{s.id}"><h2>{esc(s.title)}</h2>\n' + "\n".join(body) + "</section>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{esc(title)}</title>"
        f"<style>{_CSS}</style>"
        "<script type=\"text/javascript\">window.PlotlyConfig = {MathJaxConfig: 'local'};</script>\n"
        f"<script type=\"text/javascript\">{plotly.offline.get_plotlyjs()}</script>\n"
        "</head><body>"
        f"<header><h1>{esc(title)}</h1><nav>{nav}</nav></header>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )


def build_report(run_dir: str | Path) -> Path:
    """Write `run_dir`/report.html (atomically) from the saved results and return its path.

    Needs only spec.json; every other file is optional and its section says how to produce it.
    """
    run = RunFiles(run_dir)
    sections = build_sections(run.dir)
    name = run.spec.get("name") or run.dir.name
    page = render_html(sections, title=f"taskscout report: {name}")
    return rundir.write_text(run.dir / rundir.REPORT, page)


def png_support() -> str | None:
    """None when PNGs can be written (kaleido and a Chromium present), else why not."""
    import importlib.util
    import shutil

    if importlib.util.find_spec("kaleido") is None:
        return ("--png needs the 'kaleido' package, which is not installed; install it (pip install kaleido) "
                "or use the camera button on each plot in report.html")
    if not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome", "chrome")):
        return "--png needs a Chromium or Chrome browser for kaleido; install one (e.g. apt-get install chromium)"
    return None


def write_pngs(run_dir: str | Path, *, out_dir: str | Path | None = None) -> list[Path]:
    """Write every report figure as `out_dir`/NAME.png (default `run_dir`/figures) via kaleido."""
    why = png_support()
    if why:
        raise TaskscoutError(why)
    run = RunFiles(run_dir)
    target = Path(out_dir) if out_dir else run.dir / "figures"
    paths = []
    for s in build_sections(run.dir):
        for b in s.figures:
            paths.append(rundir.write_bytes(target / f"{b.name}.png", b.figure.to_image(format="png", width=1100)))
    return paths

