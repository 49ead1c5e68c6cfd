"""Long format: task names, selection, per-segment splits, notes, and every bad input (exit 2,
one line on stderr, nothing written) through validate, candidates and search."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from taskscout.data import build_dataset, prepare
from taskscout.data import segments as seg
from taskscout.errors import DataError
from taskscout.spec import resolve_spec

from ..test_cli_validate import _listing, assert_user_error, run

SIZES = {"north": 60, "south": 45, "east": 30, "tiny": 6}


def long_frame(seed=0):
    rng = np.random.default_rng(seed)
    parts = []
    for k, (region, n) in enumerate(SIZES.items()):
        x = rng.normal(size=n)
        parts.append(pd.DataFrame({
            "region": region, "x": x, "z": rng.normal(size=n), "day": np.arange(n) + 100 * k,
            "sales": x * (k + 1) + 0.1 * rng.normal(size=n), "churn": (x + rng.normal(size=n) > 0).astype(int),
        }))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    long_frame().to_csv(tmp_path / "long.csv", index=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def spec_of(path="long.csv", **kw):
    return resolve_spec(path, {"task_column": "region", "targets": ["sales"], **kw})


# ---------------------------------------------------------------- names and selection


def test_one_target_names_tasks_by_segment_value_and_leaves_small_segments_out(workdir):
    ds = build_dataset(spec_of())
    assert ds.task_names == ("north", "south", "east")
    assert any("tiny (6 rows)" in n and "min_rows=10" in n for n in ds.notes)
    assert set(ds.inputs) == {"x", "z", "day", "churn"}  # neither the task column nor the target
    # each task is labelled on its own segment's rows only
    frame = ds.frame
    for k, name in enumerate(ds.task_names):
        labelled = np.isfinite(ds.Y[:, k])
        assert (frame.loc[labelled, "region"] == name).all() and labelled.sum() == SIZES[name]
    assert ds.meta["task_column"] == "region" and ds.meta["segment"]["north"] == "north"


def test_several_targets_name_tasks_segment_colon_target(workdir):
    spec = spec_of(targets=["sales", "churn"], tasks=["north", "south:churn"], main=["north:sales"])
    spec = prepare.resolve_segments(spec)
    assert spec.tasks == ("north:sales", "north:churn", "south:churn")
    assert spec.main == ("north:sales",)
    ds = build_dataset(spec)
    assert [t.type for t in ds.tasks] == ["regression", "binary", "binary"]
    assert prepare.resolve_segments(spec) == spec  # resolving again changes nothing (spec.json round trip)


def test_segment_labels_write_numbers_without_a_trailing_zero():
    assert seg.segment_label(np.float64(17.0)) == "17" and seg.segment_label(3) == "3"
    assert seg.segment_label(" a ") == "a" and seg.segment_label(2.5) == "2.5"
    assert seg.task_name("17", "y", 1) == "17" and seg.task_name("17", "y", 2) == "17:y"


def test_min_rows_keeps_a_small_segment_when_lowered(workdir):
    ds = build_dataset(spec_of(min_rows=5))
    assert ds.task_names == ("north", "south", "east", "tiny")
    assert not any("min_rows" in n for n in ds.notes)


def test_task_column_is_an_input_only_when_asked(workdir):
    ds = build_dataset(spec_of(inputs=["x", "region"]))
    assert ds.inputs == ("x", "region")
    assert any(f.startswith("region=") for f in ds.feature_names)


# ---------------------------------------------------------------- splits


def test_random_split_is_per_segment_and_does_not_depend_on_the_other_segments(workdir):
    ds = build_dataset(spec_of())
    for name in ds.task_names:
        rows = (ds.frame["region"] == name).to_numpy()
        counts = np.bincount(ds.split[rows], minlength=3)
        n = rows.sum()
        assert list(counts) == [n - 2 * round(0.2 * n), round(0.2 * n), round(0.2 * n)]
    alone = build_dataset(spec_of(tasks=["south"]))
    assert alone.task_names == ("south",) and len(alone.frame) == SIZES["south"]
    south = (ds.frame["region"] == "south").to_numpy()
    assert list(alone.split) == list(ds.split[south])


def test_time_split_puts_each_segments_latest_rows_in_test(workdir):
    ds = build_dataset(spec_of(time_column="day"))
    for name in ds.task_names:
        rows = (ds.frame["region"] == name).to_numpy()
        day, split = ds.frame.loc[rows, "day"].to_numpy(), ds.split[rows]
        assert day[split == 2].min() > day[split == 1].max() > day[split == 0].max()


# ---------------------------------------------------------------- the commands


def test_validate_candidates_and_search_name_the_left_out_segments(capsys, workdir):
    code, out, err = run(capsys, "validate", "long.csv", "--task-column", "region", "--target", "sales")
    assert code == 0, err
    assert "segments   3 of 'region', targets sales: 3 tasks (min_rows 10)" in out
    assert "per segment of 'region'" in out and "tiny (6 rows)" in out
    code, out, err = run(capsys, "candidates", "long.csv", "--task-column", "region", "--target", "sales",
                         "--aux-kinds", "related", "--json")
    assert code == 0, err
    assert "tiny (6 rows)" in err
    related = [c for c in json.loads(out) if c["kind"] == "related"]
    assert {c["name"].split("__")[0] for c in related} <= {"north", "south", "east"}
    assert {s for c in related for s in c["serves"]} == {"north", "south", "east"}


def test_search_report_export_train_verify_on_a_long_table(capsys, workdir):
    args = ["--task-column", "region", "--target", "sales", "--epochs", "3", "--seeds", "2", "--out", "run",
            "--skip", "aux", "--skip", "depth", "--skip", "subsets", "--skip", "estimators", "--device", "cpu"]
    code, out, err = run(capsys, "search", "long.csv", *args)
    assert code == 0, err
    assert "tiny (6 rows)" in out + err
    spec = json.loads((workdir / "run" / "spec.json").read_text())
    assert spec["task_column"] == "region" and spec["targets"] == ["sales"]
    assert spec["tasks"] == ["north", "south", "east"]
    rec = json.loads((workdir / "run" / "recommendation.json").read_text())
    assert set(rec["assignment"]) == {"north", "south", "east"}
    assert run(capsys, "report", "run")[0] == 0
    code, out, err = run(capsys, "export", "run", "--out", "train.yaml")
    assert code == 0, err
    import yaml

    config = yaml.safe_load((workdir / "train.yaml").read_text())
    assert config["data"]["task_column"] == "region" and config["data"]["targets"] == ["sales"]
    code, out, err = run(capsys, "train", "train.yaml", "--out", "trained")
    assert code == 0, err
    metrics = (workdir / "trained").rglob("*.json")
    text = " ".join(p.read_text() for p in metrics)
    assert all(s in text for s in ("north", "south", "east"))  # per-segment test metrics
    code, out, err = run(capsys, "verify", "run")
    assert code == 0, err
    verdict = json.loads((workdir / "run" / "verify.json").read_text())
    assert set(verdict["tasks"]) == {"north", "south", "east"}


# ---------------------------------------------------------------- bad input


LONG = ["--task-column", "region", "--target", "sales"]


@pytest.mark.parametrize("command", ["validate", "candidates", "search"])
def test_task_column_not_in_the_data(capsys, workdir, command):
    assert_user_error(capsys, workdir, [command, "long.csv", "--task-column", "regoin", "--target", "sales"],
                      "task column 'regoin' is not in long.csv", "region")


def test_target_not_in_the_data(capsys, workdir):
    assert_user_error(capsys, workdir, ["search", "long.csv", "--task-column", "region", "--target", "sale"],
                      "target column 'sale' is not in long.csv")


def test_target_is_the_task_column(capsys, workdir):
    assert_user_error(capsys, workdir, ["search", "long.csv", "--task-column", "region", "--target", "region"],
                      "target 'region' is the task column")


def test_task_column_equal_to_time_column(capsys, workdir):
    assert_user_error(capsys, workdir, ["search", "long.csv", *LONG, "--time-column", "region"],
                      "task column 'region' is also the time column")


def test_target_without_task_column(capsys, workdir):
    assert_user_error(capsys, workdir, ["validate", "long.csv", "--target", "sales"],
                      "without a task column", "--task-column")


def test_empty_cells_in_the_task_column(capsys, workdir):
    frame = long_frame()
    frame.loc[[3, 70], "region"] = np.nan
    frame.to_csv(workdir / "holes.csv", index=False)
    assert_user_error(capsys, workdir, ["search", "holes.csv", *LONG],
                      "task column 'region' of holes.csv is empty in 2 of", "would be dropped")


def test_a_segment_without_labels_in_a_split(capsys, workdir):
    frame = long_frame()
    east = frame.index[frame["region"] == "east"]
    frame.loc[east[2:], "sales"] = np.nan  # 2 labelled rows left: some split of 'east' has none
    frame.to_csv(workdir / "sparse.csv", index=False)
    line = assert_user_error(capsys, workdir, ["search", "sparse.csv", *LONG],
                             "segment 'east' of 'region' has no labelled 'sales' in the")
    assert "split" in line


def test_more_segments_than_the_cap_without_a_selection(capsys, workdir, monkeypatch):
    monkeypatch.setattr(seg, "MAX_SEGMENTS", 2)
    assert_user_error(capsys, workdir, ["search", "long.csv", *LONG],
                      "has 3 segments", "more than 2", "--tasks")
    code, _, err = run(capsys, "validate", "long.csv", *LONG, "--tasks", "north,south")
    assert code == 0, err


@pytest.mark.parametrize(("value", "fragment"), [
    ("no|rth", "contains '|'"), ("no,rth", "contains ','"), ("no__rth", "contains '__'"), ("x", "is also a column name"),
])
def test_segment_values_that_collide_with_the_naming_scheme(capsys, workdir, value, fragment):
    frame = long_frame()
    frame.loc[frame["region"] == "north", "region"] = value
    frame.to_csv(workdir / "names.csv", index=False)
    assert_user_error(capsys, workdir, ["search", "names.csv", *LONG], fragment)


def test_a_colon_collides_only_with_several_targets(capsys, workdir):
    frame = long_frame()
    frame.loc[frame["region"] == "north", "region"] = "n:1"
    frame.to_csv(workdir / "colon.csv", index=False)
    assert run(capsys, "validate", "colon.csv", *LONG)[0] == 0
    assert_user_error(capsys, workdir, ["search", "colon.csv", *LONG, "--target", "churn"], "contains ':'")


def test_segment_values_written_alike(capsys, workdir):
    frame = long_frame()
    frame.loc[frame["region"] == "south", "region"] = " north"
    frame.to_csv(workdir / "alike.csv", index=False)
    assert_user_error(capsys, workdir, ["search", "alike.csv", *LONG], "both name the task 'north'")
    frame = long_frame()
    frame["region"] = frame["region"].astype(object)
    frame.loc[frame["region"] == "north", "region"] = 1
    frame.loc[frame["region"] == "south", "region"] = "1"
    with pytest.raises(DataError, match="1 and '1', which both name the task '1'"):
        build_dataset(spec_of(), frame)


def test_tasks_naming_a_column_in_long_format(capsys, workdir):
    assert_user_error(capsys, workdir, ["search", "long.csv", *LONG, "--tasks", "north,sales"],
                      "--tasks names 'sales', a column of long.csv", "segment values")
    assert_user_error(capsys, workdir, ["search", "long.csv", *LONG, "--tasks", "nort"],
                      "not a segment of task column 'region'", "north")


def test_a_target_constant_in_every_segment(capsys, workdir):
    frame = long_frame()
    frame["flat"] = 3.0
    frame.to_csv(workdir / "flat.csv", index=False)
    assert_user_error(capsys, workdir, ["search", "flat.csv", "--task-column", "region", "--target", "flat"],
                      "target 'flat' of flat.csv holds a single value in every segment")


def test_a_target_constant_in_some_segments_leaves_them_out(workdir):
    frame = long_frame()
    frame.loc[frame["region"] == "south", "sales"] = 2.0
    frame.to_csv(workdir / "some.csv", index=False)
    ds = build_dataset(spec_of("some.csv"))
    assert ds.task_names == ("north", "east")
    assert any("single target value" in n and "south" in n for n in ds.notes)


def test_a_non_numeric_regression_target(capsys, workdir):
    frame = long_frame()
    frame["grade"] = np.where(frame["x"] > 0, "high", "low")
    frame.loc[0, "grade"] = "mid"
    frame.to_csv(workdir / "text.csv", index=False)
    assert_user_error(capsys, workdir, ["search", "text.csv", "--task-column", "region", "--target", "grade",
                                        "--task-type", "grade=regression"],
                      "target 'grade' of text.csv is a regression target but holds non-numeric values")


def test_bad_long_input_writes_nothing_with_an_existing_run_dir(capsys, workdir):
    (workdir / "reports").mkdir()
    before = _listing(workdir)
    code, _, _ = run(capsys, "search", "long.csv", "--task-column", "region", "--target", "nope")
    assert code == 2 and _listing(workdir) == before


def test_spec_keys_are_checked_through_the_spec_rules():
    from taskscout.errors import SpecError

    with pytest.raises(SpecError, match="'min_rows' in the flags must be an int >= 3. Got 1 instead."):
        resolve_spec("x.csv", {"task_column": "r", "targets": ["y"], "min_rows": 1})
    with pytest.raises(SpecError, match="'targets' in the flags must be a list of column names"):
        resolve_spec("x.csv", {"task_column": "r", "targets": "y"})
    with pytest.raises(SpecError, match="without a target"):
        resolve_spec("x.csv", {"task_column": "r"})
    spec = resolve_spec("x.csv", {"task_column": "r", "targets": ["y"], "task_types": {"y": "binary"}})
    assert dataclasses.asdict(spec)["targets"] == ("y",) and spec.tasks == ()
