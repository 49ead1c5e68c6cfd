"""The selection stage through `run_search`, with a fake trainer of known losses.

The fake's validation losses (what the search measures gains on) favour the planted pairs; its
held-out losses (the 'test' split of the selection stage's problems) are set per case, so the
selection stage must overrule the search when the held-out rows say otherwise.
"""

import math

import numpy as np
import pandas as pd
import pytest

from taskscout import rundir
from taskscout.data import build_dataset
from taskscout.search import run_search, summary_text
from taskscout.search.plan import SEED_STRIDE
from taskscout.search.selection import (
    CROSSFIT_FOLDS,
    carved_rows,
    crossfit_folds,
    fit_budget,
    selection_seeds,
)
from taskscout.spec import resolve_spec
from taskscout.training.plans import ModelResult

TASKS = ["g0_t0", "g0_t1", "g1_t0", "g1_t1"]
PAIRS = (("g0_t0", "g0_t1"), ("g1_t0", "g1_t1"))

# held-out normalised loss of a task (over the task alone) in: (its planted pair, all four together)
CASES = {
    "together wins": (0.95, 0.80, "all-together"),
    "separate wins": (1.10, 1.20, "all-separate"),
    "a grouping wins": (0.70, 0.90, "recommended"),
    "a tie goes to the simpler": (0.90, 0.90, "all-together"),
}


class KnownLosses:
    """Loss of task k alone: 1 + 0.1 k. Validation: x0.7 in its planted pair, x1.0 with all four,
    x1.1 with the other group's task. Held-out ('test'): x`pair` in its pair, x`together` with all
    four. Each network gets a seed-dependent jitter of -2%..+2% (zero on average over five
    consecutive seeds; opposite signs for pairs and for all-together), so intervals have a width
    and a tie stays a tie."""

    def __init__(self, pair: float, together: float) -> None:
        self.pair, self.together = pair, together
        self.calls: list[tuple[list[str], np.ndarray, np.ndarray, tuple[str, ...]]] = []

    def factor(self, names: list[str], name: str, split: str) -> float:
        if len(names) == 1:
            return 1.0
        if len(names) == len(TASKS):
            return 1.0 if split == "val" else self.together
        if names[0].split("_")[0] == names[1].split("_")[0]:
            return 0.7 if split == "val" else self.pair
        return 1.1

    def __call__(self, X, Y, heads, split, plans, *, model, training, device, progress, stack_size=64,
                 eval_splits=("val",), **kw):
        self.calls.append(([p.key for p in plans], np.asarray(X).copy(), np.asarray(split).copy(), tuple(eval_splits)))
        out = []
        for p in plans:
            names = [heads[t].name for t in p.targets]
            s = p.seed % SEED_STRIDE
            jitter = 0.01 * (s % 5 - 2) * (1 if len(names) == len(TASKS) else -1) if len(names) > 1 else 0.0
            loss = {sp: {t: (1 + 0.1 * t) * self.factor(names, heads[t].name, sp) * (1 + jitter) for t in p.targets}
                    for sp in eval_splits}
            curves = pd.DataFrame([(heads[t].name, 1, "val", loss["val"][t]) for t in p.targets],
                                  columns=["task", "epoch", "split", "loss"])
            out.append(ModelResult(plan=p, best_epoch=1, epochs_run=1, loss=loss,
                                   metric={sp: {t: 0.5 for t in p.targets} for sp in eval_splits},
                                   seconds=0.01, curves=curves, state=None))
            progress(1)
        return out


def make_spec(out, rows="crossfit", rule="total"):
    return resolve_spec("builtin:planted", {
        "tasks": TASKS, "out": str(out),
        "data_options": {"n_rows": 240, "n_inputs": 8, "groups": 2, "tasks_per_group": 2, "label_fraction": 0.5},
        "training": {"seeds": 3, "epochs": 1}, "model": {"depth": 2, "width": 8},
        "search": {"phases": ["single", "pairs", "selection"], "selection_rows": rows, "selection_rule": rule},
    })


