"""Tests for taskscout.verify and `taskscout verify` on a tiny planted run directory."""

from __future__ import annotations

import html
import json

import numpy as np
import pytest

from taskscout import rundir
from taskscout.cli import main
from taskscout.errors import MissingResultsError
from taskscout.spec import resolve_spec
from taskscout.verify import (
    CONFIGS,
    VERIFY_SEED_OFFSET,
    default_seed_count,
    fresh_seeds,
    verify_run,
)

TASKS = ["g0_t0", "g0_t1", "g1_t0", "g1_t1"]


def _spec(tmp_path, **aux):
    return resolve_spec("builtin:planted", {
        "tasks": TASKS,
        "data_options": {"n_rows": 500, "n_inputs": 12, "groups": 2, "tasks_per_group": 2, "label_fraction": 0.5},
        "model": {"depth": 2, "width": 16},
        "training": {"epochs": 8, "batch_size": 128, "seeds": 2, "patience": 8},
        "aux": aux or {"kinds": ["predict_inputs"], "cap": 1},
        "out": str(tmp_path),
    })


def _write_run(tmp_path, groups, assignment, spec=None):
    spec = spec or _spec(tmp_path)
    rundir.write_text(tmp_path / rundir.SPEC, spec.to_json())
    rundir.write_json(tmp_path / rundir.RECOMMENDATION, {
        "schema_version": 1, "tasks": TASKS, "groups": groups, "assignment": assignment,
        "budget": {"networks": len(groups), "requested": None},
    })
    return spec


def _group(tasks, layer=2, aux=()):
    return {"tasks": list(tasks), "branch_layer": layer, "aux": [{"name": a} for a in aux]}


