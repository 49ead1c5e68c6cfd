"""The search's subsets and estimators phases produce the run-directory tables the later stages read."""

from __future__ import annotations

import numpy as np
import pandas as pd

from taskscout import rundir
from taskscout.affinity.measured import measured_affinity
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

    phase = run_subsets_phase(spec, problem, losses=losses, storage=None)
    assert len(phase.run.objectives) == 4
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
