"""`taskscout estimators`: runs on a tiny planted study, writes its tables, rejects unknown names."""

from __future__ import annotations

import pandas as pd

from taskscout import rundir
from taskscout.cli import main

TINY = ["builtin:planted", "--tasks", "g0_t0,g0_t1,g1_t0,g1_t1", "--option", "n_rows=300", "--option", "groups=2",
        "--option", "tasks_per_group=2", "--option", "n_inputs=8", "--epochs", "3", "--seeds", "2", "--width", "8",
        "--device", "cpu"]


def test_estimators_command_writes_agreement(tmp_path, capsys):
    code = main(["estimators", *TINY, "--estimators", "rsa,gradcos", "--out", str(tmp_path)])
    assert code == 0
    out = tmp_path / "estimators"
    agreement = pd.read_csv(out / rundir.AGREEMENT)
    assert list(agreement["method"]) == ["rsa", "gradcos"]
    assert list(agreement.columns[:4]) == list(rundir.AGREEMENT_COLUMNS)
    assert set(pd.read_csv(out / rundir.AFFINITY)["method"]) == {"measured", "rsa", "gradcos"}
    assert (out / "pruning.csv").exists() and (out / "rsa_rsa_layers.csv").exists()
    assert "spearman" in capsys.readouterr().out


def test_unknown_estimator_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["estimators", *TINY, "--estimators", "tga", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--estimators takes names from" in err and "'tga'" in err


def test_one_task_is_refused_before_any_training(tmp_path, capsys):
    # it once trained every model first and then failed in the surrogate
    one = [a if a != "g0_t0,g0_t1,g1_t0,g1_t1" else "g0_t0" for a in TINY]
    assert main(["estimators", *one, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "at least 2 main tasks" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
