"""The subsets phase: valid Optuna proposals, pruning that stops bad subsets, shadow mode's account."""

from __future__ import annotations

import dataclasses

import numpy as np
import optuna
import pandas as pd
import pytest

from taskscout.affinity import AffinityProblem
from taskscout.affinity.subsets import SubsetProposer, enqueue_subsets, proposer_study, run_subsets
from taskscout.affinity.surrogate import fit_surrogate
from taskscout.data import TRAIN, VAL, Head
from taskscout.errors import SpecError
from taskscout.spec import TrainingSettings
from taskscout.training import ModelResult

TASKS = ("a", "b", "c", "d", "e", "f")
EPOCHS = 12
BAD = {"e", "f"}  # a subset holding e or f is worse for its tasks than training them alone


def planted_norm_loss(task: str, subset: set[str]) -> float:
    """Final normalised loss of `task` in `subset`: partners help, e and f hurt."""
    hurt = 0.25 * len((subset & BAD) - {task})
    help_ = 0.04 * len(subset - BAD - {task})
    return 1.0 + hurt - help_


def fake_trainer(calls: list):
    """Stands in for training.train_models: loss curves from the planted rule, honours on_epoch."""

    def train(X, Y, heads, split, plans, *, on_epoch=None, **_):
        calls.append(len(plans))
        names = [h.name for h in heads]
        running = np.ones(len(plans), bool)
        ran = np.zeros(len(plans), int)
        final = [{t: planted_norm_loss(names[t], {names[x] for x in p.targets}) for t in p.main} for p in plans]
        for epoch in range(1, EPOCHS + 1):
            ran[running] = epoch
            curve = 1.0 + 2.0 / epoch  # every model converges the same way to its final loss
            vals = np.array([sum(final[k].values()) * curve if running[k] else np.nan for k in range(len(plans))])
            if on_epoch is not None:
                stop = on_epoch(epoch, vals)
                if stop is not None:
                    running &= ~np.asarray(stop, bool)
        return [ModelResult(plan=p, best_epoch=int(ran[k]), epochs_run=int(ran[k]),
                            loss={"val": dict(final[k])}, metric={"val": {}}, seconds=0.01,
                            curves=pd.DataFrame(columns=["task", "epoch", "split", "loss"]), state=None,
                            pruned=bool(ran[k] < EPOCHS))
                for k, p in enumerate(plans)]

    return train


@pytest.fixture
def problem() -> AffinityProblem:
    n = 20
    heads = tuple(Head(t, "regression") for t in TASKS)
    return AffinityProblem(X=np.zeros((n, 2), np.float32), Y=np.zeros((n, len(TASKS))), heads=heads,
                           split=np.where(np.arange(n) < 15, TRAIN, VAL).astype(np.int8), main=tuple(range(len(TASKS))),
                           training=TrainingSettings(epochs=EPOCHS), seeds=(0, 1))


SINGLE = {(t, s): 1.0 for t in TASKS for s in (0, 1)}


def test_proposals_are_valid_distinct_and_keep_fixed_tasks():
    prop = SubsetProposer(proposer_study(seed=3), TASKS, fixed=("a",))
    batch = prop.propose(20)
    subsets = [s for _, s in batch]
    assert len(subsets) == 20 and len(set(subsets)) == 20
    assert all("a" in s and len(s) >= 2 for s in subsets)
    assert all(list(s) == [t for t in TASKS if t in s] for s in subsets)  # study order
    # the space of subsets with a fixed task and 2 free tasks has 2^2 - 1 valid members
    small = SubsetProposer(proposer_study(seed=0), ("a", "b", "c"), fixed=("a",))
    assert sorted(s for _, s in small.propose(10)) == [("a", "b"), ("a", "b", "c"), ("a", "c")]


def test_run_without_pruning_fits_a_surrogate_of_the_planted_rule(problem):
    calls: list = []
    run = run_subsets(problem, single=SINGLE, n_subsets=24, train_fn=fake_trainer(calls), seed=1)
    assert len(run.objectives) == 24 and set(run.objectives["state"]) == {"complete"}
    assert run.compute.models == 48  # every subset with both seeds
    anchors = pd.DataFrame([(t, t, s, 1.0) for t, s in SINGLE], columns=["group", "task", "seed", "norm_loss"])
    sur = fit_surrogate(pd.concat([anchors, run.observations]), tasks=TASKS, interactions=False)
    coef = sur.coefficients().set_index(["task", "term"])["coef"]
    assert coef[("a", "e")] == pytest.approx(0.25, abs=0.02)
    assert coef[("a", "b")] == pytest.approx(-0.04, abs=0.02)


