"""Determinism: the same search gives the same models, losses and gains whether its models are
trained in one stack or in many (CPU, same seeds)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from taskscout import rundir
from taskscout.search import run_search
from taskscout.spec import resolve_spec

from .conftest import real_settings
from .tables import assert_same_measurements


def test_stacks_of_three_measure_what_one_stack_does(tmp_path: Path, real_one_process: Path) -> None:
    out = tmp_path / "run"
    result = run_search(resolve_spec(None, real_settings(out, stack_size=3)))
    assert result.trained == 14
    # 14 models in stacks of at most 3 here, all in one stack there
    assert len(pd.read_parquet(real_one_process / rundir.TRIALS)) == 14
    assert_same_measurements(out, real_one_process, rtol=1e-5)
    gains = pd.read_csv(out / rundir.AFFINITY)["gain"]
    assert gains.notna().all() and len(gains) == 6  # 3 tasks: every ordered pair
