"""Comparing two run directories: the same measurements, whichever processes made them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from taskscout import rundir


def val_losses(run: Path) -> dict[str, dict[str, float]]:
    """model key -> its validation loss per head (trial numbers differ between storages)."""
    trials = pd.read_parquet(run / rundir.TRIALS)
    return {k: json.loads(v) for k, v in zip(trials["key"], trials["val_loss"], strict=True)}


def _canonical(path: Path) -> pd.DataFrame:
    """A table in a fixed row order: rows follow the trial order, which differs between storages."""
    frame = pd.read_csv(path)
    labels = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])] + [c for c in ("branch_layer",) if c in frame]
    return frame.sort_values(labels, kind="stable").reset_index(drop=True)


def assert_same_measurements(run: Path, reference: Path, *, rtol: float = 1e-5) -> None:
    """The same models with the same losses, and the same gains, intervals and group scores."""
    mine, ref = val_losses(run), val_losses(reference)
    assert sorted(mine) == sorted(ref)
    for key, losses in ref.items():
        assert mine[key].keys() == losses.keys()
        for head, value in losses.items():
            assert abs(mine[key][head] - value) <= rtol * abs(value) + 1e-9, (key, head)
    for name in (rundir.AFFINITY, rundir.DEPTH, rundir.GROUP_SCORES):
        if (reference / name).exists() and pd.read_csv(reference / name).shape[0]:
            pd.testing.assert_frame_equal(_canonical(run / name), _canonical(reference / name),
                                          check_exact=False, rtol=rtol, atol=rtol)
    if (reference / rundir.RECOMMENDATION).exists():
        got, want = rundir.read_json(run / rundir.RECOMMENDATION), rundir.read_json(reference / rundir.RECOMMENDATION)
        assert (got["groups"], got["assignment"]) == (want["groups"], want["assignment"])
