"""The recommendation: baselines, `recommend` over the tables, and `recommend_run` over a run directory."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from taskscout import rundir
from taskscout.device import one_blas_thread
from taskscout.errors import SpecError
from taskscout.grouping._tables import _require_columns
from taskscout.grouping.choices import BranchChoice, choose_auxiliaries, choose_branch_layer
from taskscout.grouping.graph import build_graph, save_graphml
from taskscout.grouping.scale import chooses_on_estimates
from taskscout.grouping.scores import ALONE, SCORE_SOURCES, GroupScorer, ScoreFn, TaskScore
from taskscout.grouping.selection import (
    RECOMMENDED,
    SEPARATE,
    TOGETHER,
    Candidate,
    Network,
    Selection,
)
from taskscout.grouping.solve import (
    EXACT_MAX_TASKS,
    BudgetChoice,
    Grouping,
    choose_grouping,
    solve_grouping,
)
from taskscout.grouping.subset_scores import sampled_predictor, subset_predictor, with_subset_scores
from taskscout.spec import spec_from_json

# ---------------------------------------------------------------- baselines


def baselines_from_trials(trials: pd.DataFrame, *, tasks: Sequence[str]) -> dict[str, dict[str, float]]:
    """Mean validation loss of each task trained alone, and of the all-task model with full
    sharing (the largest branch layer trained), from trials.parquet rows without auxiliaries."""
    import json

    _require_columns(trials, ("tasks", "aux", "val_loss", "branch_layer"), "trials")
    single: dict[str, list[float]] = {t: [] for t in tasks}
    together: dict[int, dict[str, list[float]]] = {}
    everyone = set(tasks)
    for r in trials.to_dict("records"):
        if str(r.get("state", "complete")).lower() in ("pruned", "fail", "failed", "running"):
            continue
        members = [str(t) for t in list(r["tasks"])]
        if len(list(r["aux"] if r["aux"] is not None else [])):
            continue
        losses = r["val_loss"] if isinstance(r["val_loss"], dict) else json.loads(r["val_loss"] or "{}")
        if len(members) == 1 and members[0] in single and members[0] in losses:
            single[members[0]].append(float(losses[members[0]]))
        elif set(members) == everyone and len(members) > 1:
            per = together.setdefault(int(r["branch_layer"]), {t: [] for t in tasks})
            for t in tasks:
                if t in losses:
                    per[t].append(float(losses[t]))
    full = together[max(together)] if together else {}
    return {
        "single_task_loss": {t: float(np.mean(v)) for t, v in single.items() if v},
        "all_together_loss": {t: float(np.mean(v)) for t, v in full.items() if v},
    }


# ---------------------------------------------------------------- the recommendation


def _pct(x: float) -> str:
    return f"{100 * x:+.1f}%"


def _weakest_source(scores: Iterable[TaskScore]) -> str:
    return max((s.source for s in scores), key=SCORE_SOURCES.index, default="single")


@dataclass(frozen=True)
class _Context:
    """What `recommend` and `selection_candidates` derive from the tables alike."""

    tasks: tuple[str, ...]
    scorer: GroupScorer
    choice: BudgetChoice
    aux: Mapping[str, Sequence[Any]]  # task -> its chosen AuxChoice list
    related_columns: Mapping[str, tuple[str, ...]]
    depth: pd.DataFrame | None
    similarity: pd.DataFrame | None
    depth_L: int
    fdr: float
    max_group_size: int | None


def _context(
    *, spec_tasks: Sequence[str], affinity: pd.DataFrame, group_scores: pd.DataFrame | None,
    depth: pd.DataFrame | None, similarity: pd.DataFrame | None, candidates: Sequence[Mapping[str, Any]] | None,
    depth_L: int, networks: int | None, aux_cap: int, max_group_size: int | None, fdr: float,
    predict: ScoreFn | None = None,
) -> _Context:
    tasks = tuple(spec_tasks)
    if len(set(tasks)) != len(tasks) or not tasks:
        raise SpecError(f"spec_tasks must be distinct task names, at least one. Got {list(tasks)} instead.")
    if not isinstance(depth_L, int) or depth_L < 0:
        raise SpecError(f"depth_L must be an int >= 0 (the trunk's layer count). Got {depth_L!r} instead.")
    aux_kinds = {str(c["name"]): str(c.get("kind", "unknown")) for c in candidates or ()}
    related_columns = {
        str(c["name"]): tuple((c.get("provenance") or {}).get("columns", ()))
        for c in candidates or () if c.get("kind") == "related"
    }
    scorer = GroupScorer.from_tables(tasks=tasks, group_scores=group_scores, affinity=affinity, fdr=fdr,
                                     predict=predict)
    choice = choose_grouping(tasks, scorer, networks=networks, max_group_size=max_group_size)
    verdicts = {k: sc.discovered for k, sc in scorer.aux_rows.items()} if fdr < 1.0 else None
    aux = choose_auxiliaries(affinity, tasks=tasks, aux_kinds=aux_kinds, cap=aux_cap, discovered=verdicts)
    return _Context(tasks, scorer, choice, aux, related_columns, depth, similarity, depth_L, fdr, max_group_size)


def _fdr_reason(ctx: _Context) -> list[str]:
    if ctx.fdr >= 1.0:
        return []
    s = ctx.scorer
    tested = [sc for sc in (*s.group_rows.values(), *s.pair_rows.values(), *s.aux_rows.values())
              if sc.discovered is not None]
    return [f"measured gains count as real only as discoveries at a false-discovery rate of {ctx.fdr:g} "
            f"(Benjamini-Hochberg over the measured comparisons; {sum(sc.discovered for sc in tested)} "
            f"of {len(tested)} scores pass)"]


def _group_aux(ctx: _Context, members: Sequence[str], served: Sequence[str]) -> list[dict[str, Any]]:
    # A related auxiliary that copies a member task adds nothing: the group trains that task.
    # The network trains each auxiliary once, however many of its served tasks gain from it.
    by_name: dict[str, dict[str, Any]] = {}
    for t in served:
        for a in ctx.aux[t]:
            copied = set(ctx.related_columns.get(a.name, ()))
            if a.kind == "related" and copied and copied <= set(members) - {t}:
                continue
            entry = by_name.setdefault(a.name, {"name": a.name, "kind": a.kind, "serves": [],
                                                "expected_gain": {}, "ci": {}})
            entry["serves"].append(t)
            entry["expected_gain"][t] = a.expected_gain
            entry["ci"][t] = list(a.ci)
    return list(by_name.values())


def _branch_reason(members: Sequence[str], branch: BranchChoice, depth_L: int) -> list[str]:
    joined = " + ".join(members)
    if branch.source == "depth" and len(members) > 1:
        return [f"{joined} branches after layer {branch.layer} of {depth_L} "
                f"(mean gain {_pct(branch.mean_gain)} there, from the depth phase)"]
    if branch.source == "measured":
        return [f"{joined} shares the whole trunk ({depth_L} layers), as when its gains were measured"]
    if branch.source == "rsa":
        return [f"{joined}: no depth-phase result; branch layer {branch.layer} from representation similarity"]
    if len(members) > 1:
        return [f"{joined}: no depth or similarity result; sharing the whole trunk ({depth_L} layers)"]
    return []


def _group_entries(ctx: _Context, g: Grouping) -> tuple[list[dict[str, Any]], list[str]]:
    """The recommendation's groups for grouping `g` (branch layer, auxiliaries, expected gains), and
    the reasons of their branch layers."""
    groups, reasons = [], []
    for i, members in enumerate(g.groups):
        served = [t for t in members if g.assignment[t] == i]
        member_scores = {t: (g.scores[t] if t in served else ctx.scorer(members, t)) for t in members}
        if len(members) > 1:
            measured = all(member_scores[t] is not None and member_scores[t].source == "measured" for t in served)
            branch = choose_branch_layer(members, order=ctx.tasks, depth=ctx.depth, similarity=ctx.similarity,
                                         depth_L=ctx.depth_L, measured=measured)
        else:
            branch = BranchChoice(ctx.depth_L, "default")
        groups.append({
            "tasks": list(members),
            "serves": served,
            "branch_layer": branch.layer,
            "branch_source": branch.source,
            "score_source": "single" if len(members) == 1 else _weakest_source(s for s in member_scores.values() if s),
            "sources": {t: (s.source if s else None) for t, s in member_scores.items()},
            "aux": _group_aux(ctx, members, served),
            "expected_gain": {t: (s.gain if s else None) for t, s in member_scores.items()},
            "ci": {t: (list(s.gain_ci) if s else None) for t, s in member_scores.items()},
        })
        reasons += _branch_reason(members, branch, ctx.depth_L)
    return groups, reasons


def _gain_text(score: TaskScore) -> str:
    lo, hi = score.gain_ci
    return f"{_pct(score.gain)}, interval [{_pct(lo)}, {_pct(hi)}]"


def _why_separate(ctx: _Context, group_scores: pd.DataFrame | None,
                  baselines: Mapping[str, Mapping[str, float]] | None) -> str:
    """Why the solver serves every task alone."""
    tasks, scorer = ctx.tasks, ctx.scorer
    pairs = [(s, t, sc) for (s, t), sc in scorer.pair_rows.items() if sc.source == "measured"]
    if pairs:
        # The pairs as the grouping scored them (a measured group score comes before the gain row).
        scored = [(s, t, scorer((s, t), t) or sc) for s, t, sc in pairs]
        real = [p for p in scored if p[2].real]
        kept_out = [p for p in scored if not p[2].real and p[2].ci_high < 1.0]  # by the false-discovery control
        if real:
            # Real gains one way only: a shared network is recommended only when every task in
            # it gains (solve_grouping's only_real).
            s, t, sc = min(real, key=lambda p: p[2].norm_loss)
            back = scorer((s, t), s)
            return (f"no two tasks both gain from training together with intervals that exclude zero, and a shared "
                    f"network is recommended only when each of its tasks gains (the largest real gain: {s} -> {t} "
                    f"{_gain_text(sc)}; {t} -> {s} " + (_gain_text(back) if back is not None else "not measured") + ")")
        if kept_out:
            s, t, sc = min(kept_out, key=lambda p: p[2].norm_loss)
            return (f"no task's gain from a partner survives the false-discovery-rate control (the largest gain: "
                    f"{s} -> {t} {_gain_text(sc)})")
        s, t, sc = min(scored, key=lambda p: p[2].norm_loss)
        return f"no task gains from any partner with an interval that excludes zero (the largest gain: {s} -> {t} {_gain_text(sc)})"
    if len(tasks) == 1:
        return f"{tasks[0]} is the only main task, so there is nothing to group it with"
    # A pairwise gain is measured against the task trained alone: without the single phase
    # the pairs phase's models give no gain at all.
    alone = any(len(members) == 1 for members, _ in scorer.group_rows) or bool((baselines or {}).get("single_task_loss"))
    if alone:
        missing = "run the search's 'pairs' phase"
    elif group_scores is not None or baselines is not None:
        missing = "run the search's 'single' phase: gains are measured against each task trained alone"
    else:
        missing = "run the search's 'single' and 'pairs' phases"
    return f"there are no measured pairwise gains to group by ({missing})"


def _grouped_verdict(ctx: _Context, g: Grouping, groups: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    parts = []
    for grp in groups:
        if len(grp["tasks"]) > 1:
            part = f"{{{', '.join(grp['tasks'])}}} branching after layer {grp['branch_layer']} of {ctx.depth_L}"
        else:
            part = f"{grp['tasks'][0]} alone"
        if grp["aux"]:
            part += " with auxiliaries " + ", ".join(a["name"] for a in grp["aux"])
        parts.append(part)
    mean_gain = float(np.mean([1.0 - g.scores[t].norm_loss for t in ctx.tasks]))
    verdict = (f"Train {g.networks} network(s): {'; '.join(parts)}; expected mean gain {_pct(mean_gain)} per task "
               f"over training each task alone.")
    reason = (f"chosen from {len(ctx.choice.front)} feasible budgets; total normalised loss {g.total:.3f} "
              f"(interval {g.ci[0]:.3f}..{g.ci[1]:.3f}) against {float(len(ctx.tasks)):.3f} for every task alone")
    return verdict, reason


def _grouping_of(ctx: _Context, candidate: Candidate) -> Grouping:
    """`candidate`'s networks as a Grouping, each task served as the candidate says (a score the
    tables do not hold is left unknown: NaN)."""
    groups = tuple(n.tasks for n in candidate.networks)
    assignment = {t: i for i, n in enumerate(candidate.networks) for t in n.serves}
    unknown = TaskScore(math.nan, math.nan, math.nan, "hoa", 0)
    scores = {t: (ALONE if len(groups[i]) == 1 else ctx.scorer(groups[i], t) or unknown) for t, i in assignment.items()}
    return Grouping(tasks=ctx.tasks, groups=groups, assignment=assignment, scores=scores,
                    only_real=all(s.real or s is ALONE for s in scores.values()))


def recommend(
    *,
    spec_tasks: Sequence[str],
    affinity: pd.DataFrame,
    group_scores: pd.DataFrame | None = None,
    depth: pd.DataFrame | None = None,
    similarity: pd.DataFrame | None = None,
    candidates: Sequence[Mapping[str, Any]] | None = None,
    baselines: Mapping[str, Mapping[str, float]] | None = None,
    depth_L: int,
    networks: int | None = None,
    aux_cap: int = 3,
    max_group_size: int | None = None,
    fdr: float = 1.0,
    selection: Selection | None = None,
    predict: ScoreFn | None = None,
) -> dict[str, Any]:
    """The recommendation.json object (schema_version 1, rundir.py and DESIGN.md) for `spec_tasks`.

    `candidates` are the candidates.json objects (name, kind, ...) used to name auxiliary kinds;
    `baselines` maps "single_task_loss" and "all_together_loss" to per-task losses (see
    `baselines_from_trials`). Groups cover every task; a task with no real gain anywhere is a group
    of its own. The Pareto front lists, per budget of networks, the best total normalised loss
    with real gains only. With `selection` (the selection stage's result) the grouping is the
    candidate it chose, and the object gets its `selection` block. `predict` scores on demand the
    groups no table row holds (the subsets surrogate: `subset_scores.subset_predictor`).
    """
    ctx = _context(spec_tasks=spec_tasks, affinity=affinity, group_scores=group_scores, depth=depth,
                   similarity=similarity, candidates=candidates, depth_L=depth_L, networks=networks,
                   aux_cap=aux_cap, max_group_size=max_group_size, fdr=fdr, predict=predict)
    tasks, choice = ctx.tasks, ctx.choice
    g = choice.grouping
    if selection is not None and RECOMMENDED not in selection.candidate.names:
        g = _grouping_of(ctx, selection.candidate)
    groups, branch_reasons = _group_entries(ctx, g)
    if selection is not None:  # the networks as the selection stage trained them
        nets = {n.tasks: n for n in selection.candidate.networks}
        groups = [{**grp, "branch_layer": nets[tuple(grp["tasks"])].branch_layer,
                   "aux": [a for a in grp["aux"] if a["name"] in nets[tuple(grp["tasks"])].aux]} for grp in groups]
    reasons = [*choice.reasons, *_fdr_reason(ctx), *branch_reasons]
    if not any(len(grp["tasks"]) > 1 for grp in groups):
        why = _why_separate(ctx, group_scores, baselines) if selection is None else "the selection stage chose it"
        reasons.insert(0, why)
        verdict = (f"Train every task separately ({len(tasks)} networks): {why}." if len(tasks) > 1
                   else f"Train {tasks[0]} in a network of its own: {why}.")
        if any(ctx.aux.values()) and selection is None:
            verdict += " Add the auxiliaries listed under 'auxiliaries'; their gains are real."
    else:
        verdict, head = _grouped_verdict(ctx, g, groups)
        reasons.insert(0, head)
    with_aux = {t: a for t, a in ctx.aux.items() if a}
    if with_aux:
        reasons.append("auxiliaries with a real gain: " + "; ".join(
            f"{t}: {', '.join(a.name for a in lst)}" for t, lst in with_aux.items()))
    rec = {
        "schema_version": rundir.SCHEMA_VERSION,
        "tasks": list(tasks),
        "groups": groups,
        "assignment": dict(g.assignment),
        "auxiliaries": {
            t: [{"name": a.name, "kind": a.kind, "expected_gain": a.expected_gain, "ci": list(a.ci)} for a in lst]
            for t, lst in ctx.aux.items()
        },
        "baselines": {
            "single_task_loss": dict((baselines or {}).get("single_task_loss", {})),
            "all_together_loss": dict((baselines or {}).get("all_together_loss", {})),
        },
        "budget": {"networks": g.networks, "requested": networks},
        "pareto": [{"networks": n, "used": f.networks, "total_normalised_loss": f.total, "ci": list(f.ci),
                    "groups": [list(x) for x in f.groups]} for n, f in sorted(choice.front.items())],
        "verdict": verdict,
        "reasons": reasons,
    }
    if selection is not None:
        rec = _with_selection(rec, selection)
    return rundir.json_safe(rec)


def _with_selection(rec: dict[str, Any], selection: Selection) -> dict[str, Any]:
    """`rec` with the selection block, its verdict led by the held-out comparison."""
    held_out = (f"Chosen on held-out rows with {len(selection.seeds)} fresh seeds among {len(selection.scores)} "
                f"candidates ({selection.chosen}); {selection.beat_text()}.")
    return {**rec, "verdict": f"{rec['verdict']} {held_out}",
            "reasons": [*selection.reasons, *rec["reasons"]], "selection": selection.to_dict()}


def selection_candidates(
    *, spec_tasks: Sequence[str], affinity: pd.DataFrame, group_scores: pd.DataFrame | None = None,
    depth: pd.DataFrame | None = None, similarity: pd.DataFrame | None = None,
    candidates: Sequence[Mapping[str, Any]] | None = None, depth_L: int, networks: int | None = None,
    aux_cap: int = 3, max_group_size: int | None = None, fdr: float = 1.0, subset_groups: int = 2,
    predict: ScoreFn | None = None,
) -> tuple[Candidate, ...]:
    """The selection stage's finalists, as `recommend` would describe each (branch layers and
    auxiliaries from the same tables): all-together, the solver's recommendation, the best grouping
    at each budget on the Pareto front, the solver's best grouping without the per-task gate, the
    `subset_groups` best groups the subsets phase measured (each with the other tasks alone), and
    all-separate. Duplicates (the same networks) keep their first name."""
    ctx = _context(spec_tasks=spec_tasks, affinity=affinity, group_scores=group_scores, depth=depth,
                   similarity=similarity, candidates=candidates, depth_L=depth_L, networks=networks,
                   aux_cap=aux_cap, max_group_size=max_group_size, fdr=fdr, predict=predict)
    tasks = ctx.tasks
    # above the exact solver's size, shrunk sampled gains are chosen on their estimated total, ungated
    how = ("lowest estimated total" if chooses_on_estimates(tasks, ctx.scorer, EXACT_MAX_TASKS)
           else "per-task gate")
    named: list[tuple[str, str, Grouping]] = [
        (TOGETHER, "every task in one network, the whole trunk shared, no auxiliaries", _plain(ctx, [tasks])),
        (RECOMMENDED, f"the solver's choice ({how})", ctx.choice.grouping),
    ]
    named += [(f"front:{n}", f"the best grouping with at most {n} networks ({how})", f)
              for n, f in sorted(ctx.choice.front.items())]
    ungated = solve_grouping(tasks, ctx.scorer, max_group_size=max_group_size, only_real=False)
    solved = [u for u in ungated.values() if u is not None]
    if solved:
        best = min(solved, key=lambda u: (round(u.total, 12), u.networks))
        named.append(("ungated", "the solver's best grouping without the per-task gate", best))
    for grp in _measured_groups(ctx, subset_groups):
        named.append((f"subset:{'+'.join(grp)}", "a group the search measured, the other tasks alone",
                      _plain(ctx, [grp, *[(t,) for t in tasks if t not in grp]])))
    named.append((SEPARATE, "every task in a network of its own, no auxiliaries", _plain(ctx, [(t,) for t in tasks])))
    out: dict[Any, Candidate] = {}
    for name, origin, g in named:
        if name in (SEPARATE, TOGETHER):  # the baselines as `verify` trains them
            nets = tuple(Network(grp, grp, ctx.depth_L) for grp in g.groups)
        else:
            groups, _ = _group_entries(ctx, g)
            nets = tuple(Network(tuple(x["tasks"]), tuple(x["serves"]), int(x["branch_layer"]),
                                 tuple(a["name"] for a in x["aux"])) for x in groups if x["serves"])
        c = Candidate(name, nets, origin)
        first = out.get(c.signature)
        if first is None:
            out[c.signature] = c
        elif name in (SEPARATE, TOGETHER):  # a baseline keeps its own name; the other names become aliases
            out[c.signature] = Candidate(name, nets, origin, (first.name, *first.aliases))
        else:
            out[c.signature] = Candidate(first.name, first.networks, first.origin, (*first.aliases, name))
    return tuple(out.values())


def _plain(ctx: _Context, groups: Sequence[Sequence[str]]) -> Grouping:
    """A partition of the tasks, each task served by its own block."""
    nets = tuple(Network(tuple(g), tuple(g), ctx.depth_L) for g in groups)
    return _grouping_of(ctx, Candidate("plain", nets, ""))


def _measured_groups(ctx: _Context, k: int) -> list[tuple[str, ...]]:
    """The `k` groups of 3 or more tasks (short of all) with the lowest measured mean normalised loss."""
    rows: dict[tuple[str, ...], list[float]] = {}
    for (members, _task), sc in ctx.scorer.group_rows.items():
        if 2 < len(members) < len(ctx.tasks) and sc.source == "measured" and math.isfinite(sc.norm_loss):
            rows.setdefault(tuple(members), []).append(sc.norm_loss)
    full = [g for g, v in rows.items() if len(v) == len(g)]
    return sorted(full, key=lambda g: (float(np.mean(rows[g])), g))[:k]


def write_recommendation(run_dir: str | Path, rec: Mapping[str, Any]) -> Path:
    """Write recommendation.json into `run_dir`, atomically."""
    return rundir.write_json(Path(run_dir) / rundir.RECOMMENDATION, rundir.json_safe(dict(rec)))


def _run_inputs(run_dir: str | Path, similarity: pd.DataFrame | None) -> tuple[Path, Any, dict[str, Any]]:
    """The run directory, its spec and the tables `recommend` takes (also graph.graphml, rewritten)."""

    d = rundir.require(run_dir, rundir.SPEC, rundir.AFFINITY)
    spec = spec_from_json((d / rundir.SPEC).read_text(encoding="utf-8"))
    tasks = spec.main_tasks
    affinity = pd.read_csv(d / rundir.AFFINITY)
    group_scores = pd.read_csv(d / rundir.GROUP_SCORES) if (d / rundir.GROUP_SCORES).exists() else None
    depth = pd.read_csv(d / rundir.DEPTH) if (d / rundir.DEPTH).exists() else None
    candidates = rundir.read_json(d / rundir.CANDIDATES) if (d / rundir.CANDIDATES).exists() else []
    if similarity is None and (d / rundir.RSA_LAYERS).exists():
        similarity = pd.read_csv(d / rundir.RSA_LAYERS)
    predict = None
    if (d / rundir.SUBSET_OBSERVATIONS).exists():
        observations = pd.read_csv(d / rundir.SUBSET_OBSERVATIONS)
        group_scores = with_subset_scores(group_scores, observations, tasks, surrogate=False)
        predict = subset_predictor(group_scores, observations, tasks)
    predict = predict or sampled_predictor(affinity, tasks)  # a search over many tasks: sampled subsets
    aux_kinds = {str(c["name"]): str(c.get("kind", "unknown")) for c in candidates}
    save_graphml(build_graph(affinity, tasks=tasks, aux_kinds=aux_kinds), d / rundir.GRAPH)
    inputs = dict(spec_tasks=tasks, affinity=affinity, group_scores=group_scores, depth=depth, similarity=similarity,
                  candidates=candidates, depth_L=spec.model.depth, fdr=spec.search.fdr, predict=predict)
    return d, spec, inputs


def selection_candidates_run(run_dir: str | Path, *, networks: int | None = None, aux_cap: int = 3) -> tuple[Candidate, ...]:
    """`selection_candidates` over a run directory's saved tables (as `recommend_run` reads them)."""
    _, spec, inputs = _run_inputs(run_dir, None)
    return selection_candidates(**inputs, networks=networks if networks is not None else spec.search.networks,
                                aux_cap=aux_cap)


