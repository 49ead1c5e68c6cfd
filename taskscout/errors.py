"""The errors taskscout raises for user mistakes.

The CLI turns any ``TaskscoutError`` into one line on stderr and exit code 2; anything else is a
bug and exits 1. Messages say what was given, what was expected and how to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TaskscoutError(Exception):
    """Root of every error caused by the user's input or environment."""


class SpecError(TaskscoutError):
    """A study file or flag is unknown, has the wrong type or an invalid value."""


class DataError(TaskscoutError):
    """The data cannot be read or does not fit the study (missing columns, no labels, ...)."""


class MissingResultsError(TaskscoutError):
    """A run directory lacks the results a command needs (run `taskscout search` first)."""


class DeviceError(TaskscoutError):
    """The requested device is not available on this machine."""


def close_matches(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """A suffix like " (did you mean 'a', 'b'?)" listing close matches, or "" when none."""
    pool = [str(c) for c in candidates]
    matches = difflib.get_close_matches(str(name), pool, n=n, cutoff=0.5)
    if not matches:
        return ""
    return " (did you mean " + ", ".join(repr(m) for m in matches) + "?)"
