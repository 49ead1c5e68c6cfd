"""Checks of a table's columns that protect the user from odd files, each with its message or note.

Numbers written in ways pandas leaves as text (thousands separators, `-` for a blank, Decimal
values, integers too long for 64 bits) are read as numbers with a note; cells holding lists or
structs, infinite targets and mixed number/text targets are refused; an input that copies a
target is noted as a leak. The data stage (`prepare.build_dataset`) calls these in order.
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

from taskscout.errors import DataError

# Cells that stand for "no value" in exported tables, beyond what pandas already reads as NaN.
BLANK_MARKERS = frozenset({"-", "--", "\u2013", "\u2014", "?", "."})
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d+)?")
_LONG_INT = re.compile(r"[+-]?\d{19,}")
MAX_CATEGORY_FEATURES = 20  # a text input one-hot coded into more features than this gets a note
MAX_MIXED_NUMBERS = 10  # a text input mixing text with more distinct numbers than this gets a note


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _is_text(values: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)
                or pd.api.types.is_datetime64_any_dtype(values))


def numbers_from_text(values: pd.Series) -> tuple[pd.Series, str] | None:
    """`values` as floats and what was done to read them, when a text column holds numbers that
    pandas could not read: Decimal values, thousands separators (1,234), blank markers (-) among
    numbers, or integers of 19 digits and more. None for any other column (text that is text, or
    digits a Parquet file stores as text on purpose, such as zip codes)."""
    if not _is_text(values):
        return None
    present = values.dropna()
    if len(present) == 0:
        return None
    if all(isinstance(v, decimal.Decimal) for v in present):
        return values.map(lambda v: float(v) if isinstance(v, decimal.Decimal) else np.nan).astype(float), \
            "Decimal values read as floats"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):  # pandas keeps these as Python ints
        return values.map(lambda v: float(v) if pd.notna(v) else np.nan).astype(float), \
            f"integers too long for 64 bits read as (rounded) floats, such as {present.iloc[0]!r}"
    if not all(isinstance(v, str) for v in present):
        return None
    text = present.str.strip()
    blank = text.isin(BLANK_MARKERS) | (text == "")
    rest = text[~blank]
    if len(rest) == 0:
        return None
    grouped = rest.str.fullmatch(_THOUSANDS.pattern)
    numbers = pd.to_numeric(rest.where(~grouped, rest.str.replace(",", "", regex=False)), errors="coerce")
    if numbers.isna().any():
        return None
    reasons = []
    if grouped.any():
        reasons.append(f"thousands separators removed (such as {rest[grouped].iloc[0]!r})")
    if blank.any():
        reasons.append(f"{_count(int(blank.sum()), 'cell')} holding {text[blank].iloc[0]!r} counted as empty")
    long = rest.str.fullmatch(_LONG_INT.pattern)
    if long.any():
        reasons.append(f"integers of 19 digits or more read as (rounded) floats, such as {rest[long].iloc[0]!r}")
    if not reasons:
        return None
    out = pd.Series(np.nan, index=values.index, dtype=float)
    out[numbers.index] = numbers.to_numpy(dtype=float)
    return out, "; ".join(reasons)


def read_numbers(frame: pd.DataFrame, columns: Iterable[str], source: str) -> list[str]:
    """Turn the number-like text columns among `columns` into floats, in place; a note for each."""
    notes = []
    for c in columns:
        got = numbers_from_text(frame[c])
        if got is not None:
            frame[c] = got[0]
            notes.append(f"column {c!r} of {source} read as numbers: {got[1]}")
    return notes


def nested_kind(values: pd.Series) -> str | None:
    """"lists" or "structs" when cells of `values` hold those (Parquet list/struct columns)."""
    if _is_text(values) and values.dtype == object:
        for v in values.dropna().iloc[:1000]:
            if isinstance(v, dict):
                return "structs"
            if isinstance(v, (list, tuple, set, np.ndarray)):
                return "lists"
    return None


def refuse_nested(frame: pd.DataFrame, columns: Iterable[str], role: str, source: str) -> None:
    """DataError for the first of `columns` whose cells hold lists or structs."""
    for c in columns:
        kind = nested_kind(frame[c])
        if kind is not None:
            raise DataError(
                f"{role} column {c!r} of {source} holds {kind} in its cells, not one number or text per cell; "
                f"flatten it into plain columns (one per element or field), or leave it out"
            )


def refuse_infinite_target(values: pd.Series, *, name: str, source: str) -> None:
    """DataError when a numeric task column holds +inf or -inf (a division by zero upstream)."""
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return
    v = values.to_numpy(dtype=float)
    infinite = np.isinf(v)
    if infinite.any():
        row = int(np.flatnonzero(infinite)[0])
        raise DataError(
            f"column {name!r} of {source} is a task but holds infinite values in {_count(int(infinite.sum()), 'row')} "
            f"(row {row}: {v[row]}); replace them with numbers, or empty those cells (empty means unlabelled)"
        )


def refuse_mixed_target(values: pd.Series, *, name: str, source: str, max_levels: int) -> None:
    """DataError when a text task mixes text with numbers of more than `max_levels` values:
    as classes, every number would be a class of its own."""
    if not _is_text(values):
        return
    present = values.dropna()
    numbers = pd.to_numeric(present.astype(str), errors="coerce")
    distinct = numbers.dropna().nunique()
    if distinct > max_levels:
        text = present[numbers.isna()]
        raise DataError(
            f"column {name!r} of {source} mixes {int(numbers.notna().sum())} numbers ({distinct} distinct values) "
            f"with {len(text)} text cells such as {text.iloc[0]!r}; as classes every number would be a class "
            f"of its own: clean the text cells (empty means unlabelled) to make it a regression task, "
            f"or pass --task-type {name}=multiclass if its values are categories"
        )


def mixed_input_note(values: pd.Series, column: str, features: int, *, only_mixed: bool = False) -> str | None:
    """A note when a text input one-hot coded into `features` features mixes numbers and text, or
    (unless `only_mixed`) simply has many categories."""
    if not _is_text(values):
        return None
    present = values.dropna().astype(str)
    numbers = pd.to_numeric(present, errors="coerce")
    if numbers.nunique() > MAX_MIXED_NUMBERS and numbers.isna().any():
        text = present[numbers.isna()]
        return (f"input column {column!r} mixes {int(numbers.notna().sum())} numbers with {len(text)} text cells "
                f"such as {text.iloc[0]!r}: one-hot coded into {features} features, a category per number; "
                f"clean the text cells (empty means missing) to use it as one number")
    if only_mixed or features <= MAX_CATEGORY_FEATURES:
        return None
    return (f"input column {column!r} is text with many categories: one-hot coded into {features} features; "
            f"leave it out with --inputs if it is an identifier or free text")


def infinite_inputs_to_missing(frame: pd.DataFrame, inputs: Iterable[str]) -> list[str]:
    """Make +-inf in the numeric `inputs` missing, in place (for every later stage: auxiliary
    hints are built from the same frame); a note for each column."""
    notes = []
    for c in inputs:
        s = frame[c]
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            infinite = np.isinf(s.to_numpy(dtype=float))
            if infinite.any():
                frame[c] = s.astype(float).where(~infinite, np.nan)
                notes.append(f"input column {c!r} holds {_count(int(infinite.sum()), 'infinite value')}: counted as missing")
    return notes


def copied_targets(frame: pd.DataFrame, tasks: Iterable[str], inputs: Iterable[str]) -> list[str]:
    """Notes for inputs that equal a task on every labelled row of it (a leak)."""
    notes = []
    inputs = list(inputs)
    for t in tasks:
        y = frame[t]
        labelled = y.notna().to_numpy()
        if labelled.sum() < 2:
            continue
        for c in inputs:
            if _same(frame[c][labelled], y[labelled]):
                notes.append(f"input column {c!r} equals task {t!r} on every labelled row: a leak that makes {t!r} "
                             f"look easy and helps no real prediction; leave it out (name the other inputs with --inputs)")
    return notes


def _same(a: pd.Series, b: pd.Series) -> bool:
    if a.isna().any():
        return False
    numeric = [pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s) for s in (a, b)]
    if all(numeric):
        return bool(np.array_equal(a.to_numpy(dtype=float), b.to_numpy(dtype=float)))
    if any(numeric):
        return False
    return bool((a.astype(str).to_numpy() == b.astype(str).to_numpy()).all())


def unique_feature_names(names: list[str]) -> tuple[list[str], list[str]]:
    """`names` with each repeat given a suffix ~2, ~3 (a column `x1__missing` next to the missing
    indicator of `x1`), and a note for each renamed feature."""
    seen = set(names)
    used: set[str] = set()
    out, notes = [], []
    for name in names:
        if name in used:
            k = 2
            while f"{name}~{k}" in seen or f"{name}~{k}" in used:
                k += 1
            notes.append(f"two input features would both be named {name!r}; the second is named '{name}~{k}'")
            name = f"{name}~{k}"
        used.add(name)
        out.append(name)
    return out, notes
