"""Group scores: a task's normalised loss in a group (measured, surrogate or HOA) and FDR control."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from taskscout import rundir
from taskscout.errors import SpecError
from taskscout.grouping._tables import _key, _num, _require_columns, _split_group
from taskscout.grouping.graph import _method_order

SCORE_SOURCES = ("measured", "surrogate", "sampled", "hoa", "single")  # best evidence first


# ---------------------------------------------------------------- group scores


@dataclass(frozen=True)
class TaskScore:
    """A task's normalised loss in a group: L(in group) / L(alone), with a 95% interval."""

    norm_loss: float
    ci_low: float
    ci_high: float
    source: str  # measured | surrogate | hoa | single
    n_seeds: int = 0
    # For measured scores: whether the gain survives the false-discovery-rate control over every
    # measured comparison (`control_false_discoveries`); None = judge by the interval alone.
    discovered: bool | None = None

    @property
    def real(self) -> bool:
        """The task really gains: the whole interval lies below 1 and, for a measured score, the
        gain is a discovery among all the measured comparisons."""
        return bool(self.ci_high < 1.0) and self.discovered is not False

    def p_value(self) -> float:
        """Two-sided p-value of "no gain" (norm_loss = 1) from the score's 95% Student-t interval
        over its seeds; NaN with fewer than 2 seeds or no finite interval."""
        if self.n_seeds < 2 or not all(math.isfinite(v) for v in (self.norm_loss, self.ci_high)):
            return math.nan
        from scipy.stats import t as student_t

        se = (self.ci_high - self.norm_loss) / float(student_t.ppf(0.975, self.n_seeds - 1))
        if se <= 0:
            return 0.0 if self.norm_loss != 1.0 else 1.0
        return float(2 * student_t.sf(abs(1.0 - self.norm_loss) / se, self.n_seeds - 1))

    @property
    def gain(self) -> float:
        return 1.0 - self.norm_loss

    @property
    def gain_ci(self) -> tuple[float, float]:
        return (1.0 - self.ci_high, 1.0 - self.ci_low)


ALONE = TaskScore(1.0, 1.0, 1.0, "single", 0)


@dataclass(frozen=True)
class GroupScorer:
    """Scores any group for any of its tasks from the measured tables (see module docstring).

    Build it with `GroupScorer.from_tables`; call it as `scorer(group, task)`.
    """

    tasks: tuple[str, ...]
    group_rows: Mapping[tuple[tuple[str, ...], str], TaskScore] = field(default_factory=dict)
    pair_rows: Mapping[tuple[str, str], TaskScore] = field(default_factory=dict)  # (partner, task)
    # measured gains of auxiliaries (sources that are not tasks) on tasks: (auxiliary, task)
    aux_rows: Mapping[tuple[str, str], TaskScore] = field(default_factory=dict)
    # scores on demand for groups no row holds (the subsets surrogate, `subset_scores.SurrogateScores`):
    # consulted after the measured rows and before HOA, so no table of every group is ever built
    predict: ScoreFn | None = None

    @classmethod
    def from_tables(
        cls,
        *,
        tasks: Sequence[str],
        group_scores: pd.DataFrame | None = None,
        affinity: pd.DataFrame | None = None,
        fdr: float = 1.0,
        predict: ScoreFn | None = None,
    ) -> GroupScorer:
        """Index group_scores.csv rows, the measured (else surrogate) pairwise gains and the
        auxiliaries' measured gains; with `fdr` < 1, a measured gain (auxiliaries' included) is
        real only as a discovery at that false-discovery rate (`control_false_discoveries`).
        `predict(group, task)` scores, on demand, the groups none of those rows holds."""
        tasks = tuple(tasks)
        main = set(tasks)
        group_rows: dict[tuple[tuple[str, ...], str], TaskScore] = {}
        if group_scores is not None and len(group_scores):
            _require_columns(group_scores, rundir.GROUP_SCORE_COLUMNS, "group scores")
            records = sorted(
                group_scores.to_dict("records"), key=lambda r: _method_order(str(r["source"]))
            )
            for r in records:
                members = _split_group(r["group"])
                task = str(r["task"])
                value = _num(r["norm_loss"])
                if not set(members) <= main or task not in members or not math.isfinite(value):
                    continue
                key = (_key(members, tasks), task)
                n = _num(r["n_seeds"])
                source = str(r["source"]) if str(r["source"]) in ("measured", "surrogate") else "surrogate"
                group_rows.setdefault(
                    key, TaskScore(value, _num(r["ci_low"]), _num(r["ci_high"]), source, int(n) if math.isfinite(n) else 0)
                )
        pair_rows: dict[tuple[str, str], TaskScore] = {}
        aux_rows: dict[tuple[str, str], TaskScore] = {}
        if affinity is not None and len(affinity):
            _require_columns(affinity, rundir.AFFINITY_COLUMNS, "affinity")
            usable = affinity[affinity["method"].isin(("measured", "surrogate", "sampled"))]
            records = sorted(usable.to_dict("records"), key=lambda r: _method_order(str(r["method"])))
            for r in records:
                s, t = str(r["source"]), str(r["target"])
                gain = _num(r["gain"])
                if s == t or t not in main or not math.isfinite(gain):
                    continue
                n = _num(r["n_seeds"])
                score = TaskScore(1.0 - gain, 1.0 - _num(r["ci_high"]), 1.0 - _num(r["ci_low"]), str(r["method"]),
                                  int(n) if math.isfinite(n) else 0)
                if s in main:
                    pair_rows.setdefault((s, t), score)
                elif score.source == "measured":
                    aux_rows.setdefault((s, t), score)
        if fdr < 1.0:
            group_rows, pair_rows, aux_rows = control_false_discoveries(group_rows, pair_rows, tasks, level=fdr,
                                                                        aux_rows=aux_rows)
        return cls(tasks=tasks, group_rows=group_rows, pair_rows=pair_rows, aux_rows=aux_rows, predict=predict)

    def _pair(self, partner: str, task: str) -> TaskScore | None:
        key = (_key((partner, task), self.tasks), task)
        row = self.group_rows.get(key)
        aff = self.pair_rows.get((partner, task))
        if row is None and self.predict is not None and (aff is None or aff.source != "measured"):
            row = self.predict(key[0], task)
        if row is not None and (row.source == "measured" or aff is None or aff.source != "measured"):
            return row
        return aff

    def __call__(self, group: Iterable[str], task: str) -> TaskScore | None:
        """`task`'s normalised loss in `group`, or None when nothing measured supports a score."""
        members = _key(group, self.tasks)
        if task not in members:
            raise SpecError(f"task '{task}' is not in the group {list(members)}")
        if len(members) == 1:
            return ALONE
        if len(members) == 2:
            return self._pair(members[0] if members[1] == task else members[1], task)
        row = self.group_rows.get((members, task))
        if row is None and self.predict is not None:
            row = self.predict(members, task)
        if row is not None:
            return row
        partners = [self._pair(j, task) for j in members if j != task]
        if any(p is None for p in partners):
            return None
        k = len(partners)
        return TaskScore(
            sum(p.norm_loss for p in partners) / k,
            sum(p.ci_low for p in partners) / k,
            sum(p.ci_high for p in partners) / k,
            "hoa",
            min(p.n_seeds for p in partners),
        )