def _saved_selection(d: Path, tasks: Sequence[str]) -> Selection | None:
    """selection.json of the run directory when it belongs to these tasks."""
    if not (d / rundir.SELECTION).exists():
        return None
    sel = Selection.from_dict(rundir.read_json(d / rundir.SELECTION))
    served = sorted(t for n in sel.candidate.networks for t in n.serves)
    return sel if served == sorted(tasks) else None


@one_blas_thread()
def recommend_run(
    run_dir: str | Path, *, networks: int | None = None, aux_cap: int = 3, similarity: pd.DataFrame | None = None,
    unfinished: Sequence[str] = (),
) -> dict[str, Any]:
    """Rebuild graph.graphml and recommendation.json of a run directory from its saved tables.

    `unfinished` names the search's phases that its time limit cut short: the recommendation then
    says it is provisional, and why.

    Needs spec.json and affinity.csv; group_scores.csv, depth.csv, candidates.json,
    trials.parquet and selection.json (the selection stage's choice) are used when present.
    Returns the recommendation.
    """
    d, spec, inputs = _run_inputs(run_dir, similarity)
    baselines = (
        baselines_from_trials(pd.read_parquet(d / rundir.TRIALS), tasks=spec.main_tasks)
        if (d / rundir.TRIALS).exists() else None
    )
    rec = recommend(
        **inputs, baselines=baselines, networks=networks if networks is not None else spec.search.networks,
        aux_cap=aux_cap, selection=_saved_selection(d, spec.main_tasks),
    )
    if unfinished:
        why = (f"the search stopped at its time limit before finishing the phase(s) {', '.join(unfinished)}: "
               f"this rests on the models measured so far; run the same command again to complete it")
        rec = {**rec, "verdict": f"Provisional: {rec['verdict']}", "reasons": [why, *rec["reasons"]]}
    write_recommendation(d, rec)
    return rec