@pytest.fixture(scope="module")
def verified(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    spec = _write_run(
        d,
        [_group(["g0_t0", "g0_t1"], layer=1), _group(["g1_t0"]), _group(["g1_t1"])],
        {"g0_t0": 0, "g0_t1": 0, "g1_t0": 1, "g1_t1": 2},
    )
    return d, spec, verify_run(d, seeds=2, device="cpu")


def test_verify_json_has_the_design_shape(verified):
    d, _, result = verified
    out = rundir.read_json(d / rundir.VERIFY)
    assert out == result.to_dict()
    assert set(out["tasks"]) == set(TASKS)
    for t in TASKS:
        assert set(out["tasks"][t]) == set(CONFIGS)
        for c in CONFIGS:
            cell = out["tasks"][t][c]
            assert set(cell) == {"loss", "metric", "metric_name"}
            assert cell["loss"] > 0
        for key in ("gain_vs_separate", "gain_vs_together"):
            mean, low, high = out[key][t]
            assert low <= mean <= high
    # planted: every second task is binary, the others regression
    assert out["tasks"]["g0_t1"]["recommended"]["metric_name"] == "auc"
    assert out["tasks"]["g0_t0"]["recommended"]["metric_name"] == "rmse"
    assert isinstance(out["verdict"], str) and out["verdict"].startswith("On the test split (2 fresh seeds)")
    json.dumps(out, allow_nan=False)


def test_verify_uses_fresh_seeds_and_trains_identical_networks_once(verified):
    _, spec, result = verified
    from taskscout.search.plan import model_seeds

    assert result.seeds == fresh_seeds(spec.seed, 2) == (VERIFY_SEED_OFFSET, VERIFY_SEED_OFFSET + 1)
    assert not set(result.seeds) & set(model_seeds(spec))
    # per seed: the pair, four separate networks, one all-together; the two singletons are the
    # separate networks themselves
    assert result.models_trained == 2 * (1 + 4 + 1)
    for t in ("g1_t0", "g1_t1"):
        assert result.gain_vs_separate[t] == (0.0, 0.0, 0.0)
        assert result.loss["recommended"][t] == result.loss["separate"][t]



def test_a_recommendation_that_is_a_baseline_is_named_as_such(tmp_path):
    # Recommending every task alone is the all-separate baseline itself: the verdict once called
    # that "within noise of training every task separately (+0.0%, interval [+0.0%, +0.0%])".
    _write_run(tmp_path, [_group([t]) for t in TASKS], {t: i for i, t in enumerate(TASKS)})
    result = verify_run(tmp_path, seeds=2, device="cpu")
    assert "trains the same networks as training every task separately" in result.verdict
    assert "all tasks together (" in result.verdict  # a real comparison with the other baseline
    assert result.models_trained == 2 * (4 + 1)

def test_verify_gains_are_paired_per_seed(verified):
    _, _, result = verified
    for t in TASKS:
        per_seed = [
            (result.loss["together"][t][s] - result.loss["recommended"][t][s]) / result.loss["together"][t][s]
            for s in result.seeds
        ]
        assert result.gain_vs_together[t][0] == pytest.approx(np.mean(per_seed))
        # together is one network: the same one for every task
    tog = {s: result.loss["together"]["g0_t0"][s] for s in result.seeds}
    assert len(set(tog.values())) == 2


def test_verify_trains_recommended_auxiliaries(tmp_path):
    from taskscout.auxgen import generate_candidates
    from taskscout.data import build_dataset

    spec = _spec(tmp_path)
    kept = [a for a in generate_candidates(build_dataset(spec), spec) if a.dropped is None and "g0_t0" in a.serves]
    assert kept and kept[0].drops_inputs, "g0_t0 should get a predict-inputs candidate"
    aux = kept[0].name
    _write_run(tmp_path, [_group(["g0_t0"], aux=[aux]), _group(["g0_t1"]), _group(["g1_t0", "g1_t1"])],
               {"g0_t0": 0, "g0_t1": 1, "g1_t0": 2, "g1_t1": 2}, spec)
    result = verify_run(tmp_path, seeds=2, device="cpu")
    # g0_t0 with its auxiliary is a different network from g0_t0 alone
    assert result.models_trained == 2 * (1 + 1 + 4 + 1)
    assert result.loss["recommended"]["g0_t0"] != result.loss["separate"]["g0_t0"]
    assert result.loss["recommended"]["g0_t1"] == result.loss["separate"]["g0_t1"]

    bad = rundir.read_json(tmp_path / rundir.RECOMMENDATION)
    bad["groups"][0]["aux"] = [{"name": "no_such_aux"}]
    rundir.write_json(tmp_path / rundir.RECOMMENDATION, bad)
    with pytest.raises(MissingResultsError, match="no_such_aux"):
        verify_run(tmp_path, seeds=2, device="cpu")


def test_verify_cli_prints_a_table(tmp_path, capsys):
    _write_run(tmp_path, [_group(TASKS)], {t: 0 for t in TASKS})
    assert main(["verify", str(tmp_path), "--seeds", "2", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "gain vs separate" in out and "g1_t1" in out and "On the test split" in out
    result = rundir.read_json(tmp_path / rundir.VERIFY)
    # everything in one network at full sharing is the all-together baseline itself
    assert all(result["gain_vs_together"][t] == [0.0, 0.0, 0.0] for t in TASKS)
    # the run's report shows the verification at once (it said "Not verified yet" until
    # `taskscout report` was run)
    assert f"rebuilt {tmp_path / rundir.REPORT} with the verification" in out
    page = (tmp_path / rundir.REPORT).read_text(encoding="utf-8")
    assert "Not verified yet" not in page
    assert html.escape(result["verdict"], quote=False) in page


def test_verify_needs_a_recommendation(tmp_path, capsys):
    rundir.write_text(tmp_path / rundir.SPEC, _spec(tmp_path).to_json())
    with pytest.raises(MissingResultsError, match="recommendation.json"):
        verify_run(tmp_path, device="cpu")
    assert main(["verify", str(tmp_path), "--device", "cpu"]) == 2
    assert "recommendation.json" in capsys.readouterr().err


def test_one_seed_or_a_missing_run_is_refused_before_the_banner(tmp_path, capsys):
    # one seed printed "interval [-inf%, +inf%]"; a missing run printed "verifying ..." before its error
    _write_run(tmp_path, [_group(TASKS)], {t: 0 for t in TASKS})
    assert main(["verify", str(tmp_path), "--seeds", "1", "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "--seeds must be an int >= 2" in captured.err
    assert main(["verify", str(tmp_path / "nope")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "does not exist" in captured.err


def test_default_seed_count_is_the_studys_but_at_least_ten():
    assert default_seed_count(3) == 10
    assert default_seed_count(10) == 10
    assert default_seed_count(12) == 12


def test_a_recommended_auxiliary_is_trained_with_its_group(tmp_path):
    from taskscout.auxgen import generate_candidates
    from taskscout.data import build_dataset

    spec = _spec(tmp_path)
    aux = next(a.name for a in generate_candidates(build_dataset(spec), spec)
               if a.dropped is None and "g0_t0" in a.serves)
    _write_run(tmp_path, [_group(["g0_t0", "g0_t1"], aux=[aux]), _group(["g1_t0", "g1_t1"])],
               {"g0_t0": 0, "g0_t1": 0, "g1_t0": 1, "g1_t1": 1}, spec)
    result = verify_run(tmp_path, seeds=2, device="cpu")
    # per seed: the two recommended networks (one with the auxiliary), four single-task ones, all-together
    assert result.models_trained == 2 * (2 + 4 + 1)
    assert result.loss["recommended"]["g0_t0"] != result.loss["separate"]["g0_t0"]
