"""A worker process for the claim tests: claims models one at a time until none are left.

usage: python _claimer.py URL STUDY OUT_FILE START_FILE [--hold]
Opens (creates, if need be) the study, writes OUT_FILE.ready, waits for START_FILE, then claims
and completes models one at a time, writing each claimed key to OUT_FILE (one per line, flushed).
With --hold it claims two models with heartbeats on (interval 1 s, grace 2 s), writes their keys,
and sleeps until it is killed.
"""

import sys
import time
from pathlib import Path

from taskscout.search.storage import claim_pending, key_states, open_store, record_result


def main() -> None:
    url, name, out, start = sys.argv[1:5]
    hold = "--hold" in sys.argv
    store = open_store(url, name, fingerprint={}, spec_json="{}", liveness=(1, 2) if hold else None)
    Path(f"{out}.ready").touch()
    while not Path(start).exists():  # start together with the other worker
        time.sleep(0.01)
    keys = set(key_states(store))
    with open(out, "a") as fh:
        if hold:
            for claim in claim_pending(store, keys, 2):
                fh.write(claim.model.key + "\n")
            fh.flush()
            while True:
                time.sleep(1)
        while claims := claim_pending(store, keys, 1):
            for claim in claims:
                fh.write(claim.model.key + "\n")
                fh.flush()
                assert record_result(store, claim, {"by": sys.argv[3]}, {}, 0.0)


if __name__ == "__main__":
    main()
