"""`taskscout candidates` on the bundled Seattle weather data (daily, so future targets apply)."""

from __future__ import annotations

import json

import pytest

from taskscout.cli import main

SEATTLE = ["candidates", "builtin:seattle-weather", "--tasks", "weather,precipitation", "--time-column", "date"]


@pytest.fixture(scope="module")
def records():
    pytest.importorskip("vega_datasets")
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*SEATTLE, "--json"]) == 0
    return json.loads(out.getvalue())


def test_json_lists_every_kind_that_applies(records):
    kinds = {r["kind"] for r in records if r["dropped"] is None}
    assert kinds == {"related", "hints", "predict_inputs", "future"}
    for r in records:
        assert set(r) >= {"name", "kind", "serves", "type", "training_only", "labelled", "score", "dropped"}
        assert set(r["labelled"]) == {"train", "val", "test"}
        assert set(r["serves"]) <= {"weather", "precipitation"}
    names = {r["name"] for r in records}
    assert {"precipitation__related", "weather__related", "weather__future_1", "precipitation__future_1"} <= names
    future = next(r for r in records if r["name"] == "weather__future_1")
    assert future["training_only"] and future["labelled"]["train"] == 876  # the last training day has no next day


def test_table_says_why_quantization_and_adversarial_are_missing(capsys):
    pytest.importorskip("vega_datasets")
    assert main(SEATTLE) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["name", "kind", "serves", "type", "labelled", "train/val/test", "score", "dropped"]
    assert "quantization for weather: 'weather' is multiclass with unordered classes" in out
    assert "adversarial for weather: no nuisance columns named" in out


def test_adversarial_flag_adds_reversed_targets(capsys):
    pytest.importorskip("vega_datasets")
    assert main([*SEATTLE, "--adversarial", "wind", "--aux-kinds", "adversarial", "--json"]) == 0
    (rec,) = json.loads(capsys.readouterr().out)
    assert rec["name"] == "wind__adversarial" and rec["adversarial"] and rec["serves"] == ["weather", "precipitation"]


def test_hide_dropped(capsys):
    pytest.importorskip("vega_datasets")
    assert main([*SEATTLE, "--aux-kinds", "hints", "--aux-cap", "1", "--hide-dropped", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown and all(r["dropped"] is None for r in shown)
    assert main([*SEATTLE, "--aux-kinds", "hints", "--aux-cap", "1", "--json"]) == 0
    assert any(r["dropped"] for r in json.loads(capsys.readouterr().out))


def test_unknown_adversarial_column_is_a_one_line_error(capsys):
    pytest.importorskip("vega_datasets")
    assert main([*SEATTLE, "--adversarial", "windd"]) == 2
    err = capsys.readouterr().err
    assert "adversarial column 'windd'" in err and "wind" in err


def test_reads_a_study_file(tmp_path, capsys):
    pytest.importorskip("vega_datasets")
    study = tmp_path / "seattle_weather.toml"
    study.write_text(
        'data = "builtin:seattle-weather"\ntasks = ["weather", "precipitation", "temp_max"]\n'
        'main = ["weather"]\ntime_column = "date"\n[aux]\nhorizon = 2\ncap = 4\n'
    )
    assert main(["candidates", str(study), "--json"]) == 0
    kept = {r["name"] for r in json.loads(capsys.readouterr().out) if r["dropped"] is None}
    assert {"precipitation__related", "temp_max__related", "weather__future_1", "weather__future_2"} <= kept


def test_an_identifier_column_with_a_regression_main_task(tmp_path, capsys):
    # a text column with a value per row once crashed the mutual information of the regression target
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 200
    x = rng.normal(size=n)
    path = tmp_path / "ids.csv"
    pd.DataFrame({"id": [f"r{i}" for i in range(n)], "x": x, "y": 2 * x + rng.normal(size=n)}).to_csv(path, index=False)
    assert main(["candidates", str(path), "--tasks", "y", "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("note: input column 'id' left out")
    records = json.loads(captured.out)
    assert {r["name"] for r in records} == {"x__quartile", "x__abs", "x__square"}  # one input: nothing to predict
    assert main(["candidates", str(path), "--tasks", "y", "--inputs", "id,x", "--aux-kinds", "predict_inputs", "--json"]) == 0
    # named as an input, the identifier stays; its importance is unknown, so it is never moved to the outputs
    # kept as an input, the identifier cannot be scored: x, the one scored input, stays an input
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == []
