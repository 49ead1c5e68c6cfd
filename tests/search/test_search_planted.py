"""End to end on builtin:planted with the real trainer and the default settings: the measured
gains recover the planted groups (a longer run: marked slow)."""

import pandas as pd
import pytest

from taskscout import rundir
from taskscout.recommendation import Recommendation
from taskscout.search import run_search
from taskscout.spec import resolve_spec

TASKS = ["g0_t0", "g0_t1", "g1_t0", "g1_t1"]


@pytest.mark.slow
def test_measured_gains_are_positive_inside_planted_groups_and_not_across(tmp_path):
    spec = resolve_spec("builtin:planted", {"tasks": TASKS, "out": str(tmp_path / "run"), "device": "cpu",
                                            "search": {"phases": ["single", "pairs"]}})
    run_search(spec, finalize_run=False)
    aff = pd.read_csv(tmp_path / "run" / rundir.AFFINITY)
    same = [s[:2] == t[:2] for s, t in zip(aff["source"], aff["target"], strict=True)]
    inside, across = aff[same], aff[[not x for x in same]]
    assert len(inside) == 4 and len(across) == 8 and (aff["n_seeds"] == 3).all()
    assert (inside["gain"] > 0).all()
    assert inside["gain"].min() > across["gain"].max()
    assert (inside["ci_low"] > 0).sum() >= 2  # real gains inside groups ...
    assert (across["ci_low"] < 0).all()  # ... and no real gain across them


@pytest.mark.slow
def test_long_format_search_recovers_the_planted_segment_groups(tmp_path):
    # Four segments of one long table, two planted groups of two: every measured gain inside a
    # planted group exceeds every gain across groups (label-only training: each model reads its
    # segments' rows only), and the recommendation is exactly the planted segment groups.
    from taskscout.data.planted import planted_groups, planted_segments
    from taskscout.data.prepare import resolve_segments

    # 300 rows per segment over 48 inputs: a segment alone has too few rows to find its group's two
    # latent directions, so a partner of its group helps; 8 seeds make the intervals narrow enough
    # (with 3, the gains inside groups, +10% to +35%, had intervals reaching below zero).
    options = {"groups": 2, "tasks_per_group": 2, "rows_per_segment": 300, "classification": False,
               "label_fraction": 1.0, "n_inputs": 48}
    spec = resolve_spec("builtin:planted", {"targets": ["y"], "data_options": {"long_format": True, **options},
                                            "out": str(tmp_path / "run"), "device": "cpu", "training": {"seeds": 8},
                                            "search": {"phases": ["single", "pairs"]}})
    spec = resolve_segments(spec)
    assert spec.task_column == "segment" and spec.tasks == ("g0_t0", "g0_t1", "g1_t0", "g1_t1")
    run_search(spec)
    truth = planted_groups(planted_segments(**options))
    aff = pd.read_csv(tmp_path / "run" / rundir.AFFINITY)
    same = [truth[s] == truth[t] for s, t in zip(aff["source"], aff["target"], strict=True)]
    inside, across = aff[same], aff[[not x for x in same]]
    assert len(inside) == 4 and len(across) == 8
    assert (inside["gain"] > 0).all()
    assert inside["gain"].min() > across["gain"].max()
    assert (inside["ci_low"] > 0).all()  # every gain inside a planted group is real
    rec = Recommendation.from_dict(rundir.read_json(tmp_path / "run" / rundir.RECOMMENDATION))
    planted = {}
    for task, group in truth.items():
        planted.setdefault(group, []).append(task)
    assert sorted(g.tasks for g in rec.groups) == sorted(tuple(sorted(ts)) for ts in planted.values())
