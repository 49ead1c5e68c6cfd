"""Known answers for the report's plain figure data, computed from the synthetic run directory."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest

from taskscout import rundir
from taskscout.recommendation import Recommendation, read_recommendation
from taskscout.report import figures as F

from .conftest import BOLD, COMPUTE, EVIL, GAINS, PLATEAU, SEEDS, TASKS, estimator_value


@pytest.fixture
def frames(run_dir):
    return {
        "spec": rundir.read_json(run_dir / rundir.SPEC),
        "rec": read_recommendation(run_dir),
        "aff": pd.read_csv(run_dir / rundir.AFFINITY),
        "cands": rundir.read_json(run_dir / rundir.CANDIDATES),
        "trials": pd.read_parquet(run_dir / rundir.TRIALS),
        "curves": pd.read_parquet(run_dir / rundir.CURVES),
        "features": pd.read_csv(run_dir / rundir.CURVE_FEATURES),
        "agreement": pd.read_csv(run_dir / rundir.AGREEMENT),
        "compute": pd.read_csv(run_dir / rundir.COMPUTE),
        "depth": pd.read_csv(run_dir / rundir.DEPTH),
        "verify": rundir.read_json(run_dir / rundir.VERIFY),
    }


def test_text_escapes_markup_but_not_quotes():
    assert F.text(EVIL) == "&lt;img src=x onerror=alert(1)&gt;"
    assert F.text('a & "b"') == 'a &amp; "b"'


def test_summary(frames):
    s = F.summary_data(frames["spec"], frames["rec"], frames["trials"], frames["compute"])
    assert s.tasks == TASKS
    # every phase of compute.csv, the estimators' model included (trials.parquet has 8 + 6 + 4 + 4)
    assert s.models_trained == 8 + 6 + 4 + 8 + 1 and len(frames["trials"]) == 22
    assert s.epochs_trained == 10 * s.models_trained
    assert s.seconds == pytest.approx(4.0 + 3.0 + 2.0 + 4.5 + 0.5)
    assert s.phases == tuple(COMPUTE)
    assert s.networks == 3 and len(s.groups) == 3
    assert s.groups[0].tasks == ("alpha", EVIL) and s.groups[0].branch_layer == 1
    assert s.groups[0].aux == ("alpha__ordinal_ge_1",)
    assert s.groups[0].gains[0] == ("alpha", 0.20, 0.10, 0.30)
    assert s.verdict.startswith("Train 3 networks")


def test_summary_without_compute_sums_model_seconds(frames):
    s = F.summary_data(frames["spec"], None, frames["trials"], None)
    assert s.seconds == pytest.approx(frames["trials"]["seconds"].sum())
    assert s.models_trained == 22 and s.phases == ()
    assert s.verdict == "" and s.groups == ()


def test_affinity_matrix_values_and_significance(frames):
    m = F.affinity_matrix(frames["aff"], TASKS)
    i = {t: k for k, t in enumerate(TASKS)}
    for (target, source), (g, lo, hi) in GAINS.items():
        assert m.gain[i[target], i[source]] == pytest.approx(g)  # the estimator rows do not leak in
        assert m.ci_low[i[target], i[source]] == pytest.approx(lo)
        assert m.significant[i[target], i[source]] == (lo > 0 or hi < 0)
    assert np.isnan(np.diag(m.gain)).all()
    assert m.significant[i["beta"], i[BOLD]] and m.gain[i["beta"], i[BOLD]] < 0
    assert not m.significant[i[BOLD], i["beta"]]
    assert m.significant.sum() == 4


def test_affinity_graph_layout_widths_and_dashes(frames):
    g = F.affinity_graph(frames["aff"], frames["rec"], TASKS)
    pos = {n.task: (n.x, n.y) for n in g.nodes}
    # First task on top, then clockwise.
    assert pos["alpha"] == pytest.approx((0, 1)) and pos["beta"] == pytest.approx((1, 0))
    assert pos[EVIL] == pytest.approx((0, -1)) and pos[BOLD] == pytest.approx((-1, 0))
    assert {n.task: n.group for n in g.nodes} == {"alpha": 0, EVIL: 0, "beta": 1, BOLD: 2}
    edges = {(e.source, e.target): e for e in g.edges}
    assert len(edges) == len(GAINS)  # only measured task -> task gains; no aux, no estimators
    top = edges[(EVIL, "alpha")]  # the largest |gain|, 0.20
    assert top.width == pytest.approx(F.MAX_EDGE_WIDTH) and top.dash == "solid" and top.significant
    neg = edges[(BOLD, "beta")]  # -0.15
    assert neg.width == pytest.approx(1 + 7 * 0.15 / 0.20) and neg.dash == "dash" and neg.significant
    zero = edges[(EVIL, "beta")]  # 0.00
    assert zero.width == pytest.approx(F.MIN_EDGE_WIDTH) and zero.dash == "solid" and not zero.significant


def test_group_tree_shares_layers_up_to_the_branch(frames):
    t = F.group_tree(frames["rec"], depth=3)
    assert t.groups == (("alpha", EVIL), ("beta",), (BOLD,)) and t.branch_layers == (1, 3, 3)
    g0 = [e for e in t.edges if e.group == 0]
    assert [(e.x0, e.y0, e.x1, e.y1) for e in g0 if e.kind == "shared"] == [(0.5, 0, 0.5, 1)]
    alpha = [(e.x0, e.y0, e.x1, e.y1, e.kind) for e in g0 if e.task == "alpha"]
    assert alpha == [(0.5, 1, 0, 2, "branch"), (0, 2, 0, 3, "branch"), (0, 3, 0, 4, "head")]
    evil = [(e.x0, e.y0, e.x1, e.y1) for e in g0 if e.task == EVIL]
    assert evil == [(0.5, 1, 1, 2), (1, 2, 1, 3), (1, 3, 1, 4)]
    # A single-task group shares its whole trunk, one group further right after a 0.5 gap.
    g1 = [(e.x0, e.y0, e.x1, e.y1, e.kind) for e in t.edges if e.group == 1]
    assert g1 == [(2.5, 0, 2.5, 1, "shared"), (2.5, 1, 2.5, 2, "shared"), (2.5, 2, 2.5, 3, "shared"), (2.5, 3, 2.5, 4, "head")]
    heads = {(n.group, n.task): n.x for n in t.nodes if n.kind == "head"}
    assert heads == {(0, "alpha"): 0, (0, EVIL): 1, (1, "beta"): 2.5, (2, BOLD): 4.0}


def test_group_tree_branch_at_zero_shares_nothing():
    rec = Recommendation.from_dict({"schema_version": 1, "tasks": ["a", "b"], "assignment": {"a": 0, "b": 0},
                                    "groups": [{"tasks": ["a", "b"], "branch_layer": 0}]})
    t = F.group_tree(rec, depth=2)
    assert not [e for e in t.edges if e.kind == "shared"]
    assert [(e.x0, e.y0, e.x1, e.y1) for e in t.edges if e.task == "b"] == [(0.5, 0, 1, 1), (1, 1, 1, 2), (1, 2, 1, 3)]


def test_pareto_points_mark_the_recommendation(frames):
    pts = F.pareto_points(frames["rec"])
    assert [p.networks for p in pts] == [1, 2, 3, 4]
    assert [p.loss for p in pts] == [4.2, 3.7, 3.5, 4.0]
    assert [p.chosen for p in pts] == [False, False, True, False]
    assert pts[2].ci_low == pytest.approx(3.4) and pts[2].ci_high == pytest.approx(3.6)
    # Group order does not matter for "chosen".
    rec = dataclasses.replace(frames["rec"], groups=tuple(reversed(frames["rec"].groups)))
    assert [p.chosen for p in F.pareto_points(rec)] == [False, False, True, False]


def test_depth_curves(frames):
    curves = {c.task: c for c in F.depth_curves(frames["depth"])}
    assert curves["alpha"].layers == (0, 1, 2, 3)
    assert curves["alpha"].gain == pytest.approx((0, 0.05, 0.10, 0.15))
    assert curves[EVIL].gain == pytest.approx((0, 0.025, 0.05, 0.075))


def test_aux_leaderboard_ranks_and_marks(frames):
    board = F.aux_leaderboard(frames["aff"], frames["cands"], frames["rec"], TASKS)
    assert list(board) == ["alpha", "beta", EVIL]  # study order; the screened-out candidate has no row
    alpha = board["alpha"]
    assert [a.name for a in alpha] == ["alpha__ordinal_ge_1", "alpha__smooth"]
    assert alpha[0].kind == "quantization" and alpha[0].chosen and alpha[0].significant
    assert alpha[0].gain == pytest.approx(0.05) and (alpha[0].ci_low, alpha[0].ci_high) == pytest.approx((0.01, 0.09))
    assert not alpha[1].chosen and not alpha[1].significant
    assert board["beta"][0].kind == "future" and board["beta"][0].chosen
    assert board[EVIL][0].kind == "hints" and board[EVIL][0].gain == pytest.approx(-0.02)


def test_learning_curves_use_single_task_models_and_mark_the_plateau(frames):
    panels = {p.task: p for p in F.learning_curves(frames["trials"], frames["curves"], frames["features"], TASKS)}
    assert list(panels) == list(TASKS)
    for t, p in panels.items():
        assert p.models == len(SEEDS)
        assert p.epochs == tuple(range(1, 11))
        assert max(p.val) < 99  # pair-model curves are left out
        assert p.plateau_epoch == PLATEAU[t]
        assert p.plateau_loss == pytest.approx(1.0 - 0.1 * PLATEAU[t] + 0.005)
    assert panels["alpha"].train[0] == pytest.approx(0.92)


def test_learning_curves_without_features_have_no_plateau(frames):
    panels = F.learning_curves(frames["trials"], frames["curves"], None, TASKS)
    assert all(p.plateau_epoch is None and math.isnan(p.plateau_loss) for p in panels)


def test_estimator_agreement_pairs_each_score_with_the_measured_gain(frames):
    panels = {p.method: p for p in F.estimator_agreement(frames["aff"], frames["agreement"], TASKS)}
    assert list(panels) == ["tag", "cosine"]
    tag = panels["tag"]
    assert len(tag.pairs) == len(GAINS)
    for (s, t), x, y in zip(tag.pairs, tag.measured, tag.estimate, strict=True):
        assert x == pytest.approx(GAINS[(t, s)][0])
        assert y == pytest.approx(estimator_value("tag", x))
    assert tag.spearman == pytest.approx(0.93) and panels["cosine"].spearman == pytest.approx(-0.93)
    assert tag.relative_compute == pytest.approx(0.05)


def test_search_history_and_compute(frames):
    h = F.search_history(frames["trials"])
    assert h.trial == tuple(range(22))
    assert h.phase[:8] == ("single",) * 8 and h.phase[-1] == "depth"
    assert h.seconds[3] == pytest.approx(1.0)
    assert h.label[8] == "alpha+beta"
    assert h.label[14] == "alpha with alpha__ordinal_ge_1"
    rows = F.compute_per_phase(frames["compute"].iloc[::-1])
    assert [r.phase for r in rows] == ["single", "pairs", "aux", "depth", "estimators"]
    assert rows[3].seconds == pytest.approx(4.5) and rows[3].models == 8


def test_search_history_reads_json_list_cells():
    trials = pd.DataFrame({"trial": [1, 0], "phase": ["pairs", "single"], "tasks": [json.dumps(["a", "b"]), json.dumps(["a"])],
                           "aux": ["[]", "[]"], "seconds": [2.0, 1.0], "epochs": [3, 3]})
    h = F.search_history(trials)
    assert h.trial == (0, 1) and h.label == ("a", "a+b")


def test_verify_rows(frames):
    rows = {r.task: r for r in F.verify_rows(frames["verify"])}
    assert set(rows) == set(TASKS)
    r = rows[EVIL]
    assert r.metric_name == "auc"
    assert r.loss == pytest.approx({"recommended": 0.5, "separate": 0.51, "together": 0.52})
    assert r.gain_vs_separate == pytest.approx((0.02, 0.0, 0.04))
    assert r.gain_vs_together == pytest.approx((0.04, 0.01, 0.07))


def test_every_drawn_figure_escapes_user_strings(frames):
    rec, aff = frames["rec"], frames["aff"]
    figs = [
        F.draw_affinity_heatmap(F.affinity_matrix(aff, TASKS)),
        F.draw_affinity_graph(F.affinity_graph(aff, rec, TASKS)),
        F.draw_group_tree(F.group_tree(rec, 3), {0: ["alpha__ordinal_ge_1"]}),
        F.draw_pareto(F.pareto_points(rec)),
        F.draw_depth(F.depth_curves(frames["depth"])),
        F.draw_aux_leaderboard(F.aux_leaderboard(aff, frames["cands"], rec, TASKS)),
        F.draw_learning_curves(F.learning_curves(frames["trials"], frames["curves"], frames["features"], TASKS)),
        F.draw_estimator_agreement(F.estimator_agreement(aff, frames["agreement"], TASKS)),
        F.draw_search_history(F.search_history(frames["trials"])),
        F.draw_compute(F.compute_per_phase(frames["compute"])),
        F.draw_verify(F.verify_rows(frames["verify"])),
    ]
    for fig in figs:
        payload = json.dumps(fig.to_plotly_json(), default=str)
        assert "<img" not in payload and "<b>delta" not in payload
    names = json.dumps(figs[0].to_plotly_json()["data"][0]["x"])
    assert F.text(EVIL) in names and F.text(BOLD) in names


def test_many_tasks_heatmap_ordered_by_group_and_graph_of_real_edges_by_group(tmp_path):
    from .conftest import MANY_GROUPS, MANY_PER_GROUP, write_many_run_dir

    d = write_many_run_dir(tmp_path / "many")
    aff, rec = pd.read_csv(d / rundir.AFFINITY), read_recommendation(d)
    shuffled = sorted(rec.tasks, key=lambda t: (t.split("_")[1], t))  # study order interleaves the groups
    m = F.affinity_matrix(aff, shuffled, rec)
    assert m.tasks == tuple(rec.tasks)  # rows ordered by recommended group
    assert m.blocks == tuple((k * MANY_PER_GROUP, (k + 1) * MANY_PER_GROUP) for k in range(MANY_GROUPS))
    assert m.gain[0, 1] == pytest.approx(0.03) and m.significant[0, 1] and not m.significant[0, MANY_PER_GROUP]
    g = F.affinity_graph(aff, rec, shuffled)
    assert len(g.edges) == MANY_GROUPS * MANY_PER_GROUP * (MANY_PER_GROUP - 1) and all(e.significant for e in g.edges)
    angle = {n.task: math.atan2(n.y, n.x) for n in g.nodes}
    first = [angle[t] for t in rec.tasks[:MANY_PER_GROUP]]  # a group is one arc: consecutive on the circle
    step = 2 * math.pi / len(g.nodes)
    assert all(abs(abs(a - b) - step) < 1e-9 or abs(abs(a - b) - (2 * math.pi - step)) < 1e-9
               for a, b in zip(first, first[1:], strict=False))
