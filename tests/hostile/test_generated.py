"""Generated hostile tables (Hypothesis): column types, missing patterns, names, encodings, sizes.

Whatever the table, `validate` (and `candidates` on what validate accepts) ends in exit 0 or in
exit 2 with one line, never a traceback or a library warning, and writes nothing (harness.invoke).
Further properties check known answers: day-first dates order rows as their ISO form does, and
numbers written with thousands separators read back as the numbers. Examples are derandomised
(the same ones on every run) and few, so the corpus stays fast and deterministic.
"""

from __future__ import annotations

import decimal
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskscout.data import build_dataset
from taskscout.data.checks import numbers_from_text
from taskscout.spec import resolve_spec
from tests.hostile.harness import invoke

FUZZ = settings(max_examples=45, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FEW = settings(max_examples=15, derandomize=True, deadline=None, database=None,
               suppress_health_check=[HealthCheck.too_slow])

KINDS = ("float", "int", "bool", "category", "identifier", "iso_date", "day_first", "thousands", "decimal",
         "empty", "constant", "infinite", "mixed", "unicode", "offsets", "long_int", "multiline", "dash_blanks")
MISSING = ("none", "some", "all", "first_half")
ENCODINGS = ("utf-8", "utf-8-sig", "utf-16", "latin-1", "parquet")
HOSTILE_NAMES = ("a,b", " padded", "x__missing", "x", "..", "-x", "Unnamed: 0", "名前", "a b", "1", "sep=")

names = st.one_of(st.sampled_from(HOSTILE_NAMES),
                  st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=6))


def _column(kind: str, n: int, rng: np.random.Generator) -> list:
    days = pd.date_range("2023-01-01", periods=max(n, 1), freq="D")[:n]
    make = {
        "float": lambda: rng.normal(size=n).tolist(),
        "int": lambda: rng.integers(0, 5, size=n).tolist(),
        "bool": lambda: (rng.random(n) > 0.5).tolist(),
        "category": lambda: rng.choice(["red", "green", "blue"], size=n).tolist(),
        "identifier": lambda: [f"id{i}" for i in range(n)],
        "iso_date": lambda: list(days.strftime("%Y-%m-%d")),
        "day_first": lambda: list(days.strftime("%d.%m.%Y")),
        "thousands": lambda: [f"{v:,}" for v in rng.integers(0, 10**7, size=n)],
        "decimal": lambda: [decimal.Decimal(f"{v:.3f}") for v in rng.normal(size=n)],
        "empty": lambda: [None] * n,
        "constant": lambda: [7] * n,
        "infinite": lambda: np.where(rng.random(n) > 0.8, np.inf, rng.normal(size=n)).tolist(),
        "mixed": lambda: [f"{v:.2f}" if v > 0 else "n.a." for v in rng.normal(size=n)],
        "unicode": lambda: rng.choice(["é", "ß", "日本", "🙂", ""], size=n).tolist(),
        "offsets": lambda: [f"{d}T10:00{rng.choice(['+01:00', '+02:00', 'Z', ''])}" for d in days.strftime("%Y-%m-%d")],
        "long_int": lambda: [9 * 10**19 + int(v) for v in rng.integers(0, 10**6, size=n)],
        "multiline": lambda: rng.choice(["two\nlines", 'a "quote"', "semi;colon", "tab\there"], size=n).tolist(),
        "dash_blanks": lambda: [f"{v:.1f}" if v > -0.5 else "-" for v in rng.normal(size=n)],
    }
    return make[kind]()


