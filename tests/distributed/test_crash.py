"""Crash safety on one machine: a process killed while writing a table never leaves a half-written
table, and the next search removes what the killed writer left behind."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from taskscout import rundir
from taskscout.search import run_search
from taskscout.spec import resolve_spec

from ._worker import PlantedTrainer, fake_settings

ROOT = Path(__file__).resolve().parents[2]

# Writes affinity.csv through rundir.write_csv with a disk that stalls halfway: half the bytes are
# written and flushed, then the process waits to be killed.
SLOW_WRITER = """
import sys, time
from pathlib import Path
import pandas as pd
from taskscout import rundir

def stalled_to_csv(self, path, **kw):
    text = pd.DataFrame.__dict__["_real_to_csv"](self, None, **kw)
    with open(path, "w") as fh:
        fh.write(text[: len(text) // 2])
        fh.flush()
    Path(sys.argv[2]).touch()
    time.sleep(600)

pd.DataFrame._real_to_csv = pd.DataFrame.to_csv
pd.DataFrame.to_csv = stalled_to_csv
frame = pd.read_csv(sys.argv[1])
rundir.write_csv(sys.argv[1], pd.concat([frame, frame]))
"""


def test_a_table_write_killed_midway_leaves_the_old_table_whole(tmp_path: Path) -> None:
    spec = resolve_spec(None, fake_settings(tmp_path / "run"))
    run_search(spec, train_fn=PlantedTrainer())
    table = spec.run_dir / rundir.AFFINITY
    before = table.read_bytes()
    stalled = tmp_path / "stalled"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(table), str(stalled)],
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not stalled.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the writer never reached the middle of its write"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert table.read_bytes() == before  # the table is the old one, whole
    (partial,) = spec.run_dir.glob(f".{rundir.AFFINITY}.*.tmp")
    assert 0 < partial.stat().st_size < 2 * len(before)
    # the same command again: nothing to train, the leftover is gone, the tables are whole
    again = run_search(spec, train_fn=PlantedTrainer())
    assert again.trained == 0
    assert not list(spec.run_dir.glob(".*.tmp"))
    pd.testing.assert_frame_equal(pd.read_csv(table), pd.read_csv(io.StringIO(before.decode())))
