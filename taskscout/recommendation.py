"""The recommendation as a typed, frozen result: what recommendation.json holds, parsed and checked once.

`recommend` writes the recommendation.json object; `Recommendation.from_dict` reads it back,
checking every key and the consistency of groups and assignment, so that export, verify, the
report and the Python API read attributes instead of agreeing on dict keys. `to_dict` writes the
same object again: ``Recommendation.from_dict(d).to_dict() == d`` for every object `recommend`
writes.

A hand-written recommendation may leave out what only the search knows: a group's `serves`
(then: the tasks the assignment gives it), `branch_source`, `score_source`, `sources`, gains and
intervals, and the top-level `auxiliaries`, `baselines`, `budget`, `pareto`, `verdict` and
`reasons`. `to_dict` writes them with their defaults.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskscout import rundir
from taskscout.errors import MissingResultsError

SCHEMA_VERSION = 1
Interval = tuple[float | None, float | None]


class _Reader:
    """Checks for one recommendation.json: each failure names the key, what it must be and what it got."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, key: str, expect: str, got: Any) -> MissingResultsError:
        return MissingResultsError(f"{key} in {self.where} must be {expect}. Got {got!r} instead; "
                                   "rebuild it with `taskscout search` (it resumes) or `taskscout report --rebuild`")

    def mapping(self, value: Any, key: str, keys: Sequence[str], required: Sequence[str] = ()) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(key, "a mapping", value)
        unknown = [k for k in value if k not in keys]
        if unknown:
            raise self.fail(key, f"a mapping with keys drawn from {list(keys)}", f"unknown key {unknown[0]!r}")
        missing = [k for k in required if k not in value]
        if missing:
            raise self.fail(key, f"a mapping with the keys {list(required)}", f"no {missing[0]!r}")
        return value

    def names(self, value: Any, key: str, within: Sequence[str] | None = None) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(t, str) and t for t in value):
            raise self.fail(key, "a list of task names", value)
        if within is not None and any(t not in within for t in value):
            raise self.fail(key, f"a list drawn from {list(within)}", value)
        return tuple(value)

    def number(self, value: Any, key: str) -> float | None:
        ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))
        if not ok:
            raise self.fail(key, "a finite number or null", value)
        return value

    def interval(self, value: Any, key: str) -> Interval | None:
        if value is None:
            return None
        if not isinstance(value, list) or len(value) != 2:
            raise self.fail(key, "[low, high] or null", value)
        return (self.number(value[0], key), self.number(value[1], key))

    def integer(self, value: Any, key: str, low: int = 0, optional: bool = False) -> int | None:
        if optional and value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise self.fail(key, f"an int >= {low}" + (" or null" if optional else ""), value)
        return value

    def text(self, value: Any, key: str, optional: bool = False) -> str | None:
        if optional and value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(key, "a string" + (" or null" if optional else ""), value)
        return value

    def per_task(self, value: Any, key: str, tasks: Sequence[str], read: Callable[[Any, str], Any]) -> dict[str, Any]:
        if not isinstance(value, Mapping) or any(t not in tasks for t in value):
            raise self.fail(key, f"a mapping from tasks {list(tasks)}", value)
        return {t: read(v, f"{key}.{t}") for t, v in value.items()}


def _interval_out(ci: Interval | None) -> list[float | None] | None:
    return None if ci is None else list(ci)


@dataclass(frozen=True)
class GroupAuxiliary:
    """An auxiliary task a recommended network trains, once, for the served tasks that gain from it."""

    name: str
    kind: str | None
    serves: tuple[str, ...]
    expected_gain: Mapping[str, float | None]  # served task -> gain
    ci: Mapping[str, Interval | None]          # served task -> 95% interval of the gain

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "serves": list(self.serves),
                "expected_gain": dict(self.expected_gain), "ci": {t: _interval_out(c) for t, c in self.ci.items()}}


@dataclass(frozen=True)
class AuxiliaryChoice:
    """An auxiliary with a real gain for one main task (recommendation.json's `auxiliaries`)."""

    name: str
    kind: str | None
    expected_gain: float | None
    ci: Interval | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "expected_gain": self.expected_gain, "ci": _interval_out(self.ci)}


