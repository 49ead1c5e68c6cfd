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
from dataclasses import dataclass
from typing import Any

import numpy as np

from taskscout.affinity.measured import t_interval
from taskscout.errors import MissingResultsError

SEPARATE, TOGETHER, RECOMMENDED = "all-separate", "all-together", "recommended"
BASELINES = (SEPARATE, TOGETHER)
RULES = ("total", "per-task")
ROWS = ("crossfit", "carve")

Triple = tuple[float, float, float]  # mean, 95% low, 95% high


@dataclass(frozen=True)
class Network:
    """One network of a candidate: the tasks it trains, those it serves, its branch layer, its auxiliaries."""

    tasks: tuple[str, ...]
    serves: tuple[str, ...]
    branch_layer: int
    aux: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"tasks": list(self.tasks), "serves": list(self.serves), "branch_layer": self.branch_layer,
                "aux": list(self.aux)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Network:
        return cls(tuple(d["tasks"]), tuple(d["serves"]), int(d["branch_layer"]), tuple(d.get("aux", ())))


@dataclass(frozen=True)
class Candidate:
    """A whole grouping the selection stage retrains: every task is served by exactly one network."""

    name: str
    networks: tuple[Network, ...]
    origin: str  # why it is a finalist, in words
    aliases: tuple[str, ...] = ()  # other finalists' names with the very same networks

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def serving(self, task: str) -> Network:
        return next(n for n in self.networks if task in n.serves)

    @property
    def signature(self) -> frozenset[tuple[tuple[str, ...], tuple[str, ...], int, tuple[str, ...]]]:
        """What makes two candidates the same networks (their names aside)."""
        return frozenset((n.tasks, n.serves, n.branch_layer, n.aux) for n in self.networks)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "aliases": list(self.aliases), "origin": self.origin,
                "networks": [n.to_dict() for n in self.networks]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Candidate:
        return cls(str(d["name"]), tuple(Network.from_dict(n) for n in d["networks"]), str(d.get("origin", "")),
                   tuple(d.get("aliases", ())))


@dataclass(frozen=True)
class CandidateScore:
    """A candidate's held-out total normalised loss, and its paired difference to the better baseline."""

    candidate: Candidate
    totals: Mapping[int, float]  # seed -> total normalised loss
    total: Triple  # mean over seeds and its 95% interval
    vs_best_baseline: Triple  # total minus the better baseline's total, per seed: mean and interval

    def to_dict(self) -> dict[str, Any]:
        return {**self.candidate.to_dict(), "totals": {str(s): v for s, v in self.totals.items()},
                "total": list(self.total), "vs_best_baseline": list(self.vs_best_baseline)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CandidateScore:
        return cls(Candidate.from_dict(d), {int(s): float(v) for s, v in d["totals"].items()},
                   _triple(d["total"]), _triple(d["vs_best_baseline"]))


@dataclass(frozen=True)
class Selection:
    """The selection stage's result: the `selection` block of recommendation.json."""

    rule: str  # "total" (the default) or "per-task" (the solver's per-task-gated choice stands)
    rows: str  # "crossfit" or "carve"
    rows_detail: str
    seeds: tuple[int, ...]
    scores: tuple[CandidateScore, ...]
    chosen: str
    best_baseline: str
    gain_vs_separate: Triple  # relative drop of the total against all-separate, per seed: mean and interval
    gain_vs_together: Triple
    reasons: tuple[str, ...]
    models: int = 0  # selection models trained or reused
    budget_fraction: float = math.nan  # the stage's compute over the single and pairs phases'

    def score(self, name: str) -> CandidateScore:
        """The score of the candidate called `name` (or with `name` among its aliases)."""
        return next(s for s in self.scores if name in s.candidate.names)

    @property
    def candidate(self) -> Candidate:
        return self.score(self.chosen).candidate

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule, "rows": self.rows, "rows_detail": self.rows_detail, "seeds": list(self.seeds),
            "candidates": [s.to_dict() for s in self.scores], "chosen": self.chosen,
            "best_baseline": self.best_baseline, "gain_vs_separate": list(self.gain_vs_separate),
            "gain_vs_together": list(self.gain_vs_together), "reasons": list(self.reasons),
            "models": self.models, "budget_fraction": self.budget_fraction,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Selection:
        return cls(
            rule=str(d["rule"]), rows=str(d["rows"]), rows_detail=str(d.get("rows_detail", "")),
            seeds=tuple(int(s) for s in d["seeds"]),
            scores=tuple(CandidateScore.from_dict(c) for c in d["candidates"]), chosen=str(d["chosen"]),
            best_baseline=str(d["best_baseline"]), gain_vs_separate=_triple(d["gain_vs_separate"]),
            gain_vs_together=_triple(d["gain_vs_together"]), reasons=tuple(d.get("reasons", ())),
            models=int(d.get("models", 0)), budget_fraction=float(_num(d.get("budget_fraction"))),
        )

    def side_by_side(self) -> str:
        """The candidates in one line: name, networks, held-out total with its interval; the chosen one marked."""
        parts = []
        for s in self.scores:
            mark = "*" if s.candidate.name == self.chosen else ""
            lo, hi = s.total[1:]
            iv = "" if not (math.isfinite(lo) and math.isfinite(hi)) or lo == hi else f" [{lo:.2f}, {hi:.2f}]"
            parts.append(f"{mark}{s.candidate.name} ({len(s.candidate.networks)} net) {s.total[0]:.2f}{iv}")
        return "; ".join(parts)

    def beat_text(self) -> str:
        """Which baseline the choice beat on the held-out rows, and by how much."""
        gain = self.gain_vs_separate if self.best_baseline == SEPARATE else self.gain_vs_together
        other = self.gain_vs_together if self.best_baseline == SEPARATE else self.gain_vs_separate
        other_name = TOGETHER if self.best_baseline == SEPARATE else SEPARATE
        if self.chosen == self.best_baseline:
            return (f"the choice is the better baseline, {self.best_baseline}: "
                    f"{_pct(other[0])} {_iv(other)} against {other_name}")
        return (f"against the better baseline, {self.best_baseline}: {_pct(gain[0])} {_iv(gain)}; "
                f"against {other_name}: {_pct(other[0])} {_iv(other)}")


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)


def _triple(v: Sequence[Any]) -> Triple:
    a, b, c = (_num(x) for x in v)
    return (a, b, c)


def _pct(x: float) -> str:
    return f"{100 * x:+.1f}%" if math.isfinite(x) else "n/a"


def _iv(t: Triple) -> str:
    return f"[{_pct(t[1])}, {_pct(t[2])}]" if math.isfinite(t[1]) and math.isfinite(t[2]) else "(no interval)"


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
    budget_fraction: float = math.nan,
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
        budget_fraction=budget_fraction,
    )
