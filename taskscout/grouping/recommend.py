"""The recommendation: baselines, `recommend` over the tables, and `recommend_run` over a run directory."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from taskscout import rundir
from taskscout.errors import SpecError
from taskscout.grouping._tables import _require_columns
from taskscout.grouping.choices import BranchChoice, choose_auxiliaries, choose_branch_layer
from taskscout.grouping.graph import build_graph, save_graphml
from taskscout.grouping.scores import SCORE_SOURCES, GroupScorer, ScoreFn, TaskScore
from taskscout.grouping.solve import choose_grouping
from taskscout.grouping.subset_scores import sampled_predictor, subset_predictor, with_subset_scores

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
    predict: ScoreFn | None = None,
) -> dict[str, Any]:
    """The recommendation.json object (schema_version 1, rundir.py and DESIGN.md) for `spec_tasks`.

    `candidates` are the candidates.json objects (name, kind, ...) used to name auxiliary kinds;
    `baselines` maps "single_task_loss" and "all_together_loss" to per-task losses (see
    `baselines_from_trials`). Groups cover every task; a task with no real gain anywhere is a group
    of its own. The Pareto front lists, per budget of networks, the best total normalised loss
    with real gains only. `predict` scores on demand the groups no table row holds (the subsets
    surrogate: `subset_scores.subset_predictor`).
    """
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
    g = choice.grouping
    verdicts = {k: sc.discovered for k, sc in scorer.aux_rows.items()} if fdr < 1.0 else None
    aux = choose_auxiliaries(affinity, tasks=tasks, aux_kinds=aux_kinds, cap=aux_cap, discovered=verdicts)
    reasons = list(choice.reasons)
    if fdr < 1.0:
        scores = (*scorer.group_rows.values(), *scorer.pair_rows.values(), *scorer.aux_rows.values())
        tested = [sc for sc in scores if sc.discovered is not None]
        reasons.append(
            f"measured gains count as real only as discoveries at a false-discovery rate of {fdr:g} "
            f"(Benjamini-Hochberg over the measured comparisons; {sum(sc.discovered for sc in tested)} "
            f"of {len(tested)} scores pass)"
        )

    groups = []
    for i, members in enumerate(g.groups):
        served = [t for t in members if g.assignment[t] == i]
        member_scores = {t: (g.scores[t] if t in served else scorer(members, t)) for t in members}
        if len(members) > 1:
            measured = all(member_scores[t] is not None and member_scores[t].source == "measured" for t in served)
            branch = choose_branch_layer(members, order=tasks, depth=depth, similarity=similarity, depth_L=depth_L,
                                         measured=measured)
        else:
            branch = BranchChoice(depth_L, "default")
        # A related auxiliary that copies a member task adds nothing: the group trains that task.
        # The network trains each auxiliary once, however many of its served tasks gain from it.
        by_name: dict[str, dict[str, Any]] = {}
        for t in served:
            for a in aux[t]:
                copied = set(related_columns.get(a.name, ()))
                if a.kind == "related" and copied and copied <= set(members) - {t}:
                    continue
                entry = by_name.setdefault(a.name, {"name": a.name, "kind": a.kind, "serves": [],
                                                    "expected_gain": {}, "ci": {}})
                entry["serves"].append(t)
                entry["expected_gain"][t] = a.expected_gain
                entry["ci"][t] = list(a.ci)
        group_aux = list(by_name.values())
        groups.append({
            "tasks": list(members),
            "serves": served,
            "branch_layer": branch.layer,
            "branch_source": branch.source,
            "score_source": "single" if len(members) == 1 else _weakest_source(s for s in member_scores.values() if s),
            "sources": {t: (s.source if s else None) for t, s in member_scores.items()},
            "aux": group_aux,
            "expected_gain": {t: (s.gain if s else None) for t, s in member_scores.items()},
            "ci": {t: (list(s.gain_ci) if s else None) for t, s in member_scores.items()},
        })
        if branch.source == "depth" and len(members) > 1:
            reasons.append(
                f"{' + '.join(members)} branches after layer {branch.layer} of {depth_L} "
                f"(mean gain {_pct(branch.mean_gain)} there, from the depth phase)"
            )
        elif branch.source == "measured":
            reasons.append(
                f"{' + '.join(members)} shares the whole trunk ({depth_L} layers), as when its gains were measured"
            )
        elif branch.source == "rsa":
            reasons.append(
                f"{' + '.join(members)}: no depth-phase result; branch layer {branch.layer} from representation similarity"
            )
        elif len(members) > 1:
            reasons.append(
                f"{' + '.join(members)}: no depth or similarity result; sharing the whole trunk ({depth_L} layers)"
            )

    pareto = [
        {"networks": n, "used": f.networks, "total_normalised_loss": f.total, "ci": list(f.ci),
         "groups": [list(x) for x in f.groups]}
        for n, f in sorted(choice.front.items())
    ]
    multi = [grp for grp in groups if len(grp["tasks"]) > 1]
    if not multi:
        pairs = [(s, t, sc) for (s, t), sc in scorer.pair_rows.items() if sc.source == "measured"]
        if pairs:
            # The pairs as the grouping scored them (a measured group score comes before the gain row).
            scored = [(s, t, scorer((s, t), t) or sc) for s, t, sc in pairs]
            real = [p for p in scored if p[2].real]
            kept_out = [p for p in scored if not p[2].real and p[2].ci_high < 1.0]  # by the false-discovery control

            def gain_text(score: TaskScore) -> str:
                lo, hi = score.gain_ci
                return f"{_pct(score.gain)}, interval [{_pct(lo)}, {_pct(hi)}]"

            if real:
                # Real gains one way only: a shared network is recommended only when every task in
                # it gains (solve_grouping's only_real).
                s, t, sc = min(real, key=lambda p: p[2].norm_loss)
                back = scorer((s, t), s)
                why = (f"no two tasks both gain from training together with intervals that exclude zero, and a shared "
                       f"network is recommended only when each of its tasks gains (the largest real gain: {s} -> {t} "
                       f"{gain_text(sc)}; {t} -> {s} " + (gain_text(back) if back is not None else "not measured") + ")")
            elif kept_out:
                s, t, sc = min(kept_out, key=lambda p: p[2].norm_loss)
                why = (f"no task's gain from a partner survives the false-discovery-rate control (the largest gain: "
                       f"{s} -> {t} {gain_text(sc)})")
            else:
                s, t, sc = min(scored, key=lambda p: p[2].norm_loss)
                why = f"no task gains from any partner with an interval that excludes zero (the largest gain: {s} -> {t} {gain_text(sc)})"
        elif len(tasks) == 1:
            why = f"{tasks[0]} is the only main task, so there is nothing to group it with"
        else:
            # A pairwise gain is measured against the task trained alone: without the single phase
            # the pairs phase's models give no gain at all.
            alone = (any(len(members) == 1 for members, _ in scorer.group_rows)
                     or bool((baselines or {}).get("single_task_loss")))
            if alone:
                missing = "run the search's 'pairs' phase"
            elif group_scores is not None or baselines is not None:
                missing = "run the search's 'single' phase: gains are measured against each task trained alone"
            else:
                missing = "run the search's 'single' and 'pairs' phases"
            why = f"there are no measured pairwise gains to group by ({missing})"
        reasons.insert(0, why)
        verdict = (f"Train every task separately ({len(tasks)} networks): {why}." if len(tasks) > 1
                   else f"Train {tasks[0]} in a network of its own: {why}.")
        if any(aux.values()):
            verdict += " Add the auxiliaries listed under 'auxiliaries'; their gains are real."
    else:
        parts = []
        for grp in groups:
            if len(grp["tasks"]) > 1:
                part = f"{{{', '.join(grp['tasks'])}}} branching after layer {grp['branch_layer']} of {depth_L}"
            else:
                part = f"{grp['tasks'][0]} alone"
            if grp["aux"]:
                part += " with auxiliaries " + ", ".join(a["name"] for a in grp["aux"])
            parts.append(part)
        mean_gain = float(np.mean([1.0 - g.scores[t].norm_loss for t in tasks]))
        verdict = (
            f"Train {g.networks} network(s): {'; '.join(parts)}; expected mean gain {_pct(mean_gain)} per task "
            f"over training each task alone."
        )
        reasons.insert(0, (
            f"chosen from {len(choice.front)} feasible budgets; total normalised loss {g.total:.3f} "
            f"(interval {g.ci[0]:.3f}..{g.ci[1]:.3f}) against {float(len(tasks)):.3f} for every task alone"
        ))
    with_aux = {t: a for t, a in aux.items() if a}
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
            for t, lst in aux.items()
        },
        "baselines": {
            "single_task_loss": dict((baselines or {}).get("single_task_loss", {})),
            "all_together_loss": dict((baselines or {}).get("all_together_loss", {})),
        },
        "budget": {"networks": g.networks, "requested": networks},
        "pareto": pareto,
        "verdict": verdict,
        "reasons": reasons,
    }
    return rundir.json_safe(rec)


def write_recommendation(run_dir: str | Path, rec: Mapping[str, Any]) -> Path:
    """Write recommendation.json into `run_dir`, atomically."""
    return rundir.write_json(Path(run_dir) / rundir.RECOMMENDATION, rundir.json_safe(dict(rec)))


def recommend_run(
    run_dir: str | Path, *, networks: int | None = None, aux_cap: int = 3, similarity: pd.DataFrame | None = None,
    unfinished: Sequence[str] = (),
) -> dict[str, Any]:
    """Rebuild graph.graphml and recommendation.json of a run directory from its saved tables.

    `unfinished` names the search's phases that its time limit cut short: the recommendation then
    says it is provisional, and why.

    Needs spec.json and affinity.csv; group_scores.csv, depth.csv, candidates.json and
    trials.parquet are used when present. Returns the recommendation.
    """
    from taskscout.spec import spec_from_json

    d = rundir.require(run_dir, rundir.SPEC, rundir.AFFINITY)
    spec = spec_from_json((d / rundir.SPEC).read_text(encoding="utf-8"))
    tasks = spec.main_tasks
    affinity = pd.read_csv(d / rundir.AFFINITY)
    group_scores = pd.read_csv(d / rundir.GROUP_SCORES) if (d / rundir.GROUP_SCORES).exists() else None
    depth = pd.read_csv(d / rundir.DEPTH) if (d / rundir.DEPTH).exists() else None
    candidates = rundir.read_json(d / rundir.CANDIDATES) if (d / rundir.CANDIDATES).exists() else []
    baselines = (
        baselines_from_trials(pd.read_parquet(d / rundir.TRIALS), tasks=tasks)
        if (d / rundir.TRIALS).exists() else None
    )
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
    rec = recommend(
        spec_tasks=tasks, affinity=affinity, group_scores=group_scores, depth=depth, similarity=similarity,
        candidates=candidates, baselines=baselines, depth_L=spec.model.depth,
        networks=networks if networks is not None else spec.search.networks, aux_cap=aux_cap,
        fdr=spec.search.fdr, predict=predict,
    )
    if unfinished:
        why = (f"the search stopped at its time limit before finishing the phase(s) {', '.join(unfinished)}: "
               f"this rests on the models measured so far; run the same command again to complete it")
        rec = {**rec, "verdict": f"Provisional: {rec['verdict']}", "reasons": [why, *rec["reasons"]]}
    write_recommendation(d, rec)
    return rec
