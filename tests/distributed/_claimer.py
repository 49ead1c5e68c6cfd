"""A worker process for the claim tests: claims jobs one at a time until none are left.

usage: python _claimer.py URL STUDY OUT_FILE START_FILE [--hold]
Writes each claimed key to OUT_FILE (one per line, flushed). With --hold it claims two jobs with
heartbeats on, writes them, and then sleeps until killed.
"""

import sys
import time
from pathlib import Path

from taskscout import distributed as dist


def main() -> None:
    url, name, out, start = sys.argv[1:5]
    hold = "--hold" in sys.argv
    storage = dist.make_storage(url, heartbeat_interval=1, grace_period=2) if hold else dist.make_storage(url)
    study = dist.open_study(storage, name, create=False)
    while not Path(start).exists():  # start together with the other worker
        time.sleep(0.01)
    with open(out, "a") as fh, dist.Heartbeat(storage) as beat:
        if hold:
            for trial in dist.claim(study, limit=2, heartbeat=beat):
                fh.write(trial.user_attrs[dist.KEY] + "\n")
            fh.flush()
            while True:
                time.sleep(1)
        while True:
            trials = dist.claim(study, limit=1)
            if not trials:
                break
            for trial in trials:
                fh.write(trial.user_attrs[dist.KEY] + "\n")
                fh.flush()
                assert dist.complete(study, trial, 0.0, user_attrs={"by": dist.worker_id()})


if __name__ == "__main__":
    main()
