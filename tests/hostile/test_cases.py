"""Hand-written hostile tables and study files, one test per case, each with its expected outcome.

Grouped as in issue 22 (groups 1-13), then further cases of our own. Each case goes through
`harness.refused` (exit 2, one line naming the problem and the fix, nothing written) or
`harness.accepted` (exit 0 with the notes stated), both of which also assert no traceback and no
library warning.
"""

from __future__ import annotations

import decimal
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from taskscout.data import TEST, build_dataset
from taskscout.spec import resolve_spec
from tests.hostile.harness import accepted, invoke, refused, table

N = 40


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    table().to_csv(tmp_path / "t.csv", index=False)
    return tmp_path


def _dates(fmt: str, n: int = N, start: str = "2024-01-01") -> list[str]:
    return list(pd.date_range(start, periods=n, freq="D").strftime(fmt))


# ---------------------------------------------------------------- 1. day-first dates


def test_1_day_first_dates_are_read_day_first_with_a_note(folder):
    frame = table().assign(day=_dates("%d.%m.%Y"))
    frame.to_csv(folder / "d.csv", index=False)
    accepted(folder, "validate", "d.csv", "--tasks", "a", "--time-column", "day",
             notes=("holds dates written day first (such as '13.01.2024'): read as day, month, year",))


def test_1_day_first_dates_put_the_latest_rows_in_test():
    # shuffled day-first dates: 07.01 is 7 January, so the test rows are the last 8 days of the 40
    frame = table().assign(day=_dates("%d/%m/%Y")).sample(frac=1, random_state=0).reset_index(drop=True)
    ds = build_dataset(resolve_spec("t.csv", {"tasks": ["a"], "time_column": "day"}), frame)
    latest = set(_dates("%d/%m/%Y")[-8:])
    assert set(frame["day"][ds.split == TEST]) == latest


def test_1_dates_that_read_both_ways_are_refused_with_a_request_for_iso_dates(folder):
    frame = table(24).assign(day=[f"{d:02d}.{m:02d}.2024" for m in (1, 2) for d in range(1, 13)])
    frame.to_csv(folder / "d.csv", index=False)
    refused(folder, "validate", "d.csv", "--tasks", "a", "--time-column", "day",
            says=("'01.01.2024' that read day first and month first alike", "ISO dates such as 2024-01-31"))


def test_1_month_first_dates_are_read_month_first_with_a_note(folder):
    table().assign(day=_dates("%m/%d/%Y")).to_csv(folder / "d.csv", index=False)
    accepted(folder, "validate", "d.csv", "--tasks", "a", "--time-column", "day",
             notes=("dates written month first (such as '01/13/2024')",))


def test_1_day_first_and_month_first_dates_in_one_column_are_refused(folder):
    table().assign(day=_dates("%d/%m/%Y", 20) + _dates("%m/%d/%Y", 20, "2024-03-01")).to_csv(folder / "d.csv", index=False)
    refused(folder, "validate", "d.csv", "--tasks", "a", "--time-column", "day",
            says=("mixes day-first dates ('13/01/2024') and month-first dates ('03/13/2024')", "ISO dates"))


# ---------------------------------------------------------------- 2. a study file's relative data path


def test_2_a_study_files_data_path_is_relative_to_the_study_file(folder):
    (folder / "study").mkdir()
    table().to_csv(folder / "study" / "t.csv", index=False)
    pd.DataFrame({"other": range(N), "y": range(N)}).to_csv(folder / "t.csv", index=False)  # a decoy
    (folder / "study" / "s.toml").write_text('data = "t.csv"\ntasks = ["a", "b"]\n', encoding="utf-8")
    result = accepted(folder, "validate", "study/s.toml")
    assert "data       study/t.csv" in result.out


def test_2_a_missing_relative_data_path_names_the_path_under_the_study_file(folder):
    (folder / "study").mkdir()
    (folder / "study" / "s.toml").write_text('data = "t.csv"\ntasks = ["a"]\n', encoding="utf-8")
    refused(folder, "validate", "study/s.toml", says=("data file 'study/t.csv' does not exist",))


# ---------------------------------------------------------------- 3. Parquet list and struct columns