def test_pruning_stops_bad_subsets_and_shadow_mode_counts_what_it_would_cost(problem):
    calls: list = []
    real = run_subsets(problem, single=SINGLE, n_subsets=16, stack_subsets=4, prune=True, seed=2,
                       train_fn=fake_trainer(calls))
    assert calls == [8, 8, 8, 8]  # 4 subsets x 2 seeds per stack
    pruned = real.objectives[real.objectives["state"] == "pruned"]
    assert len(pruned) >= 1 and real.pruning.skipped == len(pruned)
    # every pruned subset holds a harmful task; the first stack (the pruner's startup) is never pruned
    assert all(set(g.split("|")) & BAD for g in pruned["group"])
    assert set(pruned["trial"]).isdisjoint(set(real.objectives["trial"].nsmallest(4)))
    assert real.pruning.epochs_saved > 0 and real.pruning.would_be_chosen == -1
    assert real.compute.epochs < 16 * 2 * EPOCHS
    assert not real.observations["group"].isin(pruned["group"]).any()  # pruned subsets never reach the surrogate

    shadow = run_subsets(problem, single=SINGLE, n_subsets=16, stack_subsets=4, prune=True, shadow=True, seed=2,
                         train_fn=fake_trainer([]))
    # same proposals and decisions, but trained to the end and scored
    assert list(shadow.objectives["group"]) == list(real.objectives["group"])
    assert list(shadow.objectives["state"]) == list(real.objectives["state"])
    assert shadow.compute.epochs == 16 * 2 * EPOCHS
    assert shadow.objectives["objective"].notna().all()
    assert shadow.pruning.epochs_saved > 0
    assert shadow.pruning.would_be_chosen == 0  # the pruned subsets were never among the 3 best
    assert set(shadow.observations["group"]) == set(shadow.objectives["group"])  # test mode keeps every subset


def test_a_resumed_study_reuses_finished_subsets(problem, tmp_path):
    url = f"sqlite:///{tmp_path / 'subsets.db'}"
    first = run_subsets(problem, single=SINGLE, n_subsets=6, study=proposer_study(storage=url, seed=4),
                        train_fn=fake_trainer([]))
    calls: list = []
    again = run_subsets(problem, single=SINGLE, n_subsets=10, study=proposer_study(storage=url, seed=4),
                        train_fn=fake_trainer(calls))
    assert sum(calls) == 4 * 2  # only the 4 missing subsets are trained
    assert len(again.objectives) == 10
    assert set(first.observations["group"]) <= set(again.observations["group"])
    assert len(again.losses) > len(first.losses)
    assert optuna.load_study(study_name="subsets", storage=url).trials


def test_queued_subsets_are_trained_next_and_survive_a_resume(problem, tmp_path):
    url = f"sqlite:///{tmp_path / 'subsets.db'}"
    study = proposer_study(storage=url, seed=5)
    first = run_subsets(problem, single=SINGLE, n_subsets=3, study=study, train_fn=fake_trainer([]))
    done = set(first.objectives["group"])
    wanted = [("a", "b", "c"), ("d", "b", "a"), ("a", "b", "c")]  # any order; the repeat is queued once
    fresh = [g for g in ("a|b|c", "a|b|d") if g not in done]
    assert enqueue_subsets(study, TASKS, wanted) == len(fresh)
    assert enqueue_subsets(proposer_study(storage=url, seed=5), TASKS, wanted) == 0  # already waiting
    calls: list = []
    again = run_subsets(problem, single=SINGLE, n_subsets=3 + len(fresh), study=proposer_study(storage=url, seed=5),
                        train_fn=fake_trainer(calls))
    assert sum(calls) == 2 * len(fresh)
    assert set(again.objectives["group"]) == done | set(fresh)
    assert enqueue_subsets(study, TASKS, wanted) == 0  # trained: never queued again
    with pytest.raises(SpecError, match="not in the subset universe"):
        enqueue_subsets(study, TASKS, [("a", "zz")])


def test_a_subset_task_is_read_at_its_own_best_epoch(problem):
    """As the measured phases read losses: a task whose curve dips below its loss at the model's
    joint best epoch is scored at its own minimum."""
    base = fake_trainer([])

    def with_curves(*args, **kwargs):
        out = []
        for r in base(*args, **kwargs):
            names = [problem.heads[t].name for t in r.plan.targets]
            curves = pd.DataFrame([(n, e, "val", r.loss["val"][t] * (0.9 if e == 2 else 1.1))
                                   for n, t in zip(names, r.plan.targets, strict=True) for e in (1, 2, 3)],
                                  columns=["task", "epoch", "split", "loss"])
            out.append(dataclasses.replace(r, curves=curves))
        return out

    plain = run_subsets(problem, single=SINGLE, n_subsets=4, train_fn=base, seed=6)
    dipped = run_subsets(problem, single=SINGLE, n_subsets=4, train_fn=with_curves, seed=6)
    assert list(dipped.observations["group"]) == list(plain.observations["group"])
    assert dipped.observations["norm_loss"].to_numpy() == pytest.approx(0.9 * plain.observations["norm_loss"].to_numpy())


