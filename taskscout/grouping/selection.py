"""Selection of the whole grouping: finalists scored again on held-out rows with fresh seeds.

The grouping the solver picks is the best of many noisy comparisons on the same validation rows and
seeds, so its expected gain is optimistic (the winner's curse), and a gate that admits a task to a
network only where its own gain is real can miss many small gains that add up. The selection stage
retrains a few whole groupings (the candidates) with seeds the search never used, scores them on
rows no earlier phase used to measure a gain or to stop training, and decides on the total.

Scores. Per seed s and task t, a candidate's normalised loss is its held-out loss for t (read from
the network that serves t) over all-separate's held-out loss for t with the same seed; its total
is the sum over tasks (all-separate's total is the number of tasks). Two candidates are compared
paired per seed: the mean of the per-seed differences of their totals, with a 95% Student-t
interval over seeds.

The rule (`choose`). The better baseline is all-separate or all-together, whichever has the lower
mean total. A candidate whose total is worse than the better baseline's with an interval that
excludes zero is never chosen. Among the others, start from the one with fewest networks and move
to a richer one (more networks) only when its total is better than the current choice's with an
interval that excludes zero; so a tie goes to the simpler candidate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from taskscout.affinity.measured import t_interval
from taskscout.errors import MissingResultsError
from taskscout.recommendation import (  # the typed block, in a module the report can load without numpy
    BASELINES,
    RECOMMENDED,
    ROWS,
    RULES,
    SEPARATE,
    TOGETHER,
    Candidate,
    CandidateScore,
    Network,
    Selection,
    Triple,
)

__all__ = ["BASELINES", "RECOMMENDED", "ROWS", "RULES", "SEPARATE", "TOGETHER", "Candidate", "CandidateScore",
           "Network", "Selection", "Triple", "choose", "relative_gain", "score_candidates", "select", "task_losses"]

# ---------------------------------------------------------------- scoring


def task_losses(
    candidate: Candidate, losses: Mapping[tuple[Network, int], Mapping[str, float]], seeds: Sequence[int],
) -> dict[int, dict[str, float]]:
    """seed -> task -> the held-out loss of the network serving the task (NaN when missing)."""
    tasks = [t for n in candidate.networks for t in n.serves]
    return {s: {t: float(losses.get((candidate.serving(t), s), {}).get(t, math.nan)) for t in tasks} for s in seeds}


def _totals(
    per_seed: Mapping[int, Mapping[str, float]], alone: Mapping[int, Mapping[str, float]],
    usable: Mapping[int, Sequence[str]],
) -> dict[int, float]:
    return {s: float(sum(per_seed[s][t] / alone[s][t] for t in ts)) for s, ts in usable.items() if ts}


def _interval(values: Sequence[float]) -> Triple:
    iv = t_interval(values)
    return (iv.mean, iv.low, iv.high)


def score_candidates(
    candidates: Sequence[Candidate], losses: Mapping[tuple[Network, int], Mapping[str, float]],
    seeds: Sequence[int],
) -> tuple[CandidateScore, ...]:
    """Held-out totals of every candidate, paired per seed. `candidates` must hold all-separate and
    all-together (by name); a task counts on a seed only where every candidate has a finite loss for it."""
    per = {c.name: task_losses(c, losses, seeds) for c in candidates}
    alone = per[SEPARATE]
    usable = {s: [t for t in alone[s] if all(math.isfinite(per[c][s].get(t, math.nan)) and per[SEPARATE][s][t] > 0
                                             for c in per)] for s in seeds}
    if not any(usable.values()):
        raise MissingResultsError(
            "the selection stage's models have no held-out loss for any task on any seed; the trainer must "
            "evaluate the 'test' split (eval_splits) of the selection problems: rerun the search"
        )
    totals = {c.name: _totals(per[c.name], alone, usable) for c in candidates}
    best = min(BASELINES, key=lambda b: np.mean(list(totals[b].values())) if totals[b] else math.inf)
    out = []
    for c in candidates:
        mine = totals[c.name]
        diff = [mine[s] - totals[best][s] for s in mine if s in totals[best]]
        out.append(CandidateScore(c, mine, _interval(list(mine.values())), _interval(diff)))
    return tuple(out)


def _paired_diff(a: CandidateScore, b: CandidateScore) -> Triple:
    return _interval([a.totals[s] - b.totals[s] for s in a.totals if s in b.totals])


def relative_gain(choice: CandidateScore, baseline: CandidateScore) -> Triple:
    """Per seed (baseline total - choice total) / baseline total: mean and 95% interval."""
    return _interval([(baseline.totals[s] - choice.totals[s]) / baseline.totals[s]
                      for s in choice.totals if s in baseline.totals and baseline.totals[s] > 0])


# ---------------------------------------------------------------- the rule


def choose(scores: Sequence[CandidateScore]) -> tuple[str, str, tuple[str, ...]]:
    """The rule on totals (module docstring): the chosen candidate's name, the better baseline's
    name, and the reasons. `scores` in order of preference among candidates with as many networks."""
    by_name = {s.candidate.name: s for s in scores}
    best = min(BASELINES, key=lambda b: by_name[b].total[0])
    reasons = []
    eligible = []
    for s in sorted(scores, key=lambda s: len(s.candidate.networks)):  # stable: ties keep their order
        mean, low, _ = s.vs_best_baseline
        if s.candidate.name != best and low > 0:
            reasons.append(f"{s.candidate.name} is worse than {best} on the held-out total "
                           f"(+{mean:.3f} [{low:+.3f}, {s.vs_best_baseline[2]:+.3f}]): never chosen")
            continue
        eligible.append(s)
    current = eligible[0]
    reasons.append(f"start from the simplest admissible candidate, {current.candidate.name} "
                   f"({len(current.candidate.networks)} network(s))")
    for s in eligible[1:]:
        if len(s.candidate.networks) == len(current.candidate.networks) and s.candidate.signature == current.candidate.signature:
            continue
        mean, low, high = _paired_diff(s, current)
        if high < 0:
            reasons.append(f"{s.candidate.name} ({len(s.candidate.networks)} networks) beats {current.candidate.name} "
                           f"on the total: {mean:+.3f} [{low:+.3f}, {high:+.3f}]; it becomes the choice")
            current = s
        elif math.isfinite(mean):
            reasons.append(f"{s.candidate.name} ({len(s.candidate.networks)} networks) vs {current.candidate.name}: "
                           f"{mean:+.3f} [{low:+.3f}, {high:+.3f}], not clearly better; the simpler stays")
    return current.candidate.name, best, tuple(reasons)


def select(
    candidates: Sequence[Candidate], losses: Mapping[tuple[Network, int], Mapping[str, float]], seeds: Sequence[int],
    *, rule: str = "total", rows: str = "crossfit", rows_detail: str = "", models: int = 0,
    budget_fraction: float = math.nan, compute_fraction: float = math.nan,
) -> Selection:
    """Score `candidates` on their held-out `losses` ((network, seed) -> task -> loss) and choose one.

    rule "total" applies `choose`; rule "per-task" keeps the candidate named RECOMMENDED (the
    solver's per-task-gated grouping) and records what the rule on totals would have chosen."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {list(RULES)}; got {rule!r}")
    scores = score_candidates(candidates, losses, seeds)
    chosen, best, reasons = choose(scores)
    by_name = {n: s for s in scores for n in s.candidate.names}
    if rule == "per-task":
        reasons = (*reasons, f"the per-task gate is on (search.selection_rule = per-task): the solver's "
                             f"recommendation stands; on the totals the rule would choose {chosen}")
        chosen = by_name[RECOMMENDED].candidate.name
    return Selection(
        rule=rule, rows=rows, rows_detail=rows_detail, seeds=tuple(seeds), scores=scores, chosen=chosen,
        best_baseline=best, gain_vs_separate=relative_gain(by_name[chosen], by_name[SEPARATE]),
        gain_vs_together=relative_gain(by_name[chosen], by_name[TOGETHER]), reasons=reasons, models=models,
        budget_fraction=budget_fraction, compute_fraction=compute_fraction,
    )
