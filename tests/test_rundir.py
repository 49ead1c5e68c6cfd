"""Run-directory writes: whole files only, readable like any other file."""

import os
import stat

import pandas as pd
import pytest

from taskscout import rundir


def test_written_files_get_the_mode_of_a_plain_open(tmp_path):
    # mkstemp's private 0600 once survived the rename: other users and tools could not read runs.
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    want = stat.S_IMODE(plain.stat().st_mode)
    written = [
        rundir.write_text(tmp_path / "a.txt", "x"),
        rundir.write_json(tmp_path / "b.json", {"a": 1}),
        rundir.write_csv(tmp_path / "c.csv", pd.DataFrame({"a": [1]})),
        rundir.write_parquet(tmp_path / "d.parquet", pd.DataFrame({"a": [1]})),
    ]
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == want, path
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_umask_is_left_as_it_was(tmp_path):
    before = os.umask(0o027)
    try:
        rundir.write_text(tmp_path / "a.txt", "x")
        assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640
        assert os.umask(0o027) == 0o027
    finally:
        os.umask(before)


def test_json_safe_turns_non_finite_numbers_into_null():
    import numpy as np

    got = rundir.json_safe({1: (np.float64(0.1234567891), float("nan")), "b": [float("inf"), np.int64(3), "x"]})
    assert got == {"1": [0.123457, None], "b": [None, 3, "x"]}


def test_a_file_given_as_run_directory_is_named_as_such(tmp_path):
    import pytest

    from taskscout.errors import MissingResultsError

    (tmp_path / "data.csv").write_text("a\n1\n")
    with pytest.raises(MissingResultsError, match="is a file, not a run directory"):
        rundir.require(tmp_path / "data.csv")
    with pytest.raises(MissingResultsError, match="does not exist"):
        rundir.require(tmp_path / "nope")


def test_write_all_lands_every_file_or_none(tmp_path, monkeypatch):
    old = tmp_path / "a.pt"
    old.write_bytes(b"old a")
    written = rundir.write_all({old: b"new a", tmp_path / "sub" / "b.json": b"{}"})
    assert old.read_bytes() == b"new a" and (tmp_path / "sub" / "b.json").read_bytes() == b"{}"
    assert {stat.S_IMODE(p.stat().st_mode) for p in written} == {stat.S_IMODE(old.stat().st_mode)}
    # The second file cannot be written: the first keeps its old content, nothing is left over.
    (tmp_path / "blocker").write_text("a file, not a directory")
    with pytest.raises(OSError):
        rundir.write_all({old: b"newer a", tmp_path / "blocker" / "c.json": b"{}"})
    assert old.read_bytes() == b"new a"
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
