"""Running the CLI on a hostile input and checking the outcome every case shares.

Every run must end in exit 0 (the study is valid; notes say what the data stage decided on its
own) or exit 2 (one line on stderr, starting "error: ", naming the problem and the fix). Never a
traceback, never a Python or library warning, and nothing written: `validate` and `candidates`
write nothing even when they succeed, and a refused `search` leaves no run directory behind.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from taskscout.cli import main


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str


def listing(folder: Path) -> list[tuple[str, int]]:
    """Every path under `folder` with its size (what a run may not change)."""
    return sorted((str(p.relative_to(folder)), p.lstat().st_size) for p in folder.rglob("*"))


def invoke(folder: Path, *argv: str) -> Outcome:
    """`taskscout ARGV` in `folder` (the working directory), in this process, with every warning
    recorded; asserts the outcomes every case shares (see the module docstring)."""
    before = listing(folder)
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            warnings.simplefilter("always")
            code = main(list(argv))
    finally:
        os.chdir(cwd)
    result = Outcome(code, out.getvalue(), err.getvalue())
    assert code in (0, 2), result
    assert "Traceback" not in result.out + result.err, result
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == [], result
    assert "Warning" not in result.err, result
    assert listing(folder) == before, "a run changed the folder"
    return result


def refused(folder: Path, *argv: str, says: tuple[str, ...]) -> str:
    """Exit 2 with one line on stderr holding every fragment of `says`; the line."""
    result = invoke(folder, *argv)
    lines = result.err.strip().splitlines()
    assert result.code == 2, result
    assert len(lines) == 1 and lines[0].startswith("error: "), result
    for fragment in says:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def accepted(folder: Path, *argv: str, notes: tuple[str, ...] = ()) -> Outcome:
    """Exit 0 (for `validate`: "valid: nothing was written"), with every fragment of `notes` in a
    note line of the output."""
    result = invoke(folder, *argv)
    assert result.code == 0, result
    if argv[0] == "validate" and "--json" not in argv:
        assert "valid: nothing was written" in result.out, result
        note_lines = [line for line in result.out.splitlines() if line.startswith("note ")]
    else:
        note_lines = [line for line in result.err.splitlines() if line.startswith("note:")]
    for fragment in notes:
        assert any(fragment in line for line in note_lines), (fragment, note_lines)
    return result


def table(n: int = 40, seed: int = 0) -> pd.DataFrame:
    """A clean table: inputs x1, x2; tasks a (binary), b (regression), c (three classes)."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    return pd.DataFrame({
        "x1": x1, "x2": x2,
        "a": (x1 + rng.normal(size=n) > 0).astype(int),
        "b": x2 + rng.normal(size=n),
        "c": np.array(["red", "green", "blue"])[np.arange(n) % 3],
    })
