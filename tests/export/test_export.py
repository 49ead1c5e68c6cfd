"""`taskscout export` and `taskscout train`: the config schema and the export -> train round trip.

The run directory is planted by the test: spec.json for a tiny builtin:planted study,
candidates.json from the real generators, and a recommendation.json naming two groups with one
auxiliary each (a predict-inputs target, which removes its input column, and a related target).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from taskscout import rundir
from taskscout.auxgen import candidate_records, generate_candidates
from taskscout.cli import main
from taskscout.data import TEST, Head, build_dataset, load_frame
from taskscout.errors import DataError, MissingResultsError, SpecError
from taskscout.export import (
    CONFIG_SCHEMA_VERSION,
    TOP_KEYS,
    check_config,
    export_config,
    load_config,
    load_trained,
    spec_from_config,
    train_config,
    write_config,
)
from taskscout.spec import resolve_spec
from taskscout.training import evaluate_model

TASKS = ["g0_t0", "g0_t1", "g1_t0"]


def _study():
    return resolve_spec("builtin:planted", {
        "name": "tiny", "tasks": TASKS, "seed": 3,
        "data_options": {"n_rows": 300, "n_inputs": 12, "groups": 2, "tasks_per_group": 2},
        "model": {"depth": 2, "width": 8}, "training": {"epochs": 3, "batch_size": 64, "lr": 0.01},
        "aux": {"kinds": ["related", "predict_inputs"], "cap": 1},
    })


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """(run_dir, names of the two recommended auxiliaries, the data set)."""
    d = tmp_path_factory.mktemp("export") / "run"
    spec = _study()
    ds = build_dataset(spec)
    cands = generate_candidates(ds, spec)
    kept = [c for c in cands if c.dropped is None]
    inputs_aux = next(c for c in kept if c.kind == "predict_inputs" and "g0_t0" in c.serves)
    related_aux = next(c for c in kept if c.kind == "related" and "g1_t0" in c.serves)
    rundir.write_text(d / rundir.SPEC, spec.to_json())
    rundir.write_json(d / rundir.CANDIDATES, candidate_records(ds, cands))
    rundir.write_json(d / rundir.RECOMMENDATION, {
        "schema_version": 1, "tasks": TASKS,
        "groups": [
            {"tasks": ["g0_t0", "g0_t1"], "branch_layer": 1, "branch_source": "depth", "score_source": "measured",
             "aux": [{"name": inputs_aux.name, "kind": "predict_inputs", "serves": ["g0_t0"], "expected_gain": {"g0_t0": 0.02}, "ci": {"g0_t0": [0.0, 0.04]}}],
             "expected_gain": {"g0_t0": 0.1, "g0_t1": 0.05}, "ci": {"g0_t0": [0.05, 0.15], "g0_t1": [0.0, 0.1]}},
            {"tasks": ["g1_t0"], "branch_layer": 2, "branch_source": "default", "score_source": "single",
             "aux": [{"name": related_aux.name, "kind": "related", "serves": ["g1_t0"], "expected_gain": {"g1_t0": 0.03}, "ci": {"g1_t0": [0.01, 0.05]}}],
             "expected_gain": {"g1_t0": 0.0}, "ci": {"g1_t0": [0.0, 0.0]}},
        ],
        "assignment": {"g0_t0": 0, "g0_t1": 0, "g1_t0": 1},
        "budget": {"networks": 2, "requested": None}, "pareto": [], "verdict": "Train 2 networks.", "reasons": [],
    })
    return d, inputs_aux, related_aux, ds


@pytest.fixture(scope="module")
def config(planted):
    return export_config(planted[0])


def test_config_schema(config, planted):
    _, inputs_aux, related_aux, _ = planted
    assert tuple(config) == TOP_KEYS
    assert config["schema_version"] == CONFIG_SCHEMA_VERSION == 1 and isinstance(config["taskscout_version"], str)
    data = config["data"]
    assert data["source"] == "builtin:planted" and data["tasks"] == TASKS and data["inputs"] is None
    assert data["options"] == {"n_rows": 300, "n_inputs": 12, "groups": 2, "tasks_per_group": 2}
    assert config["split"] == {"val": 0.2, "test": 0.2, "by": "row", "per_segment": False, "seed": 3} and config["seed"] == 3
    assert (data["task_column"], data["targets"], data["min_rows"]) == (None, [], 10)  # wide: no segments
    assert config["preprocessing"]["version"] == 1
    assert config["auxiliary_generation"]["kinds"] == ["related", "predict_inputs"]
    assert config["model"] == {"depth": 2, "width": 8, "adversarial_lambda": 1.0}
    t = config["training"]
    assert (t["epochs"], t["batch_size"], t["loss_weighting"]) == (3, 64, "equal")
    assert t["optimiser"] == {"name": "adam", "lr": 0.01, "weight_decay": 0.0}
    g0, g1 = config["groups"]
    assert (g0["name"], g0["tasks"], g0["serves"], g0["branch_layer"]) == ("g0_t0|g0_t1", ["g0_t0", "g0_t1"], ["g0_t0", "g0_t1"], 1)
    assert (g1["name"], g1["tasks"], g1["serves"], g1["branch_layer"]) == ("g1_t0", ["g1_t0"], ["g1_t0"], 2)
    a = g0["auxiliaries"][0]
    assert a["name"] == inputs_aux.name and a["kind"] == "predict_inputs" and a["type"] == inputs_aux.type
    assert a["drops_inputs"] == list(inputs_aux.drops_inputs) and a["training_only"] is inputs_aux.training_only
    assert a["provenance"]["columns"] == inputs_aux.provenance["columns"]
    assert a["provenance"]["transform"] == inputs_aux.provenance["transform"]
    assert g0["loss_weights"] == {"g0_t0": 1.0, "g0_t1": 1.0, inputs_aux.name: 1.0}
    assert g1["auxiliaries"][0]["name"] == related_aux.name
    # Plain values only, and the same after a trip through either file format.
    assert json.loads(json.dumps(config)) == config


@pytest.mark.parametrize("suffix", ["yaml", "json"])
def test_config_file_round_trip(config, tmp_path, suffix):
    path = write_config(config, tmp_path / f"train.{suffix}")
    text = path.read_text()
    assert (json.loads(text) if suffix == "json" else yaml.safe_load(text)) == config
    assert load_config(path) == config


def test_spec_from_config_rebuilds_the_study_settings(config):
    spec, study = spec_from_config(config), _study()
    for part in ("model", "split", "aux"):
        assert getattr(spec, part) == getattr(study, part)
    assert (spec.data, spec.tasks, spec.seed, spec.data_options) == (study.data, study.tasks, study.seed, study.data_options)
    t, s = spec.training, study.training
    assert (t.epochs, t.batch_size, t.lr, t.weight_decay, t.patience, t.min_epochs, t.weighting) == (
        s.epochs, s.batch_size, s.lr, s.weight_decay, s.patience, s.min_epochs, s.weighting)


def test_export_then_train_round_trip(planted, tmp_path, capsys):
    run_dir, inputs_aux, related_aux, ds = planted
    cfg_path = tmp_path / "train.yaml"
    assert main(["export", str(run_dir), "--out", str(cfg_path)]) == 0
    out = tmp_path / "models"
    assert main(["train", str(cfg_path), "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    for t in TASKS:
        assert t in printed

    metrics = rundir.read_json(out / "metrics.json")
    rec = rundir.read_json(run_dir / rundir.RECOMMENDATION)
    # The trained groups are the recommended ones: tasks, branch layers, auxiliaries.
    assert [g["tasks"] for g in metrics["groups"]] == [g["tasks"] for g in rec["groups"]]
    assert [g["branch_layer"] for g in metrics["groups"]] == [g["branch_layer"] for g in rec["groups"]]
    assert [g["auxiliaries"] for g in metrics["groups"]] == [[a["name"] for a in g["aux"]] for g in rec["groups"]]
    assert {t: m["group"] for t, m in metrics["tasks"].items()} == {"g0_t0": "g0_t0|g0_t1", "g0_t1": "g0_t0|g0_t1", "g1_t0": "g1_t0"}
    assert {t: m["metric_name"] for t, m in metrics["tasks"].items()} == {"g0_t0": "rmse", "g0_t1": "auc", "g1_t0": "rmse"}

    # Checkpoints load with weights_only=True and rebuild networks that reproduce the test losses.
    test_rows = ds.split == TEST
    for k, g in enumerate(metrics["groups"]):
        ckpt = torch.load(out / g["checkpoint"], weights_only=True)
        assert ckpt["plan"]["branch_layer"] == g["branch_layer"] and ckpt["best_epoch"] == g["best_epoch"]
        net, _ = load_trained(out / g["checkpoint"])
        names = [h["name"] for h in ckpt["heads"]]
        assert [names[t] for t in net.targets] == g["tasks"] + g["auxiliaries"]
        X = ds.X[test_rows]
        Y = np.full((int(test_rows.sum()), len(names)), np.nan)
        for t in TASKS:
            Y[:, names.index(t)] = ds.Y[test_rows, ds.task_names.index(t)]
        losses, _ = evaluate_model(net, X, Y, [Head(**h) for h in ckpt["heads"]])
        for t in g["tasks"]:
            assert losses[names.index(t)] == pytest.approx(g["test"][t]["loss"], rel=1e-4, abs=1e-6)
        if k == 0:  # the predict-inputs auxiliary removes its column from the inputs
            dropped = [ds.feature_names.index(c) for c in inputs_aux.drops_inputs]
            assert ckpt["plan"]["dropped_features"] == dropped
            assert float(net.input_mask[dropped[0]]) == 0.0


def test_config_errors_name_the_problem(config, tmp_path):
    def broken(**change):
        c = json.loads(json.dumps(config))
        for path, value in change.items():
            node = c
            keys = path.split("__")
            for key in keys[:-1]:
                node = node[int(key)] if isinstance(node, list) else node[key]
            node[keys[-1]] = value
        return c

    with pytest.raises(SpecError, match="schema_version 2"):
        check_config(broken(schema_version=2))
    with pytest.raises(SpecError, match=r"groups\[0\].branch_layer in .* must be an int in \[0, 2\]"):
        check_config(broken(groups__0__branch_layer=5))
    with pytest.raises(SpecError, match="'g1_t0' is served by groups"):
        check_config(broken(groups__0__serves=["g0_t0", "g1_t0"], groups__0__tasks=["g0_t0", "g0_t1", "g1_t0"]))
    with pytest.raises(SpecError, match="'g0_t1' is served by no group"):
        check_config(broken(groups__0__serves=["g0_t0"]))
    with pytest.raises(SpecError, match="unknown key 'grups'"):
        check_config({**config, "grups": []})
    with pytest.raises(SpecError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(broken(schema_version=0)))
    assert main(["train", str(bad)]) == 2


def test_train_refuses_auxiliaries_that_no_longer_match_the_data(config, tmp_path):
    c = json.loads(json.dumps(config))
    c["groups"][0]["auxiliaries"][0]["provenance"]["columns"] = ["x99"]
    with pytest.raises(DataError, match="differs from the config's provenance"):
        train_config(c, out_dir=tmp_path / "m", device="cpu")
    c = json.loads(json.dumps(config))
    c["groups"][1]["auxiliaries"][0]["name"] = "nonexistent__aux"
    c["groups"][1]["loss_weights"] = {"g1_t0": 1.0, "nonexistent__aux": 0.5}
    with pytest.raises(DataError, match="not among the"):
        train_config(c, out_dir=tmp_path / "m", device="cpu")
    assert not (tmp_path / "m").exists()


def test_export_needs_candidates_for_auxiliaries(planted, tmp_path):
    run_dir = planted[0]
    d = tmp_path / "run"
    d.mkdir()
    for name in (rundir.SPEC, rundir.RECOMMENDATION):
        (d / name).write_text((run_dir / name).read_text())
    with pytest.raises(MissingResultsError, match="candidates.json"):
        export_config(d)
    with pytest.raises(MissingResultsError, match="recommendation.json"):
        export_config(tmp_path)
    assert main(["export", str(tmp_path / "none"), "--out", str(tmp_path / "x.yaml")]) == 2


def test_export_format_flag(planted, tmp_path):
    out = tmp_path / "cfg.txt"
    assert main(["export", str(planted[0]), "--out", str(out), "--format", "json"]) == 0
    assert json.loads(out.read_text())["schema_version"] == 1
    assert main(["export", str(planted[0]), "--out", str(out), "--format", "toml"]) == 2


def test_export_then_train_with_a_non_main_task(tmp_path, capsys):
    """A study whose `tasks` include one outside `main` (as studies/seattle_weather.toml): the
    recommendation serves only the main tasks, the other task is used as an auxiliary, and the
    exported config trains without asking for a group to serve it."""
    spec = resolve_spec("builtin:planted", {
        "name": "aux_task", "tasks": TASKS, "main": ["g0_t0", "g0_t1"], "seed": 3,
        "data_options": {"n_rows": 300, "n_inputs": 12, "groups": 2, "tasks_per_group": 2},
        "model": {"depth": 2, "width": 8}, "training": {"epochs": 3, "batch_size": 64, "lr": 0.01},
        "aux": {"kinds": ["related"], "cap": 3},
    })
    ds = build_dataset(spec)
    cands = generate_candidates(ds, spec)
    aux = next(c for c in cands if c.provenance["columns"] == ["g1_t0"])
    run_dir = tmp_path / "run"
    rundir.write_text(run_dir / rundir.SPEC, spec.to_json())
    rundir.write_json(run_dir / rundir.CANDIDATES, candidate_records(ds, cands))
    rundir.write_json(run_dir / rundir.RECOMMENDATION, {
        "schema_version": 1, "tasks": ["g0_t0", "g0_t1"],
        "groups": [{"tasks": ["g0_t0", "g0_t1"], "serves": ["g0_t0", "g0_t1"], "branch_layer": 1,
                    "aux": [{"name": aux.name, "kind": "related", "serves": ["g0_t0"]}],
                    "expected_gain": {"g0_t0": 0.1, "g0_t1": 0.05}, "ci": {"g0_t0": [0.0, 0.2], "g0_t1": [0.0, 0.1]}}],
        "assignment": {"g0_t0": 0, "g0_t1": 0}, "budget": {"networks": 1},
    })
    cfg_path = tmp_path / "train.yaml"
    assert main(["export", str(run_dir), "--out", str(cfg_path)]) == 0
    assert "1 network(s) for 2 task(s)" in capsys.readouterr().out
    cfg = load_config(cfg_path)
    # The data keeps every task (the auxiliary is rebuilt from g1_t0); the groups serve the main ones.
    assert cfg["data"]["tasks"] == TASKS and cfg["data"]["main"] == ["g0_t0", "g0_t1"]
    assert [g["serves"] for g in cfg["groups"]] == [["g0_t0", "g0_t1"]]
    out = tmp_path / "models"
    assert main(["train", str(cfg_path), "--out", str(out), "--device", "cpu"]) == 0
    metrics = rundir.read_json(out / "metrics.json")
    assert sorted(metrics["tasks"]) == ["g0_t0", "g0_t1"]
    assert metrics["groups"][0]["auxiliaries"] == [aux.name]

    # A main task must still be served; a non-main task may be, by a group that trains it.
    c = json.loads(json.dumps(cfg))
    c["groups"][0]["serves"] = ["g0_t0"]
    with pytest.raises(SpecError, match="main task 'g0_t1' is served by no group"):
        check_config(c)
    c = json.loads(json.dumps(cfg))
    c["groups"].append({"tasks": ["g1_t0"], "serves": ["g1_t0"], "branch_layer": 2})
    assert check_config(c)["groups"][1]["serves"] == ["g1_t0"]
    c["data"]["main"] = ["g0_t0", "nope"]
    with pytest.raises(SpecError, match=r"data.main in .* must be a list drawn from data.tasks"):
        check_config(c)


def test_config_finds_a_data_file_from_any_directory(tmp_path, monkeypatch, capsys):
    """spec.json keeps a data path as the search was given it (relative to where it ran); the
    config stores it absolute, so `train` finds the data from any directory."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    options = {"n_rows": 300, "n_inputs": 12, "groups": 2, "tasks_per_group": 2}
    load_frame("builtin:planted", options).to_csv(project / "data.csv", index=False)
    monkeypatch.chdir(project)
    spec = resolve_spec("data.csv", {"name": "csv", "tasks": TASKS, "seed": 3, "model": {"depth": 2, "width": 8},
                                     "training": {"epochs": 2, "batch_size": 64}})
    assert spec.data == "data.csv"
    rundir.write_text(project / "run" / rundir.SPEC, spec.to_json())
    rundir.write_json(project / "run" / rundir.RECOMMENDATION, {
        "schema_version": 1, "tasks": TASKS, "groups": [{"tasks": TASKS, "branch_layer": 2, "aux": []}],
        "assignment": {t: 0 for t in TASKS},
    })
    assert main(["export", "run", "--out", "configs/train.yaml"]) == 0
    cfg_path = project / "configs" / "train.yaml"
    assert load_config(cfg_path)["data"]["source"] == str(project / "data.csv")

    monkeypatch.chdir(elsewhere)
    assert main(["train", str(cfg_path), "--out", "models", "--device", "cpu"]) == 0
    assert sorted(rundir.read_json(elsewhere / "models" / "metrics.json")["tasks"]) == sorted(TASKS)

    # A config exported before paths were absolute holds the path relative to where the search
    # ran: read from the working directory when the config's folder has no such file.
    c = yaml.safe_load(cfg_path.read_text())
    c["data"]["source"] = "data.csv"
    cfg_path.write_text(yaml.safe_dump(c))
    monkeypatch.chdir(project)
    assert load_config(cfg_path)["data"]["source"] == str(project / "data.csv")
    monkeypatch.chdir(elsewhere)

    # A relative path written by hand is read from the config's folder, not from the caller's.
    c = yaml.safe_load(cfg_path.read_text())
    c["data"]["source"] = "../data.csv"
    cfg_path.write_text(yaml.safe_dump(c))
    assert load_config(cfg_path)["data"]["source"] == str(project / "data.csv")
    c["data"]["source"] = "gone.csv"
    cfg_path.write_text(yaml.safe_dump(c))
    with pytest.raises(DataError, match=r"data.source 'gone.csv' of training config .* neither in the config's folder"):
        load_config(cfg_path)

    # Exported from a directory where the relative path names nothing: refused, nothing written.
    capsys.readouterr()
    assert main(["export", str(project / "run"), "--out", "lost.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'data.csv'" in err and "run `taskscout export` from" in err
    assert not (elsewhere / "lost.yaml").exists()


@pytest.mark.parametrize(("text", "where"), [
    ("schema_version: 1\nstudy: a: b\n", "line 2, column 9: mapping values are not allowed here"),
    ("schema_version: 1\ngroups: [1, 2\n",
     "line 3, column 1: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence at line 2, column 9)"),
    ("schema_version: 1\nstudy: \x07\n", "line 2, column 8: unacceptable character #x0007: special characters are not allowed"),
    (b"schema_version: \xff\n", "is not UTF-8 text"),
])
def test_invalid_config_file_is_one_line_naming_the_place(tmp_path, capsys, text, where):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: training config '{bad}' ")
    assert where in err
    assert not (tmp_path / "bad-models").exists()


def test_export_format_follows_the_suffix_or_is_refused(planted, tmp_path, capsys):
    run_dir = str(planted[0])
    assert main(["export", run_dir, "--out", str(tmp_path / "a.yml")]) == 0
    assert yaml.safe_load((tmp_path / "a.yml").read_text())["schema_version"] == 1
    assert main(["export", run_dir, "--out", str(tmp_path / "a.JSON")]) == 0
    assert json.loads((tmp_path / "a.JSON").read_text())["schema_version"] == 1
    capsys.readouterr()
    for out, flags, says in [
        ("x.txt", [], "suffix '.txt'"),
        ("train", [], "no suffix"),
        ("x.json", ["--format", "yaml"], "--format yaml but --out"),
        ("x.yaml", ["--format", "json"], "--format json but --out"),
    ]:
        assert main(["export", run_dir, "--out", str(tmp_path / out), *flags]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err and out in err, err
        assert not (tmp_path / out).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.JSON", "a.yml"]


def test_output_locations_that_cannot_be_written_are_refused_up_front(planted, config, tmp_path, capsys):
    run_dir = str(planted[0])
    afile = tmp_path / "afile"
    afile.write_text("keep me\n")
    (tmp_path / "somedir").mkdir()
    (tmp_path / "cfgs.yaml").mkdir()
    cfg = write_config(config, tmp_path / "c.yaml")
    (tmp_path / "c-models").write_text("not a directory\n")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    capsys.readouterr()

    def refused(argv, *says):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        for s in says:
            assert s in err, err

    refused(["export", run_dir, "--out", str(afile / "x.yaml")], f"--out '{afile / 'x.yaml'}'", f"'{afile}' is a file")
    refused(["export", run_dir, "--out", str(afile / "sub" / "x.yaml")], f"'{afile}' is a file")
    refused(["export", run_dir, "--out", str(tmp_path / "somedir")], f"--out '{tmp_path / 'somedir'}' is a directory",
            f"'{tmp_path / 'somedir' / 'train.yaml'}'")
    refused(["export", run_dir, "--out", str(tmp_path / "cfgs.yaml")], "is a directory")
    refused(["train", str(cfg), "--out", str(afile)], f"--out '{afile}' is a file", "directory")
    refused(["train", str(cfg)], f"the default output directory '{tmp_path / 'c-models'}' (no --out) is a file")
    refused(["train", str(cfg), "--out", str(afile / "models")], f"'{afile}' is a file")
    if os.path.isdir("/proc/self"):  # Linux: /proc takes no new files, even from root
        refused(["export", run_dir, "--out", "/proc/x.yaml"], "--out '/proc/x.yaml'", "'/proc' does not accept new files")
        refused(["train", str(cfg), "--out", "/proc/models"], "'/proc' does not accept new files")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert afile.read_text() == "keep me\n"


def test_a_failed_write_is_one_error(config, tmp_path, monkeypatch):
    def full(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rundir, "write_text", full)
    with pytest.raises(SpecError, match=r"cannot write '.*c\.yaml': No space left on device; free space"):
        write_config(config, tmp_path / "c.yaml")



def test_a_train_whose_writes_fail_leaves_the_earlier_models_as_they_were(config, tmp_path, monkeypatch):
    out = tmp_path / "models"
    train_config(config, out_dir=out, device="cpu")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "metrics.json" in before and "group_1.pt" in before
    calls = []
    real_fsync = os.fsync

    def disk_fills_up(fd):  # the first checkpoint is written, then the disk is full
        calls.append(fd)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(rundir.os, "fsync", disk_fills_up)
    with pytest.raises(SpecError, match=r"cannot write '.*models': No space left on device"):
        train_config({**config, "seed": config["seed"] + 1}, out_dir=out, device="cpu")  # other weights
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

def test_recommended_auxiliary_serving_two_members_is_exported_once(planted, tmp_path):
    # recommend() lists an auxiliary once per group, with every served task it helps

    from taskscout.grouping import recommend

    run_dir, inputs_aux, _, _ = planted
    d = tmp_path / "run"
    d.mkdir()
    for name in (rundir.SPEC, rundir.CANDIDATES):
        (d / name).write_bytes((run_dir / name).read_bytes())
    rows = [(s, t, 0.12 if {s, t} == {"g0_t0", "g0_t1"} else -0.01, 0.0, 0.0, 3, "measured")
            for s in TASKS for t in TASKS if s != t]
    rows = [(s, t, g, g - 0.04, g + 0.04, n, m) for s, t, g, _, _, n, m in rows]
    rows += [(inputs_aux.name, "g0_t0", 0.02, 0.01, 0.03, 3, "measured"),
             (inputs_aux.name, "g0_t1", 0.05, 0.01, 0.09, 3, "measured")]
    affinity = pd.DataFrame(rows, columns=list(rundir.AFFINITY_COLUMNS))
    rec = recommend(spec_tasks=TASKS, affinity=affinity, depth_L=2, candidates=rundir.read_json(d / rundir.CANDIDATES))
    assert [g["tasks"] for g in rec["groups"]] == [["g0_t0", "g0_t1"], ["g1_t0"]]
    rundir.write_json(d / rundir.RECOMMENDATION, rec)
    cfg = export_config(d)
    (aux,) = cfg["groups"][0]["auxiliaries"]
    assert aux["name"] == inputs_aux.name
    assert aux["expected_gain"] == pytest.approx({"g0_t0": 0.02, "g0_t1": 0.05})
    assert cfg["groups"][0]["loss_weights"] == {"g0_t0": 1.0, "g0_t1": 1.0, inputs_aux.name: 1.0}