@dataclass(frozen=True)
class Group:
    """One recommended network: its tasks, those it serves, where it branches and its auxiliaries."""

    tasks: tuple[str, ...]
    serves: tuple[str, ...]
    branch_layer: int                       # shared trunk layers: 0 = nothing shared, L = all
    branch_source: str | None = None        # depth | measured | rsa | default
    score_source: str | None = None         # single | measured | surrogate | hoa (the weakest member's)
    sources: Mapping[str, str | None] = field(default_factory=dict)
    aux: tuple[GroupAuxiliary, ...] = ()
    expected_gain: Mapping[str, float | None] = field(default_factory=dict)
    ci: Mapping[str, Interval | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tasks": list(self.tasks), "serves": list(self.serves), "branch_layer": self.branch_layer,
            "branch_source": self.branch_source, "score_source": self.score_source, "sources": dict(self.sources),
            "aux": [a.to_dict() for a in self.aux], "expected_gain": dict(self.expected_gain),
            "ci": {t: _interval_out(c) for t, c in self.ci.items()},
        }


@dataclass(frozen=True)
class FrontPoint:
    """The best grouping within a budget of networks (a point of the Pareto front)."""

    networks: int
    used: int | None
    total_normalised_loss: float | None
    ci: Interval | None
    groups: tuple[tuple[str, ...], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"networks": self.networks, "used": self.used, "total_normalised_loss": self.total_normalised_loss,
                "ci": _interval_out(self.ci), "groups": [list(g) for g in self.groups]}


# ---------------------------------------------------------------- the selection block
# The selection stage's result (grouping.selection computes it, search.selection writes it). The
# dataclasses live here, in a module that imports neither numpy nor scipy, so that the report and
# export read a typed block without loading the grouping stage's libraries.

SEPARATE, TOGETHER, RECOMMENDED = "all-separate", "all-together", "recommended"
BASELINES = (SEPARATE, TOGETHER)
RULES = ("total", "per-task")
ROWS = ("crossfit", "carve")

Triple = tuple[float, float, float]  # mean, 95% low, 95% high (NaN where there is none)


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
        return cls(_strs(d["tasks"]), _strs(d["serves"]), _int(d["branch_layer"]), _strs(d.get("aux", ())))


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
        return cls(_str(d["name"]), tuple(Network.from_dict(n) for n in d["networks"]), _str(d.get("origin", "")),
                   _strs(d.get("aliases", ())))


@dataclass(frozen=True)
class CandidateScore:
    """A candidate's held-out total normalised loss, and its paired difference to the better baseline."""

    candidate: Candidate
    totals: Mapping[int, float]  # seed -> total normalised loss
    total: Triple  # mean over seeds and its 95% interval
    vs_best_baseline: Triple  # total minus the better baseline's total, per seed: mean and interval

    def to_dict(self) -> dict[str, Any]:
        return {**self.candidate.to_dict(), "totals": {str(s): _out(v) for s, v in self.totals.items()},
                "total": _triple_out(self.total), "vs_best_baseline": _triple_out(self.vs_best_baseline)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CandidateScore:
        return cls(Candidate.from_dict(d), {int(s): _num(v) for s, v in d["totals"].items()},
                   _triple(d["total"]), _triple(d["vs_best_baseline"]))


@dataclass(frozen=True)
class Selection:
    """The selection stage's result: the `selection` block of recommendation.json (and selection.json)."""

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
    budget_fraction: float = math.nan  # the stage's training seconds over the single and pairs phases'
    compute_fraction: float = math.nan  # the same in training row-epochs (rows read x epochs run)

    def __post_init__(self) -> None:
        if self.rule not in RULES or self.rows not in ROWS:
            raise ValueError(f"rule must be one of {list(RULES)} and rows one of {list(ROWS)}; "
                             f"got {self.rule!r}, {self.rows!r}")
        if not any(self.chosen in s.candidate.names for s in self.scores):
            raise ValueError(f"the chosen candidate {self.chosen!r} is not among the candidates")

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
            "best_baseline": self.best_baseline, "gain_vs_separate": _triple_out(self.gain_vs_separate),
            "gain_vs_together": _triple_out(self.gain_vs_together), "reasons": list(self.reasons),
            "models": self.models, "budget_fraction": _out(self.budget_fraction),
            "compute_fraction": _out(self.compute_fraction),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Selection:
        """Parse a selection block; ValueError (or KeyError, TypeError) when it is not one."""
        unknown = sorted(set(d) - set(_SELECTION_KEYS))
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r}")
        return cls(
            rule=_str(d["rule"]), rows=_str(d["rows"]), rows_detail=_str(d.get("rows_detail", "")),
            seeds=tuple(_int(s) for s in d["seeds"]),
            scores=tuple(CandidateScore.from_dict(c) for c in d["candidates"]), chosen=_str(d["chosen"]),
            best_baseline=_str(d["best_baseline"]), gain_vs_separate=_triple(d["gain_vs_separate"]),
            gain_vs_together=_triple(d["gain_vs_together"]), reasons=_strs(d.get("reasons", ())),
            models=_int(d.get("models", 0)), budget_fraction=_num(d.get("budget_fraction")),
            compute_fraction=_num(d.get("compute_fraction")),
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


_SELECTION_KEYS = ("rule", "rows", "rows_detail", "seeds", "candidates", "chosen", "best_baseline",
                   "gain_vs_separate", "gain_vs_together", "reasons", "models", "budget_fraction",
                   "compute_fraction")


def _num(v: Any) -> float:
    if v is None:
        return math.nan
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"expected a number or null, got {v!r}")
    return float(v)


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"expected an int, got {v!r}")
    return v


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError(f"expected a string, got {v!r}")
    return v


def _strs(v: Any) -> tuple[str, ...]:
    if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)):
        raise TypeError(f"expected a list of strings, got {v!r}")
    return tuple(_str(x) for x in v)


def _out(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _triple(v: Any) -> Triple:
    if isinstance(v, (str, bytes)) or len(v) != 3:
        raise ValueError(f"expected [mean, low, high], got {v!r}")
    a, b, c = (_num(x) for x in v)
    return (a, b, c)


def _triple_out(t: Triple) -> list[float | None]:
    return [_out(x) for x in t]


def _pct(x: float) -> str:
    return f"{100 * x:+.1f}%" if math.isfinite(x) else "n/a"


def _iv(t: Triple) -> str:
    return f"[{_pct(t[1])}, {_pct(t[2])}]" if math.isfinite(t[1]) and math.isfinite(t[2]) else "(no interval)"


@dataclass(frozen=True)
class Recommendation:
    """Which networks to train (recommendation.json, schema_version 1; DESIGN.md).

    Example:
        >>> rec = Recommendation.from_dict({
        ...     "schema_version": 1, "tasks": ["a", "b", "c"],
        ...     "groups": [{"tasks": ["a", "b"], "branch_layer": 2}, {"tasks": ["c"], "branch_layer": 2}],
        ...     "assignment": {"a": 0, "b": 0, "c": 1}})
        >>> rec.served_by("b").tasks
        ('a', 'b')
        >>> rec.groups[1].serves
        ('c',)
        >>> Recommendation.from_dict(rec.to_dict()) == rec
        True
    """

    tasks: tuple[str, ...]
    groups: tuple[Group, ...]
    assignment: Mapping[str, int]                          # task -> index of the group serving it
    auxiliaries: Mapping[str, tuple[AuxiliaryChoice, ...]] = field(default_factory=dict)
    baselines: Mapping[str, Mapping[str, float | None]] = field(default_factory=dict)  # single_task_loss, all_together_loss
    networks: int | None = None                            # budget.networks: networks chosen
    requested: int | None = None                           # budget.requested: the study's budget, if any
    pareto: tuple[FrontPoint, ...] = ()
    verdict: str = ""
    reasons: tuple[str, ...] = ()
    # The final selection among whole groupings (the selection stage), when the search ran it.
    selection: Selection | None = None

    def served_by(self, task: str) -> Group:
        """The group whose network serves `task`."""
        return self.groups[self.assignment[task]]

    @property
    def provisional(self) -> bool:
        """True when the search stopped at its time limit before finishing its phases."""
        return self.verdict.startswith("Provisional: ")

    def to_dict(self) -> dict[str, Any]:
        """The recommendation.json object."""
        out = {
            "schema_version": SCHEMA_VERSION,
            "tasks": list(self.tasks),
            "groups": [g.to_dict() for g in self.groups],
            "assignment": dict(self.assignment),
            "auxiliaries": {t: [a.to_dict() for a in lst] for t, lst in self.auxiliaries.items()},
            "baselines": {k: dict(v) for k, v in self.baselines.items()},
            "budget": {"networks": self.networks, "requested": self.requested},
            "pareto": [p.to_dict() for p in self.pareto],
            "verdict": self.verdict,
            "reasons": list(self.reasons),
        }
        if self.selection is not None:
            out["selection"] = self.selection.to_dict()
        return out

    @classmethod
    def from_dict(cls, raw: Any, *, where: str = "recommendation.json") -> Recommendation:
        """Parse and check a recommendation.json object; a MissingResultsError names the first problem."""
        r = _Reader(where)
        top = r.mapping(raw, "the recommendation", _TOP_KEYS, required=("schema_version", "tasks", "groups", "assignment"))
        if top["schema_version"] != SCHEMA_VERSION:
            raise r.fail("schema_version", f"{SCHEMA_VERSION} (the version this taskscout reads)", top["schema_version"])
        tasks = r.names(top["tasks"], "tasks")
        if not tasks or len(set(tasks)) != len(tasks):
            raise r.fail("tasks", "a non-empty list of distinct task names", top["tasks"])
        if not isinstance(top["groups"], list) or not top["groups"]:
            raise r.fail("groups", "a non-empty list of groups", top["groups"])
        assignment = r.per_task(top["assignment"], "assignment", tasks,
                                lambda v, k: r.integer(v, k, low=0))
        if set(assignment) != set(tasks) or any(k >= len(top["groups"]) for k in assignment.values()):
            raise r.fail("assignment", f"a mapping from every task {list(tasks)} to a group index "
                                       f"in [0, {len(top['groups']) - 1}]", top["assignment"])
        groups = tuple(_group(r, g, f"groups[{k}]", tasks, [t for t in tasks if assignment[t] == k])
                       for k, g in enumerate(top["groups"]))
        budget = r.mapping(top.get("budget", {}), "budget", ("networks", "requested"))
        return cls(
            tasks=tasks, groups=groups, assignment=assignment,
            auxiliaries=r.per_task(top.get("auxiliaries", {}), "auxiliaries", tasks,
                                   lambda v, k: _choices(r, v, k)),
            baselines=_baselines(r, top.get("baselines", {})),
            networks=r.integer(budget.get("networks"), "budget.networks", low=1, optional=True),
            requested=r.integer(budget.get("requested"), "budget.requested", low=1, optional=True),
            pareto=tuple(_front_point(r, p, f"pareto[{k}]", tasks) for k, p in enumerate(_list(r, top.get("pareto", []), "pareto"))),
            verdict=r.text(top.get("verdict", ""), "verdict"),
            reasons=tuple(r.text(x, f"reasons[{k}]") for k, x in enumerate(_list(r, top.get("reasons", []), "reasons"))),
            selection=_selection(r, top["selection"]) if "selection" in top else None,
        )


_TOP_KEYS = ("schema_version", "tasks", "groups", "assignment", "auxiliaries", "baselines", "budget", "pareto",
             "verdict", "reasons", "selection")
_GROUP_KEYS = ("tasks", "serves", "branch_layer", "branch_source", "score_source", "sources", "aux",
               "expected_gain", "ci")


def _selection(r: _Reader, value: Any) -> Selection:
    if not isinstance(value, Mapping):
        raise r.fail("selection", "a mapping", value)
    try:
        return Selection.from_dict(value)
    except (KeyError, TypeError, ValueError, StopIteration) as e:
        what = f"no {e.args[0]!r}" if isinstance(e, KeyError) else str(e)
        raise r.fail("selection", "the selection stage's block (rule, rows, seeds, candidates with their "
                                  "networks and totals, chosen, best_baseline, gains, reasons)", what) from None


def _list(r: _Reader, value: Any, key: str) -> list[Any]:
    if not isinstance(value, list):
        raise r.fail(key, "a list", value)
    return value


def _group(r: _Reader, raw: Any, key: str, tasks: Sequence[str], assigned: Sequence[str]) -> Group:
    g = r.mapping(raw, key, _GROUP_KEYS, required=("tasks", "branch_layer"))
    members = r.names(g["tasks"], f"{key}.tasks", within=tasks)
    if not members:
        raise r.fail(f"{key}.tasks", "a non-empty list of task names", g["tasks"])
    serves = r.names(g["serves"], f"{key}.serves", within=members) if "serves" in g else tuple(assigned)
    if set(serves) != set(assigned):
        raise r.fail(f"{key}.serves", f"the tasks the assignment gives this group {list(assigned)}", list(serves))
    if not set(assigned) <= set(members):
        raise r.fail(f"{key}.tasks", f"a list that contains the tasks assigned to it {list(assigned)}", list(members))
    return Group(
        tasks=members, serves=serves,
        branch_layer=r.integer(g["branch_layer"], f"{key}.branch_layer"),
        branch_source=r.text(g.get("branch_source"), f"{key}.branch_source", optional=True),
        score_source=r.text(g.get("score_source"), f"{key}.score_source", optional=True),
        sources=r.per_task(g.get("sources", {}), f"{key}.sources", members, lambda v, k: r.text(v, k, optional=True)),
        aux=_group_auxiliaries(r, _list(r, g.get("aux", []), f"{key}.aux"), f"{key}.aux", members),
        expected_gain=r.per_task(g.get("expected_gain", {}), f"{key}.expected_gain", members, r.number),
        ci=r.per_task(g.get("ci", {}), f"{key}.ci", members, r.interval),
    )


def _group_auxiliaries(r: _Reader, items: list[Any], key: str, members: Sequence[str]) -> tuple[GroupAuxiliary, ...]:
    """A group's auxiliaries, each listed once with the served tasks that gain from it."""
    out = []
    for k, raw in enumerate(items):
        at = f"{key}[{k}]"
        a = r.mapping(raw, at, ("name", "kind", "serves", "expected_gain", "ci"), required=("name",))
        served = r.names(a.get("serves", []), f"{at}.serves", within=members)
        out.append(GroupAuxiliary(
            name=r.text(a["name"], f"{at}.name"), kind=r.text(a.get("kind"), f"{at}.kind", optional=True),
            serves=served, expected_gain=r.per_task(a.get("expected_gain", {}), f"{at}.expected_gain", served, r.number),
            ci=r.per_task(a.get("ci", {}), f"{at}.ci", served, r.interval),
        ))
    if len({a.name for a in out}) != len(out):
        raise r.fail(key, "a list naming each auxiliary once", [a.name for a in out])
    return tuple(out)


def _choices(r: _Reader, value: Any, key: str) -> tuple[AuxiliaryChoice, ...]:
    out = []
    for k, raw in enumerate(_list(r, value, key)):
        at = f"{key}[{k}]"
        a = r.mapping(raw, at, ("name", "kind", "expected_gain", "ci"), required=("name",))
        out.append(AuxiliaryChoice(name=r.text(a["name"], f"{at}.name"), kind=r.text(a.get("kind"), f"{at}.kind", optional=True),
                                   expected_gain=r.number(a.get("expected_gain"), f"{at}.expected_gain"),
                                   ci=r.interval(a.get("ci"), f"{at}.ci")))
    return tuple(out)


def _baselines(r: _Reader, value: Any) -> dict[str, dict[str, float | None]]:
    b = r.mapping(value, "baselines", ("single_task_loss", "all_together_loss"))
    out = {}
    for k in ("single_task_loss", "all_together_loss"):
        losses = b.get(k, {})
        if not isinstance(losses, Mapping) or not all(isinstance(t, str) for t in losses):
            raise r.fail(f"baselines.{k}", "a mapping from task names to losses", losses)
        out[k] = {t: r.number(v, f"baselines.{k}.{t}") for t, v in losses.items()}
    return out


def _front_point(r: _Reader, raw: Any, key: str, tasks: Sequence[str]) -> FrontPoint:
    p = r.mapping(raw, key, ("networks", "used", "total_normalised_loss", "ci", "groups"), required=("networks",))
    return FrontPoint(
        networks=r.integer(p["networks"], f"{key}.networks", low=1),
        used=r.integer(p.get("used"), f"{key}.used", low=1, optional=True),
        total_normalised_loss=r.number(p.get("total_normalised_loss"), f"{key}.total_normalised_loss"),
        ci=r.interval(p.get("ci"), f"{key}.ci"),
        groups=tuple(r.names(g, f"{key}.groups[{k}]") for k, g in enumerate(_list(r, p.get("groups", []), f"{key}.groups"))),
    )


def read_recommendation(run_dir: str | Path) -> Recommendation:
    """The recommendation of a run directory, parsed and checked (a MissingResultsError when it
    is absent or malformed)."""
    d = rundir.require(run_dir, rundir.RECOMMENDATION)
    path = d / rundir.RECOMMENDATION
    try:
        raw = rundir.read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MissingResultsError(f"{path} is not valid JSON ({e}); rebuild it with `taskscout search` (it resumes)") from None
    return Recommendation.from_dict(raw, where=str(path))