def _nested(folder: Path) -> None:
    base = pa.Table.from_pandas(table(), preserve_index=False)
    lists = pa.array([[i, i + 1] for i in range(N)])
    structs = pa.array([{"p": i, "q": "z"} for i in range(N)])
    pq.write_table(base.append_column("tags", lists).append_column("info", structs), folder / "n.parquet")


def test_3_a_list_column_named_as_an_input_is_refused(folder):
    _nested(folder)
    refused(folder, "validate", "n.parquet", "--tasks", "a", "--inputs", "x1,tags",
            says=("input column 'tags' of n.parquet holds lists in its cells", "flatten it"))


def test_3_a_struct_column_named_as_a_task_is_refused(folder):
    _nested(folder)
    refused(folder, "validate", "n.parquet", "--tasks", "info", says=("task column 'info' of n.parquet holds structs",))


def test_3_nested_columns_are_left_out_of_the_default_inputs_with_a_note(folder):
    _nested(folder)
    result = accepted(folder, "validate", "n.parquet", "--tasks", "a",
                      notes=("input column 'tags' left out: its cells hold lists", "input column 'info' left out"))
    assert "inputs     4 columns -> 6 features" in result.out  # x1, x2, b and c (3 classes)


# ---------------------------------------------------------------- 4. folders the user may not enter


@pytest.fixture
def closed(folder, monkeypatch) -> Path:
    """A folder holding t.csv and s.toml that may not be entered (simulated for root, whom the
    kernel lets in anyway)."""
    import taskscout.paths

    inner = folder / "closed"
    inner.mkdir()
    table().to_csv(inner / "t.csv", index=False)
    (inner / "s.toml").write_text('data = "t.csv"\ntasks = ["a"]\n', encoding="utf-8")
    os.chmod(inner, 0)
    if os.geteuid() == 0:
        real = os.stat

        def stat(path, *args, **kwargs):
            if Path(path).absolute().parent == inner:
                raise PermissionError(13, "Permission denied", str(path))
            return real(path, *args, **kwargs)

        monkeypatch.setattr(taskscout.paths, "_stat", stat)
    yield inner
    os.chmod(inner, 0o755)


def test_4_a_data_file_in_a_folder_that_may_not_be_entered(folder, closed):
    refused(folder, "validate", "closed/t.csv", "--tasks", "a",
            says=("data file 'closed/t.csv' lies in a folder you may not enter", str(closed)))


def test_4_a_study_file_in_a_folder_that_may_not_be_entered(folder, closed):
    refused(folder, "validate", "closed/s.toml", says=("study file 'closed/s.toml' lies in a folder you may not enter",))


# ---------------------------------------------------------------- 5. the seed's range


def test_5_a_seed_beyond_64_bits_is_refused_by_validate(folder):
    refused(folder, "validate", "t.csv", "--tasks", "a", "--seed", "18446744073709551616",
            says=("'seed' in the flags must be an int in [0, 4294967295]", "Got 18446744073709551616"))


def test_5_a_seed_beyond_64_bits_is_refused_by_search_before_anything_is_written(folder):
    refused(folder, "search", "t.csv", "--tasks", "a,b", "--seed", "18446744073709551616", "--quiet",
            says=("must be an int in [0, 4294967295]",))


# ---------------------------------------------------------------- 6. what search would refuse, refused by validate


def test_6_an_unknown_weighting_is_refused_by_validate(folder):
    refused(folder, "validate", "t.csv", "--tasks", "a", "--weighting", "bogus",
            says=("unknown loss weighting 'bogus'", "choose one of ['equal', 'uncertainty']"))


def test_6_an_unknown_weighting_makes_search_write_nothing(folder):
    refused(folder, "search", "t.csv", "--tasks", "a,b", "--weighting", "bogus", "--quiet",
            says=("unknown loss weighting 'bogus'",))


def test_6_a_storage_that_is_not_a_url_is_refused_by_validate(folder):
    refused(folder, "validate", "t.csv", "--tasks", "a", "--storage", "not a url",
            says=("--storage 'not a url' is not a database URL", "sqlite:///study.db"))


def test_6_a_storage_of_an_unknown_database_kind_is_refused(folder):
    refused(folder, "validate", "t.csv", "--tasks", "a", "--storage", "nosuchdb://host/x",
            says=("names a database kind SQLAlchemy does not know",))