def _holes(values: list, pattern: str, rng: np.random.Generator) -> list:
    n = len(values)
    mask = {"none": np.zeros(n, bool), "some": rng.random(n) < 0.3, "all": np.ones(n, bool),
            "first_half": np.arange(n) < n // 2}[pattern]
    return [None if m else v for v, m in zip(values, mask, strict=True)]


@st.composite
def tables(draw) -> tuple[pd.DataFrame, str]:
    n = draw(st.integers(0, 60))
    width = draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    columns = draw(st.lists(names, min_size=width, max_size=width))
    frame = pd.DataFrame({i: _holes(_column(draw(st.sampled_from(KINDS)), n, rng), draw(st.sampled_from(MISSING)), rng)
                          for i in range(width)})
    frame.columns = columns  # repeated names are a case of their own
    return frame, draw(st.sampled_from(ENCODINGS))


def _write(frame: pd.DataFrame, encoding: str, folder: Path) -> str:
    if encoding == "parquet":
        try:
            frame.to_parquet(folder / "g.parquet")
        except (ValueError, TypeError, Exception):  # repeated names or mixed objects Arrow will not write
            frame.astype(str).to_csv(folder / "g.csv", index=False)
            return "g.csv"
        return "g.parquet"
    text = frame.to_csv(index=False)
    try:
        (folder / "g.csv").write_bytes(text.encode(encoding))
    except UnicodeEncodeError:  # latin-1 cannot hold every character: the file is then written as UTF-8
        (folder / "g.csv").write_bytes(text.encode("utf-8"))
    return "g.csv"


@FUZZ
@given(tables(), st.data())
def test_validate_ends_cleanly_on_any_table(table_and_encoding, data):
    frame, encoding = table_and_encoding
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = _write(frame, encoding, folder)
        columns = [str(c) for c in frame.columns]
        task = data.draw(st.sampled_from(columns))
        argv = ["validate", path, f"--tasks={task}"]
        if data.draw(st.booleans()):
            argv.append(f"--task-type={task}={data.draw(st.sampled_from(['binary', 'multiclass', 'regression', 'ordinal']))}")
        others = [c for c in columns if c != task]
        if others and data.draw(st.booleans()):
            argv.append(f"--time-column={data.draw(st.sampled_from(others))}")
        result = invoke(folder, *argv)
        if result.code == 0 and data.draw(st.booleans()):
            invoke(folder, "candidates", *argv[1:])


@FEW
@given(st.lists(st.dates(min_value=pd.Timestamp("2000-01-01").date(), max_value=pd.Timestamp("2030-12-31").date()),
                min_size=12, max_size=40, unique=True),
       st.sampled_from(["%d.%m.%Y", "%d/%m/%Y", "%d-%m-%Y", "%d.%m.%Y %H:%M"]))
def test_day_first_dates_split_rows_as_their_iso_form_does(days, fmt):
    days = [*days, pd.Timestamp("2001-01-31").date()]  # a day above 12 tells the order
    days = list(dict.fromkeys(days))
    n = len(days)
    frame = pd.DataFrame({"x": np.arange(n, dtype=float), "y": np.arange(n) % 2,
                          "day": [pd.Timestamp(d).strftime(fmt) for d in days]})
    iso = frame.assign(day=[pd.Timestamp(d).strftime("%Y-%m-%d") for d in days])
    spec = resolve_spec("t.csv", {"tasks": ["y"], "time_column": "day", "task_types": {"y": "binary"}})
    ds = build_dataset(spec, frame)
    assert (ds.split == build_dataset(spec, iso).split).all()
    assert any("written day first" in note for note in ds.notes)


@FEW
@given(st.lists(st.integers(-10**12, 10**12), min_size=1, max_size=30), st.integers(0, 3))
def test_numbers_with_thousands_separators_read_back_as_the_numbers(values, decimals):
    values = [*values, 1234567]  # at least one number with a separator
    text = pd.Series([f"{v / 10**decimals:,.{decimals}f}" for v in values])
    got = numbers_from_text(text)
    assert got is not None and "thousands separators removed" in got[1]
    assert np.allclose(got[0].to_numpy(), [v / 10**decimals for v in values], rtol=1e-12, atol=0)


# Study-file keys and hostile values for them (TOML written by hand: the values are what matter).
STUDY_KEYS = ("seed", "name", "budget", "device", "out", "time_column", "inputs", "main", "training.epochs",
              "training.lr", "training.weighting", "training.seeds", "model.depth", "split.val", "split.test",
              "aux.kinds", "aux.adversarial", "aux.smooth_source", "aux.cap", "search.storage", "search.phases",
              "search.fdr", "task_types.a", "no_such_key", "training.no_such_key")
TOML_VALUES = st.one_of(
    st.integers(-2**70, 2**70).map(str),
    st.sampled_from(["nan", "inf", "-inf", "0.5", "1e308", "true", "[]", '["a"]', '["a", "a"]', '["x1", "b"]',
                     '"a"', '""', '".."', '"../up"', '"bogus"', '"not a url"', '"sqlite:///s.db"', '"t.csv/x"',
                     '"binary"', '{ a = 1 }', '"\\u00e9"', '"a,b"']),
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=6).map(lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"'),
)


@FEW
@given(st.lists(st.tuples(st.sampled_from(STUDY_KEYS), TOML_VALUES), max_size=3, unique_by=lambda kv: kv[0]),
       st.booleans())
def test_validate_ends_cleanly_on_any_study_file(settings_, bom):
    top = [f"{k} = {v}" for k, v in settings_ if "." not in k]
    sections: dict[str, list[str]] = {}
    for k, v in settings_:
        if "." in k:
            section, key = k.split(".")
            sections.setdefault(section, []).append(f"{key} = {v}")
    text = "\n".join(['data = "t.csv"', 'tasks = ["a", "b"]', *top,
                      *(f"[{s}]\n" + "\n".join(lines) for s, lines in sections.items())]) + "\n"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rng = np.random.default_rng(0)
        pd.DataFrame({"x1": rng.normal(size=40), "a": np.arange(40) % 2, "b": rng.normal(size=40)}).to_csv(
            folder / "t.csv", index=False)
        (folder / "s.toml").write_bytes(("\ufeff" if bom else "").encode() + text.encode())
        invoke(folder, "validate", "s.toml")
