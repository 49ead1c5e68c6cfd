"""The search's subsets and estimators phases produce the run-directory tables the later stages read."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from taskscout import rundir
from taskscout.affinity.measured import group_scores, measured_affinity
from taskscout.affinity.measured_estimator import loss_table, pair_plans
from taskscout.data import build_dataset
from taskscout.search.estimators import (
    affinity_problem,
    estimator_tables,
    run_estimators_phase,
    run_subsets_phase,
)
from taskscout.search.problem import build_problem
from taskscout.spec import resolve_spec
from taskscout.training import train_models

TASKS = ["g0_t0", "g0_t1", "g1_t0", "g1_t1"]


def test_phases_give_the_tables_grouping_and_report_read(tmp_path):
    spec = resolve_spec("builtin:planted", {
        "tasks": TASKS, "device": "cpu", "out": str(tmp_path),
        "data_options": {"n_rows": 240, "groups": 2, "tasks_per_group": 2, "n_inputs": 8, "seed": 2},
        "model": {"depth": 2, "width": 8}, "training": {"epochs": 3, "seeds": 2, "batch_size": 64},
        "search": {"subsets": 4},
    })
    problem = build_problem(build_dataset(spec), spec.main_tasks)
    aproblem = affinity_problem(problem, spec)
    assert aproblem.main_names == tuple(TASKS)
    results = train_models(aproblem.X, aproblem.Y, aproblem.heads, aproblem.split, pair_plans(aproblem, aproblem.seeds),
                           model=spec.model, training=spec.training, device="cpu")
    losses = loss_table(results, aproblem)
    measured = measured_affinity(losses, full_layer=spec.model.depth)

    finished: list[int] = []
    announced: list[int] = []
    phase = run_subsets_phase(spec, problem, losses=losses, storage=None, progress=finished.append,
                              planned=announced.append)
    # every model the progress display counts was announced: 4 subsets x 2 seeds, then confirmation
    assert sum(finished) == 4 * 2 + sum(announced)
    assert len(phase.run.objectives) >= 4  # the 4 sampled subsets, and any confirmation subset announced
    groups = set(phase.observations["group"])
    assert set(TASKS) <= groups  # single-task anchors
    assert "g0_t0|g0_t1" in groups  # the measured pairs join the surrogate's data
    assert set(phase.surrogate.per_task) == set(TASKS)

    est = run_estimators_phase(spec, problem, params={"tag": {"every": 1, "probe_size": 16},
                                                      "gradcos": {"every": 1, "probe_size": 16}})
    tables = estimator_tables(measured=measured, measured_compute=_compute(results),
                              results=est, subsets=phase)
    assert set(tables["affinity_rows"]["method"]) == {"tag", "gradcos", "rsa", "surrogate"}
    assert list(tables[rundir.AGREEMENT]["method"]) == ["tag", "gradcos", "rsa", "surrogate"]
    assert (tables[rundir.AGREEMENT]["relative_compute"] > 0).all()
    assert set(tables[rundir.COMPUTE]["phase"]) == {"estimator:tag", "estimator:gradcos", "estimator:rsa", "subsets"}
    assert list(tables[rundir.RSA_LAYERS].columns) == list(rundir.RSA_LAYER_COLUMNS)
    assert list(tables[rundir.SUBSET_OBSERVATIONS].columns) == list(rundir.SUBSET_OBSERVATION_COLUMNS)
    assert np.isfinite(tables[rundir.SUBSET_OBSERVATIONS]["norm_loss"]).all()


def _compute(results):
    from taskscout.affinity import Compute

    return Compute(len(results), sum(r.epochs_run for r in results), sum(r.seconds for r in results))


def test_pair_observations_are_paired_per_seed():
    from taskscout.search.estimators import pair_observations

    losses = pd.DataFrame(
        [(("a",), (), 2, 0, "a", 2.0), (("a", "b"), (), 2, 0, "a", 1.5), (("a", "b"), (), 2, 1, "a", 1.0),
         (("a", "b"), ("x",), 2, 0, "a", 0.1)],
        columns=["tasks", "aux", "branch_layer", "seed", "task", "loss"],
    )
    obs = pair_observations(losses, ["a", "b"])
    assert obs.to_dict("records") == [{"group": "a|b", "task": "a", "seed": 0, "norm_loss": 0.75}]


def _planted_trainer(calls: list):
    """Stands in for train_models: a task's loss is 1 alone, 10% lower per partner of its own
    planted group, 5% higher per partner of another group, times a small per-seed factor."""
    from taskscout.training import ModelResult

    def train(X, Y, heads, split, plans, **_):
        calls.append(len(plans))
        names = [h.name for h in heads]
        out = []
        for p in plans:
            loss = {}
            for t in p.main:
                group = names[t].split("_t")[0]
                partners = [names[x].split("_t")[0] for x in p.targets if x != t]
                loss[t] = (1.0 - 0.1 * partners.count(group) + 0.05 * (len(partners) - partners.count(group))) \
                    * (1.0 + 0.01 * (p.seed % 3))
            out.append(ModelResult(plan=p, best_epoch=1, epochs_run=1, loss={"val": loss}, metric={"val": {}},
                                   seconds=0.0, curves=pd.DataFrame(columns=["task", "epoch", "split", "loss"]),
                                   state=None))
        return out

    return train


def _two_planted_triples(tmp_path):
    """Six tasks in two planted triples, the fake planted trainer, and the losses of its pairs."""
    tasks = [f"g{g}_t{i}" for g in range(2) for i in range(3)]
    spec = resolve_spec("builtin:planted", {
        "tasks": tasks, "device": "cpu", "out": str(tmp_path),
        "data_options": {"n_rows": 120, "groups": 2, "tasks_per_group": 3, "n_inputs": 8},
        "model": {"depth": 2, "width": 8}, "training": {"epochs": 2, "seeds": 3}, "search": {"subsets": 3},
    })
    problem = build_problem(build_dataset(spec), spec.main_tasks)
    aproblem = affinity_problem(problem, spec)
    calls: list = []
    fake = _planted_trainer(calls)
    losses = loss_table(fake(aproblem.X, aproblem.Y, aproblem.heads, aproblem.split,
                             pair_plans(aproblem, aproblem.seeds)), aproblem)
    return tasks, spec, problem, aproblem, calls, fake, losses


def test_subsets_phase_measures_the_groups_the_recommendation_needs_with_more_seeds(tmp_path):
    from taskscout.grouping import recommend, with_subset_scores
    from taskscout.search.estimators import CONFIRM_EXTRA_SEEDS, confirmation_seeds

    tasks, spec, problem, aproblem, calls, fake, losses = _two_planted_triples(tmp_path)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    announced: list[int] = []
    phase = run_subsets_phase(spec, problem, losses=losses, storage=url, train_fn=fake, planned=announced.append)
    extra = confirmation_seeds(aproblem.seeds)
    assert extra == (3, 4) and len(extra) == CONFIRM_EXTRA_SEEDS
    obs = phase.observations
    for triple in ("g0_t0|g0_t1|g0_t2", "g1_t0|g1_t1|g1_t2"):
        assert sorted(set(obs.loc[obs["group"] == triple, "seed"])) == [0, 1, 2, 3, 4]
        assert obs.loc[obs["group"] == triple, "norm_loss"].to_numpy() == pytest.approx(0.8)
    assert sorted(set(obs.loc[obs["group"] == "g0_t0", "seed"])) == [0, 1, 2, 3, 4]  # anchors on the new seeds
    # the phase's compute counts the 3 sampled subsets, the 6 extra single-task models and the triples
    assert phase.run.compute.models == sum(calls[1:]) >= 3 * 3 + 6 * 2 + 2 * 5
    # the progress display was told of every model beyond the sampled subsets (the normalisers and
    # the confirmed subsets) before it was trained
    assert sum(announced) == sum(calls[1:]) - 3 * 3 > 6 * 2
    gs = group_scores(losses, full_layer=2, order=tasks)
    rec = recommend(spec_tasks=tasks, affinity=measured_affinity(losses, full_layer=2),
                    group_scores=with_subset_scores(gs, obs, tasks), depth_L=2)
    assert [g["tasks"] for g in rec["groups"]] == [tasks[:3], tasks[3:]]
    assert {g["score_source"] for g in rec["groups"]} == {"measured"}
    # resumed: nothing is trained again, the extra seeds' single-task normalisers (6 tasks x 2)
    # included: they are kept in the proposer study
    calls.clear()
    again = run_subsets_phase(spec, problem, losses=losses, storage=url, train_fn=fake)
    assert calls == []
    # every subset model is counted on both runs (the first trained them, the second reuses them)
    assert phase.stored_models == again.stored_models == phase.run.compute.models - 6 * 2
    assert phase.normalisers == again.normalisers == 6 * 2
    key = ["group", "task", "seed"]
    pd.testing.assert_frame_equal(again.observations.sort_values(key).reset_index(drop=True),
                                  obs.sort_values(key).reset_index(drop=True))


def test_a_resumed_subsets_phase_counts_the_compute_of_the_models_it_reuses(tmp_path):
    # the second run trained nothing and reported the phase (and the surrogate) at 0 models, 0 epochs
    tasks, spec, problem, aproblem, calls, fake, losses = _two_planted_triples(tmp_path)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    calls.clear()
    first = run_subsets_phase(spec, problem, losses=losses, storage=url, train_fn=fake)
    trained = sum(calls)  # the fake trainer runs 1 epoch per model
    assert trained > 3 * 3 + 6 * 2  # sampled subsets, confirmation's normalisers and confirmed groups
    assert (first.compute.models, first.compute.epochs) == (trained, trained)
    calls.clear()
    again = run_subsets_phase(spec, problem, losses=losses, storage=url, train_fn=fake)
    assert calls == [] and again.run.compute.models == 0  # nothing trained this time
    assert (again.compute.models, again.compute.epochs) == (trained, trained)
    row = estimator_tables(measured=measured_affinity(losses, full_layer=2), measured_compute=_compute([]),
                           subsets=again)[rundir.COMPUTE].set_index("phase").loc["subsets"]
    assert (row["models"], row["epochs"]) == (trained, trained)