def test_6_an_output_under_a_regular_file_is_refused_by_validate(folder):
    (folder / "plain").write_text("a file\n", encoding="utf-8")
    refused(folder, "validate", "t.csv", "--tasks", "a", "--out", "plain/run",
            says=("cannot create the run directory 'plain/run': it lies under 'plain', which is a file",))


def test_6_an_output_that_is_a_regular_file_is_refused(folder):
    (folder / "plain").write_text("a file\n", encoding="utf-8")
    refused(folder, "validate", "t.csv", "--tasks", "a", "--out", "plain", says=("'plain': it is a file",))


# ---------------------------------------------------------------- 7. infinite values


@pytest.mark.parametrize("cells", [["inf"], ["inf", "-inf"] * (N // 2)], ids=["one", "all"])
def test_7_infinite_values_in_a_target_are_refused(folder, cells):
    frame = table()
    b = frame["b"].astype(str).tolist()
    b[: len(cells)] = cells
    frame.assign(b=b).to_csv(folder / "i.csv", index=False)
    refused(folder, "validate", "i.csv", "--tasks", "b",
            says=(f"column 'b' of i.csv is a task but holds infinite values in {len(cells)} row" + "s" * (len(cells) > 1)
                  + " (row 0: inf)",
                  "empty those cells"))


def test_7_infinite_values_in_an_input_count_as_missing_with_a_note(folder):
    table().assign(x1=[np.inf, -np.inf] + [1.0] * (N - 2)).to_csv(folder / "i.csv", index=False)
    accepted(folder, "validate", "i.csv", "--tasks", "a",
             notes=("input column 'x1' holds 2 infinite values: counted as missing",))


# ---------------------------------------------------------------- 8. columns that are mostly numbers


def test_8_a_target_half_numbers_half_text_is_refused(folder):
    b = [f"{v:.3f}" if i % 2 else f"about {i}" for i, v in enumerate(table()["b"])]
    table().assign(b=b).to_csv(folder / "m.csv", index=False)
    refused(folder, "validate", "m.csv", "--tasks", "b",
            says=("column 'b' of m.csv mixes 20 numbers (20 distinct values) with 20 text cells such as 'about 0'",
                  "--task-type b=multiclass"))


def test_8_thousands_separators_and_dash_blanks_are_read_as_numbers(folder):
    frame = table()
    frame["b"] = [f"{1000 * v + 5000:,.0f}" for v in frame["b"]]
    frame.loc[3, "b"] = "-"
    frame["x2"] = [f"{1000 * v + 9000:,.1f}" for v in frame["x2"]]
    frame.to_csv(folder / "k.csv", index=False)
    result = accepted(folder, "validate", "k.csv", "--tasks", "b", notes=(
        "column 'b' of k.csv read as numbers: thousands separators removed", "1 cell holding '-' counted as empty",
        "column 'x2' of k.csv read as numbers"))
    assert "b  regression labelled" in result.out.replace("  ", " ").replace(" regression", "  regression")
    assert "inputs     4 columns -> 6 features" in result.out  # x1, x2, a, c=3: no identifier left out


def test_8_decimal_parquet_columns_are_numbers(folder):
    frame = table()
    frame["b"] = [decimal.Decimal(f"{v:.4f}") for v in frame["b"]]
    frame["x2"] = [decimal.Decimal(f"{v:.4f}") for v in frame["x2"]]
    frame.to_parquet(folder / "dec.parquet")
    result = accepted(folder, "validate", "dec.parquet", "--tasks", "b",
                      notes=("column 'b' of dec.parquet read as numbers: Decimal values read as floats",
                             "column 'x2' of dec.parquet read as numbers"))
    assert "regression" in result.out and "inputs     4 columns -> 6 features" in result.out


def test_8_integers_of_twenty_digits_are_numbers(folder):
    (folder / "big.csv").write_text("id,y\n" + "".join(f"{9 * 10**19 + 7919 * i},{i % 2}\n" for i in range(N)),
                                    encoding="utf-8")
    result = accepted(folder, "validate", "big.csv", "--tasks", "y",
                      notes=("column 'id' of big.csv read as numbers: integers too long for 64 bits read as (rounded) floats",))
    assert "inputs     1 columns -> 1 features" in result.out


def test_8_a_half_text_input_gets_a_note_on_its_one_hot_features(folder):
    x2 = [f"{v:.3f}" if i % 2 else "unknown" for i, v in enumerate(table()["x2"])]
    table().assign(x2=x2).to_csv(folder / "h.csv", index=False)
    accepted(folder, "validate", "h.csv", "--tasks", "a",
             notes=("input column 'x2' mixes 20 numbers with 20 text cells such as 'unknown': one-hot coded into",))


# ---------------------------------------------------------------- 9. degenerate time settings


def test_9_entity_column_equal_to_the_time_column_is_refused(folder):
    table().assign(day=_dates("%Y-%m-%d")).to_csv(folder / "d.csv", index=False)
    refused(folder, "validate", "d.csv", "--tasks", "a", "--time-column", "day", "--entity-column", "day",
            says=("entity_column and time_column are both 'day'", "name two different columns"))


def test_9_a_time_column_holding_one_time_is_refused(folder):
    table().assign(day="2024-01-01").to_csv(folder / "d.csv", index=False)
    refused(folder, "validate", "d.csv", "--tasks", "a", "--time-column", "day",
            says=("holds the same time ('2024-01-01') in every row", "leave out --time-column"))


def test_9_rows_sharing_a_time_across_a_split_boundary_get_a_note(folder):
    table().assign(day=np.repeat(_dates("%Y-%m-%d", 4), 10)).to_csv(folder / "d.csv", index=False)
    accepted(folder, "validate", "d.csv", "--tasks", "a", "--time-column", "day", notes=(
        "time column 'day': 10 rows share the time 2024-01-03T00:00:00 and are divided between train and validation "
        "(4 and 6 rows, in file order)",
        "10 rows share the time 2024-01-04T00:00:00 and are divided between validation and test (2 and 8 rows"))


# ---------------------------------------------------------------- 10. a data file named ..csv


def test_10_a_data_file_named_dot_dot_csv_needs_a_name(folder):
    table().to_csv(folder / "..csv", index=False)
    refused(folder, "validate", "..csv", "--tasks", "a",
            says=("the data file name '..csv' gives no usable study name", "--name NAME"))
    result = accepted(folder, "validate", "..csv", "--tasks", "a", "--name", "dots")
    assert "reports/dots" in result.out


# ---------------------------------------------------------------- 11. common file mistakes


@pytest.mark.parametrize(("sep", "label"), [(";", "semicolons"), ("\t", "tabs")])
def test_11_a_csv_separated_by_something_else_names_the_separator(folder, sep, label):
    table().to_csv(folder / "s.csv", index=False, sep=sep)
    refused(folder, "validate", "s.csv", "--tasks", "a",
            says=(f"its fields look separated by {label}, not commas", "save it as a comma-separated CSV"))


def test_11_an_excel_sep_line_is_named(folder):
    (folder / "e.csv").write_text("sep=,\n" + (folder / "t.csv").read_text(encoding="utf-8"), encoding="utf-8")
    refused(folder, "validate", "e.csv", "--tasks", "a", says=("starts with Excel's 'sep=,' line; delete that first line",))


def test_11_a_title_line_above_the_header_is_named(folder):
    (folder / "e.csv").write_text("Sales report 2024\n" + (folder / "t.csv").read_text(encoding="utf-8"), encoding="utf-8")
    refused(folder, "validate", "e.csv", "--tasks", "a",
            says=("the first line of 'e.csv' ('Sales report 2024') has 1 field but the lines below it have 5",
                  "delete the line(s) above the header row"))


def test_11_utf16_is_named_as_such(folder):
    (folder / "u.csv").write_bytes((folder / "t.csv").read_text(encoding="utf-8").encode("utf-16"))
    refused(folder, "validate", "u.csv", "--tasks", "a", says=("'u.csv' is UTF-16 text; save it as a UTF-8 CSV",))


def test_11_a_study_file_with_a_byte_order_mark_is_read(folder):
    (folder / "s.toml").write_bytes('\ufeffdata = "t.csv"\ntasks = ["a"]\n'.encode())
    accepted(folder, "validate", "s.toml")


def test_11_a_study_file_with_an_upper_case_suffix_is_a_study_file(folder):
    (folder / "study.TOML").write_text('data = "t.csv"\ntasks = ["a", "c"]\n', encoding="utf-8")
    result = accepted(folder, "validate", "study.TOML")
    assert "study      study" in result.out


def test_11_a_parquet_whose_task_is_its_saved_index(folder):
    table().set_index("c").to_parquet(folder / "ix.parquet")
    result = accepted(folder, "validate", "ix.parquet", "--tasks", "c")
    assert "multiclass" in result.out


def test_11_times_in_summer_and_winter_offsets_are_compared_in_utc(folder):
    days = [f"2024-{1 + i % 12:02d}-{1 + i // 12:02d}T10:00:00{'+02:00' if 3 <= i % 12 <= 9 else '+01:00'}"
            for i in range(N)]
    table().assign(day=days).to_csv(folder / "tz.csv", index=False)
    accepted(folder, "validate", "tz.csv", "--tasks", "a", "--time-column", "day",
             notes=("holds times with different UTC offsets", "compared in UTC"))


def test_11_times_with_and_without_an_offset_are_refused(folder):
    days = [f"2024-01-{1 + i % 28:02d}T10:00:00" + ("+01:00" if i % 2 else "") for i in range(N)]
    table().assign(day=days).to_csv(folder / "tz.csv", index=False)
    refused(folder, "validate", "tz.csv", "--tasks", "a", "--time-column", "day",
            says=("mixes times with a UTC offset", "and times without one", "give every time its offset, or none"))


def test_11_a_symbolic_link_that_loops(folder):
    os.symlink("loop.csv", folder / "loop.csv")
    refused(folder, "validate", "loop.csv", "--tasks", "a", says=("data file 'loop.csv' is a symbolic link that loops",))


def test_11_a_dangling_symbolic_link(folder):
    os.symlink("gone.csv", folder / "link.csv")
    refused(folder, "validate", "link.csv", "--tasks", "a",
            says=("data file 'link.csv' is a symbolic link to 'gone.csv', which does not exist",))


# ---------------------------------------------------------------- 12. names --tasks cannot express


def test_12_a_name_with_a_comma_points_to_the_study_file_or_set(folder):
    table().rename(columns={"a": "a,b", "b": " padded"}).to_csv(folder / "odd.csv", index=False)
    refused(folder, "validate", "odd.csv", "--tasks", "a,b",
            says=("(did you mean 'a,b'?)", "--tasks cannot carry a name with a comma or surrounding spaces",
                  """--set 'tasks=["a,b"]'"""))
    refused(folder, "validate", "odd.csv", "--tasks", " padded",
            says=("""tasks = [" padded"]""",))
    accepted(folder, "validate", "odd.csv", "--set", 'tasks=["a,b", " padded"]')


# ---------------------------------------------------------------- 13. contradictions and leaks


def test_13_an_adversarial_column_that_is_a_main_task_is_refused(folder):
    refused(folder, "validate", "t.csv", "--tasks", "a,b", "--adversarial", "a",
            says=("adversarial column 'a' is a main task", "drop it from --adversarial"))


def test_13_an_adversarial_task_that_is_not_a_main_task_is_accepted(folder):
    accepted(folder, "validate", "t.csv", "--tasks", "a,b", "--main", "b", "--adversarial", "a")


def test_13_a_smooth_source_equal_to_the_task_is_refused(folder):
    refused(folder, "validate", "t.csv", "--tasks", "a", "--smooth-source", "a",
            says=("smooth_source 'a' is a main task itself", "thresholded from"))


def test_13_an_input_that_copies_a_target_is_noted_as_a_leak(folder):
    table().assign(a_copy=table()["a"]).to_csv(folder / "leak.csv", index=False)
    accepted(folder, "validate", "leak.csv", "--tasks", "a",
             notes=("input column 'a_copy' equals task 'a' on every labelled row: a leak",))


def test_13_two_features_of_one_name_are_told_apart(folder):
    frame = table().assign(x1__missing=1.0 * (np.arange(N) % 2))
    frame.loc[::5, "x1"] = np.nan
    frame.to_csv(folder / "dup.csv", index=False)
    result = accepted(folder, "validate", "dup.csv", "--tasks", "a",
                      notes=("two input features would both be named 'x1__missing'; the second is named 'x1__missing~2'",))
    assert "-> 8 features" in result.out


def test_13_an_auxiliary_named_like_a_task_gets_another_name(folder):
    import json

    frame = table()
    frame["b__related"] = frame["c"]  # the name of the related auxiliary taskscout makes of task b
    frame.to_csv(folder / "rel.csv", index=False)
    result = accepted(folder, "candidates", "rel.csv", "--tasks", "a,b,b__related", "--main", "a", "--json",
                      "--aux-kinds", "related")
    names = [r["name"] for r in json.loads(result.out)]
    assert "b__related" not in names and "b__related~2" in names


def test_13_a_successful_search_prints_no_library_warning(folder, capfd):
    # the smallest search there is: 2 tasks, 1 seed, 2 epochs, single and pairs phases only;
    # capfd also holds what forked workers write to the process's stderr
    out = folder.parent / f"{folder.name}-run"
    result = invoke(folder, "search", "t.csv", "--tasks", "a,b", "--out", str(out), "--seeds", "1", "--epochs", "2",
                    "--quiet", "--skip", "aux", "--skip", "depth", "--skip", "subsets", "--skip", "estimators",
                    "--device", "cpu")
    assert result.code == 0 and result.err == "", result
    assert capfd.readouterr().err == ""
    assert (out / "recommendation.json").exists()


def test_13_candidates_on_empty_and_infinite_inputs_print_no_library_warning(folder):
    # hints standardise every numeric input: an all-missing one warned "Degrees of freedom <= 0",
    # an infinite value overflowed (RuntimeWarning) before infinite inputs became missing values
    frame = table(60).assign(empty=np.nan, x2=lambda f: f["x2"].where(f.index % 9 != 0, np.inf))
    frame["day"] = _dates("%d.%m.%Y", 60)
    frame.to_csv(folder / "h.csv", index=False)
    result = accepted(folder, "candidates", "h.csv", "--tasks", "a,b", "--time-column", "day",
                      notes=("input column 'x2' holds 7 infinite values: counted as missing",
                             "holds dates written day first"))
    assert "future" in result.out


# ---------------------------------------------------------------- further cases of our own


def test_an_excel_workbook_is_named(folder):
    (folder / "book.xlsx").write_bytes(b"PK\x03\x04" + bytes(200))
    refused(folder, "validate", "book.xlsx", "--tasks", "a", says=("is an Excel workbook", "save the sheet as CSV"))


def test_a_task_of_only_empty_cells(folder):
    table().assign(a=np.nan).to_csv(folder / "e.csv", index=False)
    refused(folder, "validate", "e.csv", "--tasks", "a", says=("column 'a' of e.csv is a task but has no labelled rows",))


def test_blank_markers_alone_are_text_not_numbers(folder):
    table().assign(x2="-").to_csv(folder / "dash.csv", index=False)
    result = accepted(folder, "validate", "dash.csv", "--tasks", "a")
    assert "read as numbers" not in result.out


def test_zip_codes_in_a_parquet_text_column_stay_text(folder):
    table().assign(zip=[f"0{2100 + i % 4}" for i in range(N)]).to_parquet(folder / "z.parquet")
    result = accepted(folder, "validate", "z.parquet", "--tasks", "a")
    assert "read as numbers" not in result.out and "-> 10 features" in result.out


def test_a_directory_given_as_data(folder):
    (folder / "dir.csv").mkdir()
    refused(folder, "validate", "dir.csv", "--tasks", "a", says=("'dir.csv' is a directory",))


def test_a_path_through_a_file(folder):
    refused(folder, "validate", "t.csv/inner.csv", "--tasks", "a",
            says=("data file 't.csv/inner.csv' does not exist (a part of the path before it is a file",))


def test_candidates_on_hostile_numbers_prints_notes_and_no_warning(folder):
    frame = table()
    frame["b"] = [f"{1000 * v + 5000:,.0f}" for v in frame["b"]]
    frame.to_csv(folder / "k.csv", index=False)
    result = invoke(folder, "candidates", "k.csv", "--tasks", "a,b")
    assert result.code == 0 and "note: column 'b' of k.csv read as numbers" in result.err


def test_the_future_kind_orders_rows_as_the_split_does():
    # day-first dates in file order that month-first reading would scramble
    from taskscout.auxgen.future import time_order

    frame = table().assign(day=_dates("%d/%m/%Y")).iloc[::-1].reset_index(drop=True)
    ds = build_dataset(resolve_spec("t.csv", {"tasks": ["a"], "time_column": "day"}), frame)
    assert list(time_order(ds)) == list(range(N - 1, -1, -1))
