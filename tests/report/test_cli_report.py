"""`taskscout report RUN_DIR [--png]`."""

from __future__ import annotations

import importlib.util

import pytest

from taskscout import rundir
from taskscout.cli import main


def test_report_command_writes_the_page(run_dir, capsys):
    (run_dir / rundir.REPORT).unlink(missing_ok=True)
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / rundir.REPORT).is_file()
    assert str(run_dir / rundir.REPORT) in capsys.readouterr().out


def test_report_command_on_a_missing_directory_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "taskscout search" in err and "\n" not in err


@pytest.mark.skipif(importlib.util.find_spec("kaleido") is not None, reason="kaleido is installed here")
def test_png_without_kaleido_says_so_and_writes_nothing(run_dir, capsys):
    (run_dir / rundir.REPORT).unlink(missing_ok=True)
    assert main(["report", str(run_dir), "--png"]) == 2
    err = capsys.readouterr().err.strip()
    assert "kaleido" in err and "\n" not in err
    assert not (run_dir / "figures").exists() and not (run_dir / rundir.REPORT).exists()