@pytest.mark.parametrize("case", list(CASES))
def test_the_rule_chooses_right(tmp_path, case):
    pair, together, expected = CASES[case]
    run_search(make_spec(tmp_path / "run"), train_fn=KnownLosses(pair, together))
    rec = rundir.read_json(tmp_path / "run" / rundir.RECOMMENDATION)
    sel = rec["selection"]
    assert sel["chosen"] == expected
    served = {tuple(g["tasks"]) for g in rec["groups"]}
    assert served == {"all-together": {tuple(TASKS)}, "all-separate": {(t,) for t in TASKS},
                      "recommended": set(PAIRS)}[expected]
    names = [c["name"] for c in sel["candidates"]]
    assert {"all-separate", "all-together", "recommended"} <= set(names)
    assert sel["seeds"] == [20_000, 20_001, 20_002, 20_003, 20_004]  # fresh: never the search's 0..2
    sep = next(c for c in sel["candidates"] if c["name"] == "all-separate")
    assert sep["total"][0] == pytest.approx(4.0)  # every task over itself
    tog = next(c for c in sel["candidates"] if c["name"] == "all-together")
    assert tog["total"][0] == pytest.approx(4 * together)  # the jitter averages out over five seeds


def test_a_clear_gain_over_the_simpler_candidate_is_needed(tmp_path):
    """The pairs are 5% better than all-together on the held-out total with a tight interval: chosen."""
    run_search(make_spec(tmp_path / "run"), train_fn=KnownLosses(0.80, 0.85))
    sel = rundir.read_json(tmp_path / "run" / rundir.RECOMMENDATION)["selection"]
    assert sel["chosen"] == "recommended"
    assert sel["best_baseline"] == "all-together"
    assert sel["gain_vs_together"][0] == pytest.approx(1 - 0.80 / 0.85, abs=0.01)
    assert sel["gain_vs_together"][1] > 0


def test_per_task_rule_keeps_the_solvers_choice(tmp_path):
    run_search(make_spec(tmp_path / "run", rule="per-task"), train_fn=KnownLosses(0.95, 0.80))
    rec = rundir.read_json(tmp_path / "run" / rundir.RECOMMENDATION)
    assert rec["selection"]["chosen"] == "recommended"
    assert {tuple(g["tasks"]) for g in rec["groups"]} == set(PAIRS)
    assert any("would choose all-together" in r for r in rec["reasons"])


def _row_ids(spec):
    ds = build_dataset(spec)
    return {row.tobytes(): i for i, row in enumerate(np.asarray(ds.X, dtype=float))}, ds.split


@pytest.mark.parametrize("rows", ["crossfit", "carve"])
def test_selection_rows_are_never_read_by_earlier_phases(tmp_path, rows):
    spec = make_spec(tmp_path / "run", rows=rows)
    fake = KnownLosses(0.9, 0.9)
    run_search(spec, train_fn=fake)
    ids, split = _row_ids(spec)

    def index(X, codes):
        return {ids[np.asarray(x, dtype=float).tobytes()] for x in X[codes]}

    earlier = [c for c in fake.calls if not c[0][0].startswith('["selection')]
    later = [c for c in fake.calls if c[0][0].startswith('["selection')]
    assert earlier and later
    held = set().union(*(index(X, s == 2) for _, X, s, _ in later))
    assert held and not held & set(np.flatnonzero(split == 2))  # never the test split
    assert all(ev == ("val",) for *_, ev in earlier)  # the earlier phases evaluate nothing but 'val'
    measured = set().union(*(index(X, s == 1) for _, X, s, _ in earlier))  # gains and early stopping
    assert not held & measured
    if rows == "carve":
        read = set().union(*(index(X, s != 2) for _, X, s, _ in earlier))
        assert not held & read  # not even trained on
        assert held == set(np.flatnonzero(carved_rows(split, spec.seed)))
    else:
        assert held <= set(np.flatnonzero(split == 0))


def test_crossfit_folds_and_seeds():
    split = np.array([0] * 50 + [1] * 10 + [2] * 10)
    folds = crossfit_folds(split, 0)
    assert set(folds[:50]) == set(range(CROSSFIT_FOLDS)) and (folds[50:] == -1).all()
    assert np.bincount(folds[:50]).tolist() == [10] * CROSSFIT_FOLDS
    assert set(selection_seeds(0, 10)).isdisjoint(range(100)) and selection_seeds(1, 2) == (20_100, 20_101)


