"""A complete synthetic run directory, written per the run-directory contract (taskscout/rundir.py).

Four tasks, one named like an HTML injection and one holding markup plotly renders, and a study name holding a <script> tag.
The numbers are chosen so tests can check known answers:

- measured gains: GAINS below (target <- source), intervals in CIS;
- single-task curves: task t's validation loss falls by 0.1 per epoch until PLATEAU[t], then stays
  flat, plus 0.01 * seed; so the mean over seeds 0 and 1 at the plateau is
  1.0 - 0.1 * PLATEAU[t] + 0.005;
- pair trials carry curves at loss 99, which the learning-curve panels must ignore.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from taskscout import rundir
from taskscout.spec import resolve_spec

EVIL = "<img src=x onerror=alert(1)>"
BOLD = "<b>delta</b>"  # plotly would render this bold if figure text were not escaped
STUDY = 'demo <script>alert("study")<script>'  # no "/": a study name is a folder name
TASKS = ("alpha", "beta", EVIL, BOLD)
DEPTH = 3
PLATEAU = {"alpha": 4, "beta": 6, EVIL: 3, BOLD: 8}
EPOCHS = 10
SEEDS = (0, 1)

# (target, source) -> gain, ci_low, ci_high
GAINS = {
    ("alpha", EVIL): (0.20, 0.10, 0.30),
    (EVIL, "alpha"): (0.10, 0.02, 0.18),
    ("beta", BOLD): (-0.15, -0.25, -0.05),
    (BOLD, "beta"): (-0.05, -0.12, 0.02),
    ("alpha", "beta"): (0.02, -0.03, 0.07),
    ("beta", "alpha"): (0.01, -0.04, 0.06),
    ("alpha", BOLD): (-0.04, -0.09, 0.01),
    (BOLD, "alpha"): (0.03, -0.02, 0.08),
    ("beta", EVIL): (0.00, -0.05, 0.05),
    (EVIL, "beta"): (0.05, -0.01, 0.11),
    (EVIL, BOLD): (-0.10, -0.16, -0.04),
    (BOLD, EVIL): (0.04, -0.01, 0.09),
}
AUX = [  # name, kind, serves, gain, ci_low, ci_high (None: screened out, not trained)
    ("alpha__ordinal_ge_1", "quantization", "alpha", 0.05, 0.01, 0.09),
    ("alpha__smooth", "quantization", "alpha", 0.01, -0.03, 0.05),
    (EVIL + "__hint_0", "hints", EVIL, -0.02, -0.06, 0.02),
    ("beta__future_1", "future", "beta", 0.08, 0.03, 0.13),
    ("delta__predict_x1", "predict_inputs", BOLD, None, None, None),
]
GROUPS = [  # tasks, branch layer, auxiliaries
    (["alpha", EVIL], 1, ["alpha__ordinal_ge_1"]),
    (["beta"], DEPTH, ["beta__future_1"]),
    ([BOLD], DEPTH, []),
]
PARETO = [
    (1, 4.2, [list(TASKS)]),
    (2, 3.7, [["alpha", EVIL], ["beta", BOLD]]),
    (3, 3.5, [["alpha", EVIL], ["beta"], [BOLD]]),
    (4, 4.0, [[t] for t in TASKS]),
]
COMPUTE = [("single", 8, 80, 4.0), ("pairs", 6, 60, 3.0), ("aux", 4, 40, 2.0), ("depth", 8, 80, 4.5), ("estimators", 1, 10, 0.5)]


def estimator_value(method: str, gain: float) -> float:
    """Synthetic estimator scores: tag follows the measured gain, cosine is its negation."""
    return 0.5 * gain + 0.001 if method == "tag" else -gain


def write_run_dir(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    spec = resolve_spec(None, {
        "data": "builtin:planted", "tasks": list(TASKS), "name": STUDY, "budget": "small",
        "model": {"depth": DEPTH, "width": 8}, "training": {"epochs": EPOCHS},
    })
    rundir.write_text(d / rundir.SPEC, spec.to_json())

    rundir.write_json(d / rundir.CANDIDATES, [
        {"name": n, "kind": k, "serves": [s], "type": "binary", "training_only": True,
         "labelled": {"train": 100, "val": 30, "test": 30}, "score": 0.1,
         "dropped": None if g is not None else "low mutual information with the main task"}
        for n, k, s, g, _, _ in AUX
    ])

    trials, curves = [], []

    def add_trial(phase: str, tasks: list[str], seed: int, aux: list[str] = (), branch: int = DEPTH) -> int:
        trial = len(trials)
        trials.append({
            "trial": trial, "phase": phase, "key": f"{phase}:{'|'.join(tasks)}:{seed}", "tasks": list(tasks),
            "main": list(tasks), "aux": list(aux), "branch_layer": branch, "seed": seed, "state": "COMPLETE",
            "val_loss": json.dumps({t: 0.5 for t in tasks}), "val_metric": json.dumps({t: 0.7 for t in tasks}),
            "test_loss": "{}", "test_metric": "{}", "epochs": EPOCHS, "best_epoch": 5,
            "seconds": 0.25 * (trial + 1), "finished": pd.Timestamp("2025-01-01") + pd.Timedelta(seconds=trial),
        })
        return trial

    for t in TASKS:
        for s in SEEDS:
            trial = add_trial("single", [t], s)
            for e in range(1, EPOCHS + 1):
                val = 1.0 - 0.1 * min(e, PLATEAU[t]) + 0.01 * s
                curves.append((trial, t, e, "val", val))
                curves.append((trial, t, e, "train", 1.0 - 0.08 * e))
    for i, a in enumerate(TASKS):
        for b in TASKS[i + 1:]:
            trial = add_trial("pairs", [a, b], 0)
            for e in range(1, EPOCHS + 1):
                curves += [(trial, a, e, "val", 99.0), (trial, b, e, "val", 99.0)]
    for n, _, s, g, _, _ in AUX:
        if g is not None:
            add_trial("aux", [s], 0, [n])
    for layer in range(DEPTH + 1):
        add_trial("depth", ["alpha", EVIL], 0, branch=layer)
    rundir.write_parquet(d / rundir.TRIALS, pd.DataFrame(trials, columns=list(rundir.TRIAL_COLUMNS)))
    rundir.write_parquet(d / rundir.CURVES, pd.DataFrame(curves, columns=list(rundir.CURVE_COLUMNS)))

    rundir.write_csv(d / rundir.CURVE_FEATURES, pd.DataFrame(
        [(t, PLATEAU[t], -0.1, -0.1, -0.05, 0.0, 0.0) for t in TASKS], columns=list(rundir.CURVE_FEATURE_COLUMNS)))

    aff = [(s, t, g, lo, hi, 2, "measured") for (t, s), (g, lo, hi) in GAINS.items()]
    aff += [(n, s, g, lo, hi, 2, "measured") for n, _, s, g, lo, hi in AUX if g is not None]
    for method in ("tag", "cosine"):
        aff += [(s, t, estimator_value(method, g), float("nan"), float("nan"), 1, method) for (t, s), (g, _, _) in GAINS.items()]
    rundir.write_csv(d / rundir.AFFINITY, pd.DataFrame(aff, columns=list(rundir.AFFINITY_COLUMNS)))

    key = rundir.group_key(["alpha", EVIL], TASKS)
    depth_rows = [(key, layer, t, 0.05 * layer * (1 if t == "alpha" else 0.5), 0.05 * layer - 0.03, 0.05 * layer + 0.03, 2)
                  for layer in range(DEPTH + 1) for t in ("alpha", EVIL)]
    rundir.write_csv(d / rundir.DEPTH, pd.DataFrame(depth_rows, columns=list(rundir.DEPTH_COLUMNS)))
    rundir.write_csv(d / rundir.GROUP_SCORES, pd.DataFrame(
        [(key, "alpha", 0.8, 0.7, 0.9, 2, "measured"), (key, EVIL, 0.9, 0.82, 0.98, 2, "measured")],
        columns=list(rundir.GROUP_SCORE_COLUMNS)))
    rundir.write_csv(d / rundir.AGREEMENT, pd.DataFrame(
        [("tag", 0.93, 1.0, 0.05), ("cosine", -0.93, 0.0, 0.02)], columns=list(rundir.AGREEMENT_COLUMNS)))
    rundir.write_csv(d / rundir.COMPUTE, pd.DataFrame(COMPUTE, columns=list(rundir.COMPUTE_COLUMNS)))
    rundir.write_text(d / rundir.GRAPH, (
        '<?xml version="1.0" encoding="utf-8"?>\n<graphml xmlns="http://graphml.graphdrawing.org/xmlns">'
        '<graph edgedefault="directed"/></graphml>\n'))

    aux_by_name = {n: (k, s, g, lo, hi) for n, k, s, g, lo, hi in AUX}
    rec_groups = []
    for tasks, branch, aux in GROUPS:
        rec_groups.append({
            "tasks": tasks, "serves": tasks, "branch_layer": branch,
            "branch_source": "depth" if len(tasks) > 1 else "default", "score_source": "measured",
            "aux": [{"name": a, "kind": aux_by_name[a][0], "serves": [aux_by_name[a][1]],
                     "expected_gain": {aux_by_name[a][1]: aux_by_name[a][2]},
                     "ci": {aux_by_name[a][1]: [aux_by_name[a][3], aux_by_name[a][4]]}} for a in aux],
            "expected_gain": {t: GAINS.get((t, tasks[1 - tasks.index(t)]), (0.0,))[0] if len(tasks) == 2 else 0.0 for t in tasks},
            "ci": {t: list(GAINS.get((t, tasks[1 - tasks.index(t)]), (0, -0.01, 0.01))[1:]) if len(tasks) == 2 else [-0.01, 0.01]
                   for t in tasks},
        })
    rundir.write_json(d / rundir.RECOMMENDATION, {
        "schema_version": 1, "tasks": list(TASKS), "groups": rec_groups,
        "assignment": {t: k for k, (tasks, _, _) in enumerate(GROUPS) for t in tasks},
        "auxiliaries": {"alpha": [{"name": "alpha__ordinal_ge_1", "kind": "quantization", "expected_gain": 0.05, "ci": [0.01, 0.09]}],
                        "beta": [{"name": "beta__future_1", "kind": "future", "expected_gain": 0.08, "ci": [0.03, 0.13]}]},
        "baselines": {"single_task_loss": {t: 0.5 for t in TASKS}, "all_together_loss": {t: 0.55 for t in TASKS}},
        "budget": {"networks": 3, "requested": None},
        "pareto": [{"networks": n, "total_normalised_loss": v, "ci": [v - 0.1, v + 0.1], "groups": g} for n, v, g in PARETO],
        "verdict": f"Train 3 networks: alpha with {EVIL} (branch after layer 1), beta alone, delta alone.",
        "reasons": [f"{EVIL} gains 0.10 from alpha", "beta loses 0.15 with delta"],
    })
    rundir.write_json(d / rundir.VERIFY, {
        "tasks": {t: {s: {"loss": 0.5 + 0.01 * k, "metric": 0.7 - 0.01 * k, "metric_name": "auc"}
                      for k, s in enumerate(("recommended", "separate", "together"))} for t in TASKS},
        "gain_vs_separate": {t: [0.02, 0.0, 0.04] for t in TASKS},
        "gain_vs_together": {t: [0.04, 0.01, 0.07] for t in TASKS},
        "verdict": f"The recommendation beats all-separate on 4 of 4 tasks, {EVIL} included.",
    })
    return d


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return write_run_dir(tmp_path / "run")


MANY_GROUPS, MANY_PER_GROUP = 10, 10  # the 100-task run directory: 10 recommended groups of 10


def write_many_run_dir(d: Path) -> Path:
    """A run directory of a 100-task search that trained sampled subsets instead of pairs: sampled
    gains (+0.03, interval excluding zero, inside each of 10 groups; -0.005 within noise across),
    single-task models with curves, a recommendation of the 10 groups, compute and verify."""
    import numpy as np

    d.mkdir(parents=True, exist_ok=True)
    tasks = [f"g{g}_t{i}" for g in range(MANY_GROUPS) for i in range(MANY_PER_GROUP)]
    spec = resolve_spec(None, {"data": "builtin:planted", "tasks": tasks, "name": "many", "budget": "small",
                               "model": {"depth": 2, "width": 8}, "training": {"epochs": EPOCHS}})
    rundir.write_text(d / rundir.SPEC, spec.to_json())
    rundir.write_json(d / rundir.CANDIDATES, [])
    trials, curves = [], []
    for t in tasks:
        for s in SEEDS:
            trial = len(trials)
            trials.append({
                "trial": trial, "phase": "single", "key": f"single:{t}:{s}", "tasks": [t], "main": [t], "aux": [],
                "branch_layer": 2, "seed": s, "state": "COMPLETE", "val_loss": json.dumps({t: 0.5}),
                "val_metric": json.dumps({t: 0.7}), "test_loss": "{}", "test_metric": "{}", "epochs": EPOCHS,
                "best_epoch": 5, "seconds": 0.1, "finished": pd.Timestamp("2025-01-01") + pd.Timedelta(seconds=trial),
            })
            curves += [(trial, t, e, split, 1.0 - 0.05 * min(e, 6)) for e in range(1, EPOCHS + 1) for split in ("val", "train")]
    rundir.write_parquet(d / rundir.TRIALS, pd.DataFrame(trials, columns=list(rundir.TRIAL_COLUMNS)))
    rundir.write_parquet(d / rundir.CURVES, pd.DataFrame(curves, columns=list(rundir.CURVE_COLUMNS)))
    group = {t: k // MANY_PER_GROUP for k, t in enumerate(tasks)}
    rng = np.random.default_rng(0)
    aff = []
    for s in tasks:
        for t in tasks:
            if s != t:
                g = 0.03 if group[s] == group[t] else -0.005 + 0.002 * float(rng.normal())
                hw = 0.01 if group[s] == group[t] else 0.02
                aff.append((s, t, g, g - hw, g + hw, 4, "sampled"))
    rundir.write_csv(d / rundir.AFFINITY, pd.DataFrame(aff, columns=list(rundir.AFFINITY_COLUMNS)))
    members = [tasks[k * MANY_PER_GROUP:(k + 1) * MANY_PER_GROUP] for k in range(MANY_GROUPS)]
    rundir.write_json(d / rundir.RECOMMENDATION, {
        "schema_version": 1, "tasks": tasks,
        "groups": [{"tasks": m, "serves": m, "branch_layer": 2, "branch_source": "default", "score_source": "sampled",
                    "aux": [], "expected_gain": {t: 0.27 for t in m}, "ci": {t: [0.2, 0.34] for t in m}} for m in members],
        "assignment": {t: group[t] for t in tasks}, "auxiliaries": {t: [] for t in tasks},
        "baselines": {"single_task_loss": {t: 0.5 for t in tasks}, "all_together_loss": {t: 0.45 for t in tasks}},
        "budget": {"networks": MANY_GROUPS, "requested": None},
        "pareto": [{"networks": n, "total_normalised_loss": 73.0 + abs(n - MANY_GROUPS), "ci": [72.0, 75.0],
                    "groups": members} for n in range(1, 21)],
        "verdict": "Train 10 networks: the 10 groups.", "reasons": ["sampled subsets"],
    })
    rundir.write_csv(d / rundir.COMPUTE, pd.DataFrame([("single", 200, 2000, 20.0), ("sampled", 1203, 12030, 300.0)],
                                                      columns=list(rundir.COMPUTE_COLUMNS)))
    rundir.write_json(d / rundir.VERIFY, {
        "tasks": {t: {s: {"loss": 0.5, "metric": 0.7, "metric_name": "auc"} for s in ("recommended", "separate", "together")}
                  for t in tasks},
        "gain_vs_separate": {t: [0.02, 0.0, 0.04] for t in tasks},
        "gain_vs_together": {t: [0.04, 0.01, 0.07] for t in tasks},
        "verdict": "The recommendation beats all-separate.",
    })
    return d
