"""The short text a search prints at the end: what ran, the strongest transfers, where the files are."""

from __future__ import annotations

import math

import pandas as pd

from taskscout import rundir
from taskscout.grouping.selection import Selection
from taskscout.search.runner import SearchResult
from taskscout.search.storage import mask_url


def _pct(x: float) -> str:
    if math.isinf(x):
        return "-inf" if x < 0 else "+inf"
    return f"{x * 100:+.1f}%"


def transfer_lines(affinity: pd.DataFrame, *, top: int = 3) -> list[str]:
    """The `top` strongest positive and negative measured transfers, with their intervals."""
    if affinity is None or affinity.empty:
        return ["no measured transfers yet (the pairs and aux phases have not completed a model)"]
    aff = affinity[affinity["method"] == "measured"]
    if aff.empty:  # the pairs and aux phases skipped: only the estimators' rows, or none
        return ["no measured transfers (no pair or auxiliary model was measured against its tasks alone)"]
    width = max(len(f"{r.source} -> {r.target}") for r in aff.itertuples(index=False))
    n = int(aff["n_seeds"].max())

    def line(r) -> str:
        mark = "real" if (r.ci_low > 0 or r.ci_high < 0) else "inside seed noise"
        return (f"  {f'{r.source} -> {r.target}':<{width}}  {_pct(r.gain):>7}  "
                f"[{_pct(r.ci_low)}, {_pct(r.ci_high)}]  {mark}")

    out = [f"gain(source -> target) = relative drop of the target's validation loss; 95% t interval over {n} seeds"]
    full = aff[aff["n_seeds"] >= n]  # not the candidates successive halving left at one seed
    pos = full[full["gain"] > 0].sort_values("gain", ascending=False).head(top)
    neg = full[full["gain"] < 0].sort_values("gain").head(top)
    out.append("strongest positive transfers:" if len(pos) else "no positive transfer measured")
    out += [line(r) for r in pos.itertuples(index=False)]
    out.append("strongest negative transfers:" if len(neg) else "no negative transfer measured")
    out += [line(r) for r in neg.itertuples(index=False)]
    return out


def summary_text(result: SearchResult, *, top: int = 3) -> str:
    """The closing summary of a search run."""
    lines = []
    reused = sum(p.reused for p in result.phases)
    lines.append(f"search '{result.study_name}': {result.trained} models trained, {reused} reused, "
                 f"{result.seconds:.0f} s")
    parts = []
    for p in result.phases:
        if p.status in ("skipped", "not started"):
            parts.append(f"{p.phase} {p.status}")
        else:
            parts.append(f"{p.phase} {p.planned - p.remaining}/{p.planned}")
    lines.append("phases: " + ", ".join(parts))
    lines += [f"note: {p.phase} {p.status}: {p.note}" for p in result.phases if p.note]
    lines += [f"note: {n}" for n in result.data_notes]
    if result.stopped_by_time_limit:
        left = sum(p.remaining for p in result.phases)
        lines.append(f"time limit reached: no new stack was started; {left} planned models are missing. "
                     f"Run the same command again to continue.")
    if result.finished_elsewhere:
        lines.append("the measured phases are complete; another worker is finishing the run (subsets, "
                     "estimators, tables, report) in its run directory. Run the same command with --join "
                     "once it is done to write them here too.")
    path = result.run_dir / rundir.AFFINITY
    affinity = pd.read_csv(path) if path.exists() else None
    if not result.finished_elsewhere:
        lines += transfer_lines(affinity, top=top)
    agreement = result.run_dir / rundir.AGREEMENT
    if agreement.exists():
        rows = pd.read_csv(agreement)
        lines.append("estimators vs measured gains (Spearman, compute relative to the measured phase): " + ", ".join(
            f"{r.method} {_signed(r.spearman)} at {r.relative_compute:.0%}" for r in rows.itertuples(index=False)))
    rec = result.run_dir / rundir.RECOMMENDATION
    if rec.exists():
        recommendation = rundir.read_json(rec)
        lines.append("recommendation: " + str(recommendation.get("verdict", "")))
        lines += selection_lines(recommendation.get("selection"))
    files = [n for n in (rundir.AFFINITY, rundir.AGREEMENT, rundir.GROUP_SCORES, rundir.DEPTH, rundir.CURVE_FEATURES,
                         rundir.TRIALS, rundir.CURVES, rundir.COMPUTE, rundir.RECOMMENDATION, rundir.REPORT)
             if (result.run_dir / n).exists()]
    if files:
        lines.append(f"files: {result.run_dir}/ ({', '.join(files)})")
    lines.append(f"storage: {mask_url(result.storage)} (study '{result.study_name}')")
    if (result.run_dir / rundir.REPORT).exists():
        lines.append(f"report: {result.run_dir / rundir.REPORT}")
    return "\n".join(lines)


def selection_lines(block: dict | None) -> list[str]:
    """The selection stage's candidates side by side (held-out total normalised loss, lower is
    better; * = chosen) and what the choice beat."""
    if not block:
        return []
    sel = Selection.from_dict(block)
    return [f"selection ({len(sel.seeds)} fresh seeds, {sel.rows} rows; held-out total normalised loss, lower "
            f"is better): " + sel.side_by_side(), "selection verdict: " + sel.beat_text()]


def _signed(value: float) -> str:
    """+0.51, or n/a when undefined (a Spearman over too few or constant gains)."""
    return "n/a" if pd.isna(value) else f"{value:+.2f}"