def test_subsets_that_cannot_be_scored_count_as_proposed(problem):
    # without single-task losses every objective is NaN and the trial is told FAIL: those subsets
    # were proposed over and over, without end
    calls: list = []
    trainer = fake_trainer(calls)

    def bounded(*args, **kwargs):
        if len(calls) > 20:
            raise RuntimeError("the subsets loop does not end")
        return trainer(*args, **kwargs)

    study = proposer_study(seed=1)
    run = run_subsets(problem, single={}, n_subsets=3, study=study, train_fn=bounded)
    assert sum(calls) == 3 * 2  # three subsets, each with both seeds, trained once
    failed = [tuple(t.user_attrs["tasks"]) for t in study.get_trials(states=(optuna.trial.TrialState.FAIL,))
              if "losses" in t.user_attrs]
    assert len(failed) == len(set(failed)) == 3
    assert run.observations.empty


def test_an_interrupted_stack_takes_back_the_progress_it_reported(problem):
    def interrupted(X, Y, heads, split, plans, *, progress, **_):
        for _ in plans:
            progress(1)
        raise KeyboardInterrupt

    shown: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        run_subsets(problem, single=SINGLE, n_subsets=2, train_fn=interrupted, progress=shown.append)
    assert shown == [1, 1, 1, 1, -4]  # 2 subsets x 2 seeds reported, none stored


def noisy_trainer(calls: list):
    """Final losses of the planted rule plus a fixed noise per (subset, seed, task) of up to +-0.06,
    so some gains are real over three seeds and some stay inside the noise."""

    def train(X, Y, heads, split, plans, **_):
        calls.append(len(plans))
        names = [h.name for h in heads]
        out = []
        for p in plans:
            members = {names[x] for x in p.targets}
            rng = np.random.default_rng([p.seed, *sorted(p.targets)])
            loss = {t: planted_norm_loss(names[t], members) + float(rng.uniform(-0.06, 0.06)) for t in p.main}
            out.append(ModelResult(plan=p, best_epoch=EPOCHS, epochs_run=EPOCHS, loss={"val": loss}, metric={"val": {}},
                                   seconds=0.01, curves=pd.DataFrame(columns=["task", "epoch", "split", "loss"]),
                                   state=None))
        return out

    return train


def _real_gains(run) -> dict[tuple[str, str], tuple[float, float]]:
    """(group, task) -> (mean, upper end of the 95% t interval) of the normalised losses whose interval lies below 1."""
    from taskscout.affinity.measured import t_interval

    out = {}
    for (group, task), part in run.observations.groupby(["group", "task"]):
        iv = t_interval(part["norm_loss"].tolist())
        if iv.n > 1 and iv.high < 1:
            out[group, task] = (iv.mean, iv.high)
    return out


def test_successive_halving_keeps_every_real_gain_and_trains_fewer_models(problem):
    three = dataclasses.replace(problem, seeds=(0, 1, 2))
    single = {(t, s): 1.0 for t in TASKS for s in (0, 1, 2)}
    full_calls, halved_calls = [], []
    full = run_subsets(three, single=single, n_subsets=40, seed=1, train_fn=noisy_trainer(full_calls))
    halved = run_subsets(three, single=single, n_subsets=40, seed=1, train_fn=noisy_trainer(halved_calls),
                         halving_floor=0.0)
    real = _real_gains(full)
    assert len(real) >= 10  # the check below has gains to keep
    assert _real_gains(halved) == real  # every real gain, with the same interval
    # subsets whose tasks all lost on the first seed (those holding e and f, say) got no more seeds
    assert halved.halved == 40 and 0 < halved.dropped < 40
    assert sum(halved_calls) == 40 * 3 - 2 * halved.dropped < sum(full_calls) == 40 * 3
    assert set(full.objectives["group"]) == set(halved.objectives["group"])  # the same proposals
    with pytest.raises(SpecError, match="not both"):
        run_subsets(three, single=single, n_subsets=4, prune=True, halving_floor=0.0, train_fn=noisy_trainer([]))
