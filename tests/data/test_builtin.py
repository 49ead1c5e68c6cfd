"""Bundled data sets: yeast (river), seattle-weather (vega_datasets), planted (generated)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from taskscout.cli import main
from taskscout.data import BUILTINS, load_frame
from taskscout.errors import DataError


def test_yeast_has_14_labels_and_2417_rows():
    frame = load_frame("builtin:yeast")
    labels = frame.attrs["label_columns"]
    assert labels == [f"Class{i}" for i in range(1, 15)]
    assert frame.shape == (2417, 103 + 14)
    for c in labels:
        assert set(frame[c].unique()) <= {0.0, 1.0}
    assert BUILTINS["yeast"].tasks == tuple(labels)


def test_seattle_weather_has_a_date_column():
    frame = load_frame("builtin:seattle-weather")
    assert frame.attrs["time_column"] == "date"
    dates = pd.to_datetime(frame["date"], format="%Y-%m-%d")
    assert dates.is_monotonic_increasing and len(frame) == 1461
    assert set(frame["weather"]) == {"drizzle", "fog", "rain", "snow", "sun"}
    assert {"precipitation", "temp_max", "temp_min", "wind"} <= set(frame.columns)


def test_an_unused_builtin_time_column_is_named_in_a_note():
    # the README's data-set table names the time column; without --time-column it was dropped silently
    from taskscout.data import build_dataset
    from taskscout.spec import resolve_spec

    plain = build_dataset(resolve_spec("builtin:seattle-weather", {"tasks": ["weather"]}))
    assert any("time column 'date'" in n and "--time-column date" in n for n in plain.notes)
    timed = build_dataset(resolve_spec("builtin:seattle-weather", {"tasks": ["weather"], "time_column": "date"}))
    assert not any("time column" in n for n in timed.notes)


def test_planted_takes_options_and_refuses_unknown_ones():
    frame = load_frame("builtin:planted", {"n_rows": 100, "groups": 2, "tasks_per_group": 2})
    assert frame.attrs["label_columns"] == ["g0_t0", "g0_t1", "g1_t0", "g1_t1"]
    with pytest.raises(DataError, match=r"no option 'grups' \(did you mean 'groups'"):
        load_frame("builtin:planted", {"grups": 2})
    with pytest.raises(DataError, match="builtin:yeast takes no data_options"):
        load_frame("builtin:yeast", {"n_rows": 5})


def test_unknown_builtin_lists_the_available_ones():
    with pytest.raises(DataError, match=r"unknown data set 'builtin:yaest' \(did you mean 'yeast'\?\).*parkinsons, planted, school, seattle-weather, yeast"):
        load_frame("builtin:yaest")


def test_datasets_command_lists_all_three(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in ("builtin:yeast", "builtin:seattle-weather", "builtin:planted"):
        assert name in out
    assert main(["datasets", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == {"builtin:yeast", "builtin:seattle-weather", "builtin:planted",
                                         "builtin:school", "builtin:parkinsons"}
    assert next(r for r in rows if r["name"] == "builtin:seattle-weather")["time_column"] == "date"


def test_school_and_parkinsons_are_bundled_long_tables_with_their_source(capsys):
    school = load_frame("builtin:school")
    assert school.shape == (15362, 10) and school["School"].nunique() == 139
    assert school.attrs["task_column"] == "School" and school.attrs["label_columns"] == ["ExamScore"]
    assert set(school["Ethnicity"].str[:9]) == {"Ethnicity"}  # category codes are text: one-hot inputs
    park = load_frame("builtin:parkinsons")
    assert park.shape == (5875, 22) and park["subject#"].nunique() == 42
    assert park.attrs["label_columns"] == ["motor_UPDRS", "total_UPDRS"]
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "task column: School; targets: ExamScore" in out and "CC BY 4.0" in out and "ILEA" in out
    with pytest.raises(DataError, match="takes no data_options"):
        load_frame("builtin:school", {"n": 1})


def test_parkinsons_with_one_target_has_42_patient_tasks_and_the_other_target_is_no_input():
    from taskscout.data import build_dataset
    from taskscout.spec import resolve_spec

    ds = build_dataset(resolve_spec("builtin:parkinsons", {"targets": ["total_UPDRS"]}))
    assert len(ds.tasks) == 42 and ds.task_names[:3] == ("1", "2", "3")
    assert "motor_UPDRS" not in ds.inputs and "subject#" not in ds.inputs and len(ds.inputs) == 19
    both = build_dataset(resolve_spec("builtin:parkinsons", {"targets": ["motor_UPDRS", "total_UPDRS"], "tasks": ["7"]}))
    assert both.task_names == ("7:motor_UPDRS", "7:total_UPDRS")


def test_planted_long_format_has_one_segment_per_planted_task():
    from taskscout.data.planted import planted_groups

    frame = load_frame("builtin:planted", {"long_format": True, "rows_per_segment": 40, "label_fraction": 0.5})
    assert len(frame) == 9 * 40 and frame.attrs["task_column"] == "segment"
    assert list(pd.unique(frame["segment"])) == [f"g{g}_t{i}" for g in range(3) for i in range(3)]
    assert set(frame["y"].dropna()) == {0.0, 1.0} and 0.3 < frame["y"].notna().mean() < 0.7
    assert planted_groups(frame)["g1_t2"] == "g1"
    with pytest.raises(DataError, match="rows_per_segment must be an int >= 10"):
        load_frame("builtin:planted", {"long_format": True, "rows_per_segment": 2})