ScoreFn = Callable[[Sequence[str], str], "TaskScore | None"]

def control_false_discoveries(
    group_rows: Mapping[tuple[tuple[str, ...], str], TaskScore],
    pair_rows: Mapping[tuple[str, str], TaskScore],
    tasks: Sequence[str],
    *,
    level: float,
    aux_rows: Mapping[tuple[str, str], TaskScore] | None = None,
) -> tuple[dict[tuple[tuple[str, ...], str], TaskScore], dict[tuple[str, str], TaskScore],
           dict[tuple[str, str], TaskScore]]:
    """Mark which measured gains are discoveries under Benjamini-Hochberg at false-discovery rate
    `level` (the expected share of false "real gains" among the measured ones called real).

    The family is every measured (group, task) comparison with at least 2 seeds, a pair counted
    once whether it comes from group_scores or affinity, and every measured gain of an auxiliary
    on a task (`aux_rows`, keyed (auxiliary, task)). A search compares many groups and keeps
    the best; judged one at a time at 95%, about 1 in 20 comparisons without any real gain looks
    real (on 14 yeast labels: 182 directed pairs, so ~9 expected by chance). With a single
    comparison and level 0.05 the rule is the 95% interval rule unchanged. Off by default
    (`search.fdr` = 1): with 3 seeds per comparison the t intervals are so wide that at 0.05 it
    also drops most planted groups (measured: README, "Multiple comparisons").
    """
    family: dict[tuple[tuple[str, ...], str], float] = {}
    for (members, task), score in group_rows.items():
        if score.source == "measured":
            family[(members, task)] = score.p_value()
    for (partner, task), score in pair_rows.items():
        if score.source == "measured":
            family.setdefault((_key((partner, task), tasks), task), score.p_value())
    aux_rows = dict(aux_rows or {})
    for (aux, task), score in aux_rows.items():  # an auxiliary is no task: its key is no group's
        family[((aux,), task)] = score.p_value()
    tested = sorted((p, key) for key, p in family.items() if math.isfinite(p))
    m = len(tested)
    cut = max((i + 1 for i, (p, _) in enumerate(tested) if p <= level * (i + 1) / m), default=0)
    found = {key for _, key in tested[:cut]}

    def mark(key: tuple[tuple[str, ...], str], score: TaskScore) -> TaskScore:
        if score.source != "measured" or key not in family:
            return score
        return TaskScore(score.norm_loss, score.ci_low, score.ci_high, score.source, score.n_seeds, key in found)

    groups = {key: mark(key, s) for key, s in group_rows.items()}
    pairs = {(j, t): mark((_key((j, t), tasks), t), s) for (j, t), s in pair_rows.items()}
    auxes = {(a, t): mark(((a,), t), s) for (a, t), s in aux_rows.items()}
    return groups, pairs, auxes
