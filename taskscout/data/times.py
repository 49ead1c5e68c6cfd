"""The time column: its values read as numbers or dates, and the checks that a split by time needs.

Dates written with numbers only and the day or the month first (31.01.2024, 01/31/2024) are
read in the order the column itself shows: a first field above 12 means day first (with a note),
a second field above 12 means month first (with a note). When no value tells (every day is 12 or
less) the column is refused with a request for ISO dates (2024-01-31): guessing would put rows in
the wrong order without a word, and a split by time would then train on later rows.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd

from taskscout.errors import DataError

_NUMERIC_DATE = re.compile(r"^\s*(\d{1,2})([./-])(\d{1,2})\2(\d{4}|\d{2})(?![\d./-]).*")
_OFFSET = re.compile(r".*(Z|[+-]\d{2}:?\d{2})\s*$")
_ISO_FIX = "write dates as ISO dates such as 2024-01-31 (year first)"


def parse_times(raw: pd.Series, column: str, source: str) -> tuple[pd.Series, tuple[str, ...]]:
    """The times of `raw` (numbers as they are, anything else as dates) and notes on how they were
    read. DataError for a value that is neither, empty times, ambiguous day/month order, mixed
    offsets with and without a zone, and a column holding one time only."""
    notes: tuple[str, ...] = ()
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        times = raw
    else:
        dayfirst, notes = _date_order(raw, column, source)
        times, more = _to_datetime(raw, column, source, dayfirst)
        notes += more
        if isinstance(times.dtype, pd.DatetimeTZDtype):  # plain UTC datetimes sort as numbers do
            times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    if times.isna().any():
        raise DataError(
            f"time column {column!r} of {source} has {int(times.isna().sum())} empty values; every row needs a time"
        )
    if times.nunique() == 1:
        raise DataError(
            f"time column {column!r} of {source} holds the same time ({raw.iloc[0]!r}) in every row, so it cannot "
            f"order them; leave out --time-column for a random split, or give the column that holds the times"
        )
    return times, notes


def _date_order(raw: pd.Series, column: str, source: str) -> tuple[bool | None, tuple[str, ...]]:
    """(dayfirst, notes) for numeric dates such as 31.01.2024; (None, ()) for other text."""
    present = raw.dropna()
    if len(present) == 0 or not all(isinstance(v, str) for v in present):
        return None, ()
    parts = present.str.extract(_NUMERIC_DATE.pattern)
    if parts[0].isna().any():
        return None, ()
    first, second = parts[0].astype(int), parts[2].astype(int)
    day_first, month_first = first > 12, second > 12
    where = f"time column {column!r} of {source}"
    if day_first.any() and month_first.any():
        raise DataError(
            f"{where} mixes day-first dates ({present[day_first].iloc[0]!r}) and month-first dates "
            f"({present[month_first].iloc[0]!r}); {_ISO_FIX}"
        )
    if day_first.any():
        return True, (f"{where} holds dates written day first (such as {present[day_first].iloc[0]!r}): "
                      f"read as day, month, year",)
    if month_first.any():
        return False, (f"{where} holds dates written month first (such as {present[month_first].iloc[0]!r}): "
                       f"read as month, day, year",)
    raise DataError(
        f"{where} holds dates such as {present.iloc[0]!r} that read day first and month first alike (no day is "
        f"above 12 to tell which); {_ISO_FIX}"
    )


def _to_datetime(raw: pd.Series, column: str, source: str, dayfirst: bool | None) -> tuple[pd.Series, tuple[str, ...]]:
    where = f"time column {column!r} of {source}"
    with warnings.catch_warnings():
        # pandas warns when no format can be inferred (text that is not dates: the failure below is
        # our error alone) and when an inferred format puts the day first: the output is ours.
        warnings.filterwarnings("ignore", message="Could not infer format", category=UserWarning)
        warnings.filterwarnings("ignore", message="Parsing dates in .* format when dayfirst", category=UserWarning)
        if dayfirst is None:
            try:
                return pd.to_datetime(raw), ()
            except (ValueError, TypeError):
                pass  # one format inferred from the first value failed: parse value by value below
        try:
            times = pd.to_datetime(raw, errors="coerce", format="mixed", dayfirst=bool(dayfirst))
        except ValueError as e:
            if "timezone" not in str(e).lower():
                raise DataError(f"{where} does not parse as dates or numbers: {str(e).splitlines()[0]}") from None
            return _mixed_offsets(raw, where)
        except TypeError as e:
            raise DataError(f"{where} does not parse as dates or numbers: {str(e).splitlines()[0]}") from None
    bad = times.isna() & raw.notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{where} does not parse as dates or numbers: row {row} holds {raw.iloc[row]!r}; "
            f"use dates such as 2024-01-31 or numbers"
        )
    return times, ()


def _mixed_offsets(raw: pd.Series, where: str) -> tuple[pd.Series, tuple[str, ...]]:
    """Times with different UTC offsets (summer and winter time) compared in UTC, with a note;
    a DataError when some times have an offset and others none (their order is unknown)."""
    text = raw.astype(str)
    has_offset = text.str.fullmatch(_OFFSET.pattern)
    if not has_offset.all():
        raise DataError(
            f"{where} mixes times with a UTC offset (such as {text[has_offset].iloc[0]!r}) and times without one "
            f"(such as {text[~has_offset].iloc[0]!r}), so their order is unknown; give every time its offset, or none"
        )
    times = pd.to_datetime(raw, utc=True, format="mixed")
    return times, (f"{where} holds times with different UTC offsets (such as {text.iloc[0]!r}): compared in UTC",)


def boundary_notes(times: pd.Series, split: np.ndarray, column: str) -> tuple[str, ...]:
    """A note for each split boundary that falls among rows sharing one time (they are then
    divided in file order: some of them train, the others evaluate)."""
    notes = []
    t = times.to_numpy()
    for earlier, later, name in ((0, 1, "train and validation"), (1, 2, "validation and test")):
        a, b = t[split == earlier], t[split == later]
        if len(a) and len(b) and a.max() == b.min():
            shared = a.max()
            n_a, n_b = int((a == shared).sum()), int((b == shared).sum())
            shown = pd.Timestamp(shared).isoformat() if isinstance(shared, np.datetime64) else shared
            notes.append(
                f"time column {column!r}: {n_a + n_b} rows share the time {shown} and are divided between {name} "
                f"({n_a} and {n_b} rows, in file order); a finer time (with the hour) keeps such rows together"
            )
    return tuple(notes)