def test_budget_drops_optional_candidates_first():
    from taskscout.grouping import Candidate, Network

    def cand(name, groups):
        return Candidate(name, tuple(Network(tuple(g), tuple(g), 2) for g in groups), "")

    sep = cand("all-separate", [[t] for t in TASKS])
    tog = cand("all-together", [TASKS])
    rec = cand("recommended", PAIRS)
    extra = cand("subset:x", [["g0_t0", "g0_t1", "g1_t0"], ["g1_t1"]])

    def cost(net):  # a network's compute per seed: 10 per task it trains
        return 10.0 * len(net.tasks)

    # one seed: separate 40, together 40, pairs 40, the subset's network of three 30 (its g1_t1 is separate's)
    kept, seeds, notes = fit_budget([tog, rec, extra, sep], measured=2000, cost=cost)
    assert [c.name for c in kept] == ["all-together", "recommended", "all-separate"]
    assert seeds == 5 and any("left out" in n for n in notes)  # 0.3 * 2000 // 120 = 5 without the subset
    kept, seeds, notes = fit_budget([tog, rec, sep], measured=600, cost=cost)
    assert seeds == 5 and any("more than the 30% budget" in n for n in notes)  # the minimum stands, said so
    kept, seeds, _ = fit_budget([tog, rec, extra, sep], measured=100_000, cost=cost)
    assert len(kept) == 4 and seeds == 10  # capped


def test_the_folded_problem_trains_each_seed_without_its_fold_and_scores_it_there():
    from taskscout.data import Head
    from taskscout.search.plan import PlannedModel
    from taskscout.search.problem import SearchProblem
    from taskscout.search.selection import folded_problem

    split = np.array([0] * 20 + [1] * 5 + [2] * 5)
    Y = np.arange(60, dtype=float).reshape(30, 2)
    Y[3, 1] = np.nan
    problem = SearchProblem(X=np.arange(30, dtype=float)[:, None], Y=Y, split=split,
                            heads=(Head("a", "regression"), Head("b", "regression")), main=("a", "b"))
    seeds = selection_seeds(0, 7)  # folds 0..4, then 0 and 1 again
    folded = folded_problem(problem, split, 0, seeds)
    folds = crossfit_folds(split, 0)
    assert folded.Y.shape == (25 + 20, 2 * CROSSFIT_FOLDS) and len(folded.heads) == 2 * CROSSFIT_FOLDS
    assert (folded.split == np.array([0] * 20 + [1] * 5 + [2] * 20)).all()  # no test row of the data
    for j, seed in enumerate(seeds):
        plan = folded.model_plan(PlannedModel("selection-crossfit", ("b",), (), seed, 1))
        (col,) = plan.targets
        assert plan.main == plan.targets and folded.heads[col].name == "b"
        y = folded.Y[:, col]
        k = j % CROSSFIT_FOLDS
        trained = {int(x) for x in folded.X[:20][np.isfinite(y[:20]), 0]}
        scored = {int(x) for x in folded.X[25:][np.isfinite(y[25:]), 0]}
        assert trained == set(np.flatnonzero((folds != k) & (split == 0))) - {3}
        assert scored == set(np.flatnonzero(folds == k)) - {3}
        assert np.isfinite(y[20:25]).all()  # every model stops on the whole validation split


def test_summary_shows_candidates_side_by_side(tmp_path):
    result = run_search(make_spec(tmp_path / "run"), train_fn=KnownLosses(0.95, 0.80))
    text = summary_text(result)
    line = next(x for x in text.splitlines() if x.startswith("selection ("))
    assert "*all-together (1 net) 3.20" in line and "all-separate (9 net)" not in line
    assert "all-separate (4 net) 4.00" in line
    verdict = next(x for x in text.splitlines() if x.startswith("selection verdict"))
    assert "better baseline, all-together" in verdict
    written = rundir.read_json(tmp_path / "run" / rundir.SELECTION)
    assert math.isfinite(written["budget_fraction"]) and written["compute_fraction"] > 0
    again = run_search(make_spec(tmp_path / "run"), train_fn=KnownLosses(0.95, 0.80))  # resumes: all reused
    assert again.trained == 0
    stage = next(p for p in again.phases if p.phase == "selection")
    assert (stage.planned, stage.reused, stage.trained) == (5 * 7, 5 * 7, 0)  # 4 + 1 + 2 networks, 5 seeds
    assert rundir.read_json(tmp_path / "run" / rundir.RECOMMENDATION)["selection"]["chosen"] == "all-together"
