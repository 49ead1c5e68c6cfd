"""`taskscout validate`: a summary for good studies; for bad input exit 2, one line, nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from taskscout.cli import main, overrides_from_flags
from taskscout.errors import SpecError

ROOT = Path(__file__).resolve().parents[1]
N = 40


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A folder with good and bad data files, made the working directory."""
    rng = np.random.default_rng(0)
    good = pd.DataFrame({
        "x": rng.normal(size=N),
        "colour": rng.choice(["red", "blue"], size=N),
        "price": rng.normal(size=N),
        "sold": rng.integers(0, 2, size=N),
        "constant": np.ones(N),
        "answer": ["yes"] * N,
        "day": pd.date_range("2021-01-01", periods=N, freq="D").strftime("%Y-%m-%d"),
    })
    good["price_text"] = good["price"].round(2).astype(str)
    good.loc[5, "price_text"] = "about 3"
    good["early_only"] = np.where(np.arange(N) < 28, np.arange(N) % 2, np.nan)
    good["late_only"] = np.where(np.arange(N) >= 24, np.arange(N) % 2, np.nan)
    good.to_csv(tmp_path / "good.csv", index=False)

    bad_time = good.copy()
    bad_time.loc[3, "day"] = "the third"
    bad_time.to_csv(tmp_path / "bad_time.csv", index=False)
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "header_only.csv").write_text("x,price\n", encoding="utf-8")
    (tmp_path / "garbage.csv").write_bytes(bytes(rng.integers(0, 256, size=4096, dtype=np.uint8)))
    (tmp_path / "garbage.parquet").write_bytes(bytes(rng.integers(0, 256, size=4096, dtype=np.uint8)))
    (tmp_path / "dup.csv").write_text("x,price,x\n1,2,3\n4,5,6\n7,8,9\n", encoding="utf-8")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table([pa.array([1.0, 2.0]), pa.array([3.0, 4.0])], names=["x", "x"]), tmp_path / "dup.parquet")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _listing(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*"))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_user_error(capsys, folder: Path, argv: list[str], *fragments: str) -> str:
    """Exit 2, exactly one line on stderr holding every fragment, no traceback, no file written."""
    before = _listing(folder)
    code, out, err = run(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err + out
    for fragment in fragments:
        assert fragment in lines[0]
    assert _listing(folder) == before
    return lines[0]


# ---------------------------------------------------------------- bad input, one test each


def test_missing_file(capsys, workdir):
    assert_user_error(capsys, workdir, ["validate", "nowhere.csv", "--tasks", "price"],
                      "data file 'nowhere.csv' does not exist")


def test_missing_study_file(capsys, workdir):
    assert_user_error(capsys, workdir, ["validate", "nowhere.toml"], "study file 'nowhere.toml' does not exist")


def test_empty_csv(capsys, workdir):
    assert_user_error(capsys, workdir, ["validate", "empty.csv", "--tasks", "price"], "'empty.csv' is empty")


def test_csv_with_a_header_but_no_rows(capsys, workdir):
    assert_user_error(capsys, workdir, ["validate", "header_only.csv", "--tasks", "price"], "no data rows")


def test_unreadable_csv(capsys, workdir):
    assert_user_error(capsys, workdir, ["validate", "garbage.csv", "--tasks", "price"],
                      "'garbage.csv' is a binary file, not a CSV text file")


def test_unreadable_parquet(capsys, workdir):
    assert_user_error(capsys, workdir, ["validate", "garbage.parquet", "--tasks", "price"],
                      "cannot read 'garbage.parquet' as Parquet")


def test_csv_that_is_not_utf8(capsys, workdir):
    (workdir / "latin.csv").write_bytes("x,caf\xe9\n1,2\n3,4\n".encode("latin-1"))
    assert_user_error(capsys, workdir, ["validate", "latin.csv", "--tasks", "x"], "is not UTF-8 text")


def test_unknown_task_column_lists_close_matches(capsys, workdir):
    assert_user_error(capsys, workdir, ["validate", "good.csv", "--tasks", "prise"],
                      "task column 'prise' is not in good.csv", "did you mean 'price'")


def test_unknown_input_column_lists_close_matches(capsys, workdir):
    assert_user_error(capsys, workdir, ["validate", "good.csv", "--tasks", "price", "--inputs", "x,color"],
                      "input column 'color' is not in good.csv", "did you mean 'colour'")


@pytest.mark.parametrize(
    ("task", "split"),
    [("early_only", "test"), ("late_only", "train")],
)
def test_task_without_labelled_rows_in_a_split(capsys, workdir, task, split):
    message = assert_user_error(capsys, workdir, ["validate", "good.csv", "--tasks", task, "--time-column", "day"],
                                f"column '{task}' of good.csv is a task but has no labelled rows in the")
    assert f"the {split}" in message.replace("training", "train")


def test_constant_task(capsys, workdir):
    assert_user_error(capsys, workdir, ["validate", "good.csv", "--tasks", "constant"],
                      "column 'constant' of good.csv is constant", "cannot be learned")


def test_constant_regression_task(capsys, workdir):
    assert_user_error(capsys, workdir,
                      ["validate", "good.csv", "--tasks", "constant", "--task-type", "constant=regression"],
                      "is constant (1.0) in the training split")


def test_binary_task_with_one_class(capsys, workdir):
    assert_user_error(capsys, workdir, ["validate", "good.csv", "--tasks", "answer", "--task-type", "answer=binary"],
                      "column 'answer' of good.csv has only one class ('yes')", "a binary task needs two classes")


def test_non_numeric_regression_target(capsys, workdir):
    assert_user_error(capsys, workdir,
                      ["validate", "good.csv", "--tasks", "price_text", "--task-type", "price_text=regression"],
                      "is a regression task but holds non-numeric values such as 'about 3'")


def test_numeric_task_with_a_stray_text_cell(capsys, workdir):
    # without a type, price_text (numbers but for one 'about 3') was taken for 40 classes
    assert_user_error(capsys, workdir, ["validate", "good.csv", "--tasks", "price_text"],
                      f"column 'price_text' of good.csv holds numbers except 1 of its {N} non-empty cells, such as 'about 3'",
                      "clean those cells", "--task-type price_text=multiclass")


def test_duplicate_column_names_csv(capsys, workdir):
    assert_user_error(capsys, workdir, ["validate", "dup.csv", "--tasks", "price"],
                      "column name 'x' appears more than once in 'dup.csv'")


def test_duplicate_column_names_parquet(capsys, workdir):
    assert_user_error(capsys, workdir, ["validate", "dup.parquet", "--tasks", "x"],
                      "column name 'x' appears more than once in 'dup.parquet'")


def test_time_column_that_does_not_parse(capsys, workdir):
    assert_user_error(capsys, workdir, ["validate", "bad_time.csv", "--tasks", "price", "--time-column", "day"],
                      "time column 'day' of bad_time.csv does not parse", "row 3 holds 'the third'")


def test_unknown_key_in_study_file(capsys, workdir):
    (workdir / "typo.toml").write_text('data = "good.csv"\ntasks = ["price"]\n[model]\ndepht = 3\n', encoding="utf-8")
    assert_user_error(capsys, workdir, ["validate", "typo.toml"],
                      "unknown key 'model.depht' in study file 'typo.toml'", "did you mean 'depth'", "allowed keys")


def test_wrong_type_in_study_file(capsys, workdir):
    (workdir / "wrong.toml").write_text('data = "good.csv"\ntasks = ["price"]\n[training]\nepochs = "many"\n',
                                        encoding="utf-8")
    assert_user_error(capsys, workdir, ["validate", "wrong.toml"],
                      "'training.epochs' in study file 'wrong.toml' must be an int in [1, 10000]. Got 'many' instead.")


def test_wrong_value_in_a_flag(capsys, workdir):
    assert_user_error(capsys, workdir, ["validate", "good.csv", "--tasks", "price", "--set", "training.patience=0"],
                      "'training.patience' in the flags must be an int in [1, 10000]. Got 0 instead.")


def test_device_cuda_without_cuda(capsys, workdir, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert_user_error(capsys, workdir, ["validate", "good.csv", "--tasks", "price", "--device", "cuda"],
                      "device 'cuda' was requested but CUDA is not available", "--device cpu or auto")


def test_typer_usage_errors_exit_2(capsys, workdir):
    code, _, err = run(capsys, "validate", "good.csv", "--no-such-flag")
    assert code == 2 and "No such option" in err


def test_python_dash_m_prints_one_line_and_no_traceback(workdir):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(
        [sys.executable, "-m", "taskscout", "validate", "good.csv", "--tasks", "prise"],
        capture_output=True, text=True, env=env, cwd=workdir, timeout=120,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "error: task column 'prise' is not in good.csv (did you mean 'price', 'price_text'?); it has 10 columns"
    ]


def test_a_time_column_that_is_not_dates_gives_the_error_line_alone(workdir):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(
        [sys.executable, "-m", "taskscout", "validate", "good.csv", "--tasks", "price", "--time-column", "colour"],
        capture_output=True, text=True, env=env, cwd=workdir, timeout=120,
    )
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.strip().splitlines()  # no pandas warning before it
    assert line.startswith("error: time column 'colour' of good.csv does not parse as dates or numbers: row 0 holds")


# ---------------------------------------------------------------- good studies


@pytest.mark.parametrize("study", ["planted", "yeast", "seattle_weather"])
def test_example_studies_validate(capsys, study):
    code, out, err = run(capsys, "validate", str(ROOT / "studies" / f"{study}.toml"))
    assert code == 0, err
    assert out.splitlines()[0] == f"study      {study}"
    assert out.strip().endswith(f"a search would write to {Path('reports') / study}")


def test_planted_study_summary(capsys):
    code, out, _ = run(capsys, "validate", str(ROOT / "studies" / "planted.toml"), "--json")
    assert code == 0
    result = json.loads(out)
    summary, spec = result["summary"], result["spec"]
    assert summary["rows"] == 2400 and summary["inputs"] == 48
    assert list(summary["tasks"]) == [f"g{g}_t{i}" for g in range(3) for i in range(3)]
    assert {summary["tasks"][f"g{g}_t1"]["type"] for g in range(3)} == {"binary"}
    assert {summary["tasks"][f"g{g}_t0"]["type"] for g in range(3)} == {"regression"}
    for task in summary["tasks"].values():
        assert sum(task["labelled"].values()) == pytest.approx(0.25 * 2400, rel=0.2)
    assert spec["data_options"] == {"n_rows": 2400, "groups": 3, "tasks_per_group": 3, "label_fraction": 0.25, "seed": 0}
    assert (spec["model"]["depth"], spec["model"]["width"]) == (2, 64)


def test_yeast_summary(capsys):
    code, out, _ = run(capsys, "validate", "builtin:yeast", "--tasks", "Class1,Class14")
    assert code == 0
    assert "rows       2417 (train 1451, val 483, test 483)" in out
    assert "inputs     103 columns -> 103 features" in out  # the 12 unnamed labels are not inputs
    assert "Class14  binary     labelled 1451/483/483  balance 0: 99%, 1: 1%" in out


def test_seattle_weather_study_splits_by_date(capsys):
    code, out, _ = run(capsys, "validate", str(ROOT / "studies" / "seattle_weather.toml"), "--json")
    assert code == 0
    result = json.loads(out)
    assert result["spec"]["time_column"] == "date" and result["spec"]["main"] == ["weather"]
    assert result["summary"]["tasks"]["weather"]["type"] == "multiclass"
    assert result["summary"]["tasks"]["precipitation"]["type"] == "regression"


def test_an_identifier_column_is_left_out_of_the_inputs_with_a_note(capsys, workdir):
    rng = np.random.default_rng(0)
    pd.DataFrame({"id": [f"r{i}" for i in range(N)], "x": rng.normal(size=N), "y": rng.normal(size=N)}).to_csv(
        workdir / "ids.csv", index=False)
    code, out, err = run(capsys, "validate", "ids.csv", "--tasks", "y")
    assert code == 0 and err == ""
    assert "inputs     1 columns -> 1 features" in out
    assert f"note       input column 'id' left out: a different value in every row ({N} distinct values" in out
    code, out, _ = run(capsys, "validate", "ids.csv", "--tasks", "y", "--inputs", "id,x", "--json")
    summary = json.loads(out)["summary"]
    assert code == 0 and summary["inputs"] == 2 and summary["notes"] == []


def test_flags_win_over_set_and_over_the_study_file(capsys):
    argv = ["validate", str(ROOT / "studies" / "planted.toml"), "--json", "--set", "training.epochs=9",
            "--epochs", "7", "--set", "split.val=0.25", "--option", "n_rows=300", "--budget", "large"]
    code, out, _ = run(capsys, *argv)
    assert code == 0
    spec = json.loads(out)["spec"]
    assert spec["training"]["epochs"] == 7 and spec["training"]["seeds"] == 5  # large preset fills seeds
    assert spec["split"]["val"] == 0.25
    assert spec["data_options"]["n_rows"] == 300 and spec["data_options"]["groups"] == 3


def test_overrides_from_flags_builds_the_nested_mapping():
    flags = {"tasks": "a, b", "main": "a", "epochs": 5, "depth": 3, "skip": ["depth"], "cap": ["hints=2"],
             "option": ["groups=2", "label_fraction=0.5", "name=x"], "set": ["aux.kinds=[\"related\"]", "seed=4"],
             "device": None}
    out = overrides_from_flags(flags)
    assert out["tasks"] == ["a", "b"] and out["main"] == ["a"] and out["seed"] == 4
    assert out["training"] == {"epochs": 5} and out["model"] == {"depth": 3}
    assert out["aux"] == {"kinds": ["related"], "caps": {"hints": 2}}
    assert out["data_options"] == {"groups": 2, "label_fraction": 0.5, "name": "x"}
    assert out["search"]["phases"] == ["single", "pairs", "aux", "subsets", "selection"]  # estimators are opt-in
    assert "device" not in out


def test_phase_adds_the_estimators_to_the_default_phases_and_skip_still_wins():
    assert overrides_from_flags({"phase": ["estimators"]})["search"]["phases"] == [
        "single", "pairs", "aux", "depth", "subsets", "estimators", "selection"]
    assert overrides_from_flags({"phase": ["estimators"], "skip": ["aux", "estimators"]})["search"]["phases"] == [
        "single", "pairs", "depth", "subsets", "selection"]
    with pytest.raises(SpecError, match="--phase takes one of"):
        overrides_from_flags({"phase": ["estimator"]})


def test_a_task_with_many_classes_lists_the_first_twelve(capsys, tmp_path):
    # the balance line of a 40-class task ran to several KB
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=400), "kind": [f"k{i % 40:02d}" for i in range(400)]})
    frame.to_csv(tmp_path / "many.csv", index=False)
    code, out, _ = run(capsys, "validate", str(tmp_path / "many.csv"), "--tasks", "kind")
    assert code == 0
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("kind"))
    assert "k11:" in line and "k12:" not in line and line.endswith(", ... 28 more classes")
