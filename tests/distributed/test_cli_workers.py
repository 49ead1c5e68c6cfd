"""The CLI of a shared search: --join, --create-only and `taskscout status`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taskscout.cli import main
from taskscout.search import run_search
from taskscout.spec import resolve_spec

from ._worker import FAKE_TASKS, PlantedTrainer, fake_settings


def _flags(out: Path) -> list[str]:
    return ["builtin:planted", "--tasks", ",".join(FAKE_TASKS), "--name", "planted4", "--out", str(out),
            "--option", "n_rows=200", "--option", "n_inputs=8", "--option", "groups=2",
            "--option", "tasks_per_group=2", "--option", "label_fraction=0.5",
            "--seeds", "2", "--epochs", "3", "--depth", "2", "--width", "8",
            "--skip", "aux", "--skip", "subsets", "--skip", "estimators"]


def test_join_and_create_only_exclude_each_other(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["search", *_flags(tmp_path / "run"), "--join", "--create-only"]) == 2
    assert "--join and --create-only exclude each other" in capsys.readouterr().err


def test_a_worker_cannot_join_a_run_nobody_created(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["search", *_flags(tmp_path / "run"), "--join", "--quiet"]) == 2
    assert "no study 'planted4'" in capsys.readouterr().err


def test_create_only_then_status_then_a_finished_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert main(["search", *_flags(out), "--create-only"]) == 0
    assert "created study 'planted4'" in capsys.readouterr().out
    assert main(["status", *_flags(out), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert [(p["phase"], p["complete"], p["waiting"]) for p in status["phases"]] == [
        ("single", 0, 0), ("pairs", 0, 0), ("depth", 0, 0)]
    spec = resolve_spec(None, fake_settings(out) | {"search": {"phases": ["single", "pairs", "depth"], "halving": False}})
    run_search(spec, train_fn=PlantedTrainer())
    assert main(["status", *_flags(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("study 'planted4' in sqlite:///") and lines[0].endswith("0 live worker(s): -")
    assert lines[2:] == ["single          8        0        0       0", "pairs          14        0        0       0",
                         "depth           8        0        0       0"]
