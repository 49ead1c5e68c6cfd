"""The data stage: loading, splits, input preprocessing and target coding, with known answers."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from taskscout.data import (
    TEST,
    TRAIN,
    VAL,
    build_dataset,
    encode_target,
    infer_task_type,
    load_frame,
    summarize,
)
from taskscout.errors import DataError
from taskscout.spec import resolve_spec


def _spec(tasks, **settings):
    return resolve_spec("table.csv", {"tasks": list(tasks), **settings})


def _timed(n: int = 10, **columns) -> pd.DataFrame:
    """Rows in time order t = 0..n-1; with split 0.2/0.2 the last 2 rows are test, the 2 before val."""
    return pd.DataFrame({"t": np.arange(n), **columns})


TIMED = {"time_column": "t"}


def test_numeric_inputs_are_standardised_on_training_rows_only():
    # training rows are t = 0..5 with x = 1..6: mean 3.5, population std sqrt(35/12)
    x = [1, 2, 3, 4, 5, 6, 7, 8, 1000, 2000]
    ds = build_dataset(_spec(["y"], **TIMED), _timed(x=x, y=np.arange(10.0)))
    assert list(ds.split) == [TRAIN] * 6 + [VAL] * 2 + [TEST] * 2
    col = ds.X[:, ds.feature_names.index("x")]
    std = np.sqrt(35 / 12)
    np.testing.assert_allclose(col, (np.array(x) - 3.5) / std, rtol=1e-6)
    assert col[0] == pytest.approx(-1.46385, abs=1e-5)


def test_one_hot_uses_training_categories_only():
    c = ["a", "b", "a", "b", "a", "b", "a", "b", "zebra", "zebra"]
    ds = build_dataset(_spec(["y"], **TIMED), _timed(c=c, y=np.arange(10.0)))
    assert [n for n in ds.feature_names if n.startswith("c")] == ["c=a", "c=b"]
    onehot = ds.X[:, [ds.feature_names.index("c=a"), ds.feature_names.index("c=b")]]
    np.testing.assert_array_equal(onehot[:2], [[1, 0], [0, 1]])
    np.testing.assert_array_equal(onehot[8:], 0)  # an unseen category switches nothing on
    assert ds.features_of("c") == (ds.feature_names.index("c=a"), ds.feature_names.index("c=b"))


def test_nan_input_gets_a_missing_indicator_and_the_training_mean():
    x = [1.0, np.nan, 3.0, 5.0, 7.0, 9.0, 0.0, 0.0, 0.0, 0.0]  # training mean without NaN: 5
    ds = build_dataset(_spec(["y"], **TIMED), _timed(x=x, y=np.arange(10.0)))
    assert ds.feature_names[:2] == ("x", "x__missing")
    np.testing.assert_array_equal(ds.X[:, 1], [0, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    assert ds.X[1, 0] == 0.0  # imputed: the training mean, which standardises to 0
    std = np.std([1, 3, 5, 7, 9])
    assert ds.X[0, 0] == pytest.approx((1 - 5) / std)
    assert ds.features_of("x") == (0, 1)


def test_categorical_nan_input_gets_a_missing_indicator():
    c = ["a", None, "b", "a", "b", "a", "a", "b", "a", "b"]
    ds = build_dataset(_spec(["y"], **TIMED), _timed(c=c, y=np.arange(10.0)))
    assert ds.feature_names == ("c=a", "c=b", "c__missing")
    np.testing.assert_array_equal(ds.X[1], [0, 0, 1])


def test_nan_targets_stay_nan_and_are_counted_as_unlabelled():
    y = [0, 1, np.nan, 1, 0, 1, 0, np.nan, 1, 0]
    ds = build_dataset(_spec(["y"], **TIMED), _timed(x=np.arange(10.0), y=y))
    assert np.isnan(ds.Y[[2, 7], 0]).all()
    assert np.isfinite(np.delete(ds.Y[:, 0], [2, 7])).all()
    assert ds.labelled("y") == {"train": 5, "val": 1, "test": 2}
    assert ds.task("y").type == "binary" and ds.task("y").classes == (0, 1)


def test_regression_targets_are_standardised_on_training_rows():
    y = [3.0, 5.0, 3.0, 5.0, 3.0, 5.0, 7.5, 9.25, 100.5, -50.0]  # train: mean 4, std 1 (population)
    ds = build_dataset(_spec(["y"], task_types={"y": "regression"}, **TIMED), _timed(x=np.arange(10.0), y=y))
    info = ds.task("y")
    assert info.type == "regression"
    assert (info.mean, info.std) == (4.0, 1.0)
    np.testing.assert_allclose(ds.Y[:, 0], np.array(y) - 4.0)


def test_classes_are_coded_in_sorted_order():
    values = pd.Series(["low", "high", None, "mid", "low"])
    y, info = encode_target(values, "multiclass", np.ones(5, bool), name="level")
    assert info.classes == ("high", "low", "mid")
    np.testing.assert_array_equal(y, [1, 0, np.nan, 2, 1])
    y, info = encode_target(pd.Series([3, 1, 2, 3]), "ordinal", np.ones(4, bool), name="stars")
    assert info.classes == (1, 2, 3) and list(y) == [2, 0, 1, 2]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0, 1, 1, np.nan], "binary"),
        (["cat", "dog", "cat"], "binary"),
        (["cat", "dog", "eel"], "multiclass"),
        ([1, 2, 3, 4, 5, 1], "ordinal"),
        ([0.5, 1.25, 3.0, 7.5], "regression"),
        (list(range(50)), "regression"),
    ],
)
def test_task_type_inference(values, expected):
    assert infer_task_type(pd.Series(values)) == expected


def test_seeded_split_is_reproducible_and_has_the_asked_sizes():
    frame = pd.DataFrame({"x": np.arange(100.0), "y": np.arange(100.0) % 7})
    a = build_dataset(_spec(["y"], seed=3), frame).split
    b = build_dataset(_spec(["y"], seed=3), frame).split
    c = build_dataset(_spec(["y"], seed=4), frame).split
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.bincount(a).tolist() == [60, 20, 20]
    assert a.dtype == np.int8


def test_time_split_puts_the_latest_rows_in_test():
    rng = np.random.default_rng(0)
    days = pd.date_range("2020-01-01", periods=50, freq="D")
    order = rng.permutation(50)
    frame = pd.DataFrame({"when": days[order].strftime("%Y-%m-%d"), "x": rng.normal(size=50), "y": rng.normal(size=50)})
    ds = build_dataset(_spec(["y"], time_column="when"), frame)
    when = pd.to_datetime(frame["when"])
    assert when[ds.split == TRAIN].max() < when[ds.split == VAL].min()
    assert when[ds.split == VAL].max() < when[ds.split == TEST].min()
    assert set(when[ds.split == TEST]) == set(days[-10:])
    assert "when" not in ds.inputs  # the time column is not an input by default


ODD = ["my col", 'say "hi"', "<img src=x onerror=alert(1)>", "it's, really", "naïve ü → 1", " padded "]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_odd_column_names_survive_unchanged(tmp_path, suffix):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({name: rng.normal(size=30) for name in ODD})
    frame["task <b>bold</b>"] = rng.integers(0, 2, size=30)
    path = tmp_path / f"odd{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    loaded = load_frame(str(path))
    assert list(loaded.columns) == [*ODD, "task <b>bold</b>"]
    ds = build_dataset(resolve_spec(str(path), {"tasks": ["task <b>bold</b>"], "inputs": ODD[:4]}))
    assert ds.task_names == ("task <b>bold</b>",)
    assert ds.inputs == tuple(ODD[:4]) and ds.feature_names == tuple(ODD[:4])


def test_builtin_label_columns_are_never_default_inputs():
    ds = build_dataset(resolve_spec("builtin:planted", {"tasks": ["g0_t0"], "data_options": {"n_rows": 200}}))
    assert all(c.startswith("x") for c in ds.inputs) and len(ds.inputs) == 48


def test_binary_task_needs_both_classes_in_training_rows():
    y = [0, 0, 0, 0, 0, 0, 1, 0, 1, 0]
    with pytest.raises(DataError, match=r"training split holds only the class 0"):
        build_dataset(_spec(["y"], **TIMED), _timed(x=np.arange(10.0), y=y))


def test_an_input_that_is_also_a_task_is_refused():
    frame = pd.DataFrame({"x": np.arange(20.0), "y": np.arange(20.0) % 2})
    with pytest.raises(DataError, match="both an input and a task"):
        build_dataset(_spec(["y"], inputs=["x", "y"]), frame)


def _with_identifiers(n: int = 20) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "id": [f"r{i}" for i in range(n)],  # a different text value in every row
        "day": pd.date_range("2024-01-01", periods=n, freq="D").strftime("%Y-%m-%d"),  # dates, not the time column
        "colour": ["red", "blue"] * (n // 2),
        "x": rng.normal(size=n),
        "y": rng.normal(size=n),
    })


def test_text_columns_with_a_value_per_row_are_left_out_of_the_default_inputs():
    ds = build_dataset(_spec(["y"]), _with_identifiers())
    assert ds.inputs == ("colour", "x")
    assert ds.feature_names == ("colour=blue", "colour=red", "x")
    assert len(ds.notes) == 2
    assert ds.notes[0].startswith("input column 'id' left out: a different value in every row (20 distinct values in 20 non-empty rows)")
    assert "--inputs" in ds.notes[0] and "--time-column" in ds.notes[1] and "'day'" in ds.notes[1]
    assert summarize(ds)["notes"] == list(ds.notes)


def test_a_text_column_with_a_value_per_row_named_as_input_is_kept():
    ds = build_dataset(_spec(["y"], inputs=["id", "x"]), _with_identifiers())
    assert ds.inputs == ("id", "x") and ds.notes == ()
    assert len(ds.features_of("id")) == int((ds.split == TRAIN).sum())  # one-hot over the 12 training values


def test_dates_that_repeat_across_entities_are_left_out_with_a_note():
    # a panel (3 shops x 40 days) with the day as text: one-hot coding gave a feature per date
    days = pd.date_range("2024-01-01", periods=40).strftime("%Y-%m-%d")
    frame = pd.DataFrame({"day": np.tile(days, 3), "shop": np.repeat(["a", "b", "c"], 40),
                          "x": np.arange(120.0), "y": np.arange(120.0) % 7})
    ds = build_dataset(_spec(["y"]), frame)
    assert ds.inputs == ("shop", "x")
    assert ds.notes == ("input column 'day' left out: dates (40 distinct values in 120 non-empty rows), so one-hot "
                        "coding would give a feature per date that nothing else shares; give it as --time-column if it "
                        "orders the rows, or name it in --inputs to keep it as a one-hot input",)
    few = frame.assign(day=np.tile(days[:4], 30))  # a handful of dates can be categories
    assert "day" in build_dataset(_spec(["y"]), few).inputs
    zips = frame.assign(day=np.tile([f"02{i:03d}" for i in range(30)], 4))  # codes of digits are no dates
    assert "day" in build_dataset(_spec(["y"]), zips).inputs


def test_no_input_left_but_an_identifier_says_which_was_left_out():
    frame = _with_identifiers()[["id", "y"]]
    with pytest.raises(DataError, match=r"no input columns left .* 'id' was left out .* name inputs with --inputs"):
        build_dataset(_spec(["y"]), frame)


def _prices(n: int = 100) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    price = rng.normal(100, 10, size=n).round(2).astype(object)
    price[[7, 30]] = ["abc", "n/a"]  # two stray cells in a numeric column, as a CSV holds them
    return pd.DataFrame({"x": rng.normal(size=n), "price": price})


def test_a_numeric_task_with_stray_text_cells_is_refused():
    with pytest.raises(DataError) as caught:
        build_dataset(_spec(["price"]), _prices())
    message = str(caught.value)
    assert message.startswith("column 'price' of table.csv holds numbers except 2 of its 100 non-empty cells, such as 'abc'")
    assert "clean those cells" in message and "--task-type price=multiclass" in message


def test_an_input_of_numbers_with_a_few_text_cells_is_numeric_with_missing_values():
    # it was one-hot coded: a category per distinct number
    frame = _prices().rename(columns={"price": "cost"}).assign(y=np.arange(100) % 2)
    ds = build_dataset(_spec(["y"]), frame)
    assert ds.feature_names == ("x", "cost", "cost__missing")
    assert ds.X[[7, 30], ds.feature_names.index("cost__missing")].tolist() == [1.0, 1.0]
    assert "input column 'cost' holds numbers except 2 text cells such as 'abc': those count as missing values" in ds.notes


def test_stray_text_cells_are_accepted_when_the_type_is_given():
    ds = build_dataset(_spec(["price"], task_types={"price": "multiclass"}), _prices())
    assert ds.task("price").type == "multiclass" and "abc" in ds.task("price").classes


def test_a_text_task_with_a_value_per_row_is_refused_as_an_identifier():
    # it once became a multiclass task with a class per row
    n = 60
    frame = pd.DataFrame({"x": np.arange(float(n)), "name": [f"gene{i}" for i in range(n)]})
    frame.loc[[3, 4], "name"] = "gene0"  # a few repeats do not make it a label
    with pytest.raises(DataError, match=r"column 'name' of table.csv looks like an identifier.* 57 of its 60 labelled rows"):
        build_dataset(_spec(["name"]), frame)
    ds = build_dataset(_spec(["name"], task_types={"name": "multiclass"}), frame)  # asked for: kept
    assert ds.task("name").n_classes == 58


def test_an_ordinal_type_on_a_continuous_column_is_refused():
    # it built an ordinal task of a level per distinct price
    frame = pd.DataFrame({"x": np.arange(100.0), "price": np.round(np.linspace(1, 50, 100), 2)})
    with pytest.raises(DataError, match=r"column 'price' of table.csv is ordinal but has 100 levels .* set its type to regression"):
        build_dataset(_spec(["price"], task_types={"price": "ordinal"}), frame)
    grades = frame.assign(price=np.arange(100) % 5)
    assert build_dataset(_spec(["price"], task_types={"price": "ordinal"}), grades).task("price").n_classes == 5


def test_text_classes_that_are_partly_numbers_stay_multiclass():
    # a third of the labels are numbers: categories, not numbers with stray cells
    grade = pd.Series(["A", "B", "1", "A", "B", "2", "A", "B", "1", "A", "B", "2"] * 3)
    frame = pd.DataFrame({"x": np.arange(36.0), "grade": grade})
    ds = build_dataset(_spec(["grade"]), frame)
    assert ds.task("grade").type == "multiclass" and ds.task("grade").classes == ("1", "2", "A", "B")


def test_a_text_time_column_that_is_not_dates_is_refused_without_a_library_warning():
    frame = _timed(x=np.arange(10.0), y=np.arange(10.0))
    frame["colour"] = ["red", "blue"] * 5
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(DataError, match=r"time column 'colour' of table.csv does not parse .* row 0 holds 'red'"):
            build_dataset(_spec(["y"], time_column="colour"), frame)
    assert [str(w.message) for w in caught] == []  # pandas said "Could not infer format ..."


def test_day_first_dates_parse_in_one_format_without_a_library_warning():
    days = ["13/01/2020", "02/01/2020", "14/01/2020", "03/01/2020", "01/02/2020", "15/01/2020"] * 2
    frame = pd.DataFrame({"when": days, "x": np.arange(12.0), "y": np.arange(12.0)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = build_dataset(_spec(["y"], time_column="when"), frame)
    assert [str(w.message) for w in caught] == []  # pandas said "Parsing dates in %d/%m/%Y format when dayfirst=False ..."
    assert set(frame["when"][ds.split == TEST]) == {"01/02/2020"}  # 1 February is the latest day, not 2 January
