"""A search worker for the distributed tests, and the planted fake trainer it can use.

usage: python _worker.py SETTINGS_JSON LOG_FILE [--fake SECONDS_PER_STACK] [--join] [--go FILE]

SETTINGS_JSON is the nested study mapping (as resolve_spec takes it, with "data"). With --fake the
worker trains with `PlantedTrainer` (no torch work: known gains, a pause per stack so that workers
interleave); every stack it trains is appended to LOG_FILE as one JSON line of model keys, so a
test can count how often each model was trained. With --go the worker, once imported, writes
LOG_FILE.ready and waits for FILE to exist, so that several workers start searching together.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd

from taskscout.search import run_search
from taskscout.spec import resolve_spec
from taskscout.training import ModelResult


def planted_gain(source: str, target: str) -> float:
    """+20% inside a planted group (same name prefix before "_"), -5% across groups."""
    return 0.2 if source.split("_")[0] == target.split("_")[0] else -0.05


def planted_result(plan, heads, *, depth: int, epochs: int, gain, seconds: float) -> ModelResult:
    """A deterministic result: task t alone has loss (1 + 0.1 t)(1 + 0.05 s) for seed s; each
    partner j changes it by gain(j, t), scaled by the share of the trunk that is shared
    (branch_layer / depth), plus a seed-dependent 1% so that intervals have a width. Curves fall
    towards the final loss, best at the last epoch."""
    names = [heads[t].name for t in plan.targets]
    s = plan.seed % 100
    loss, rows = {}, []
    for t, name in zip(plan.targets, names, strict=True):
        partners = [n for n in names if n != name]
        g = sum(gain(n, name) for n in partners) * plan.branch_layer / depth
        jitter = 0.01 * (s - 1) if partners else 0.0
        loss[t] = (1.0 + 0.1 * t) * (1 + 0.05 * s) * (1 - g - jitter)
        for e in range(1, epochs + 1):
            rows += [(name, e, "train", loss[t] * (1 + 2 / e)), (name, e, "val", loss[t] * (1 + 1 / e))]
    return ModelResult(plan=plan, best_epoch=epochs, epochs_run=epochs, loss={"val": loss},
                       metric={"val": {t: 0.5 for t in plan.targets}}, seconds=seconds,
                       curves=pd.DataFrame(rows, columns=["task", "epoch", "split", "loss"]), state=None)


class PlantedTrainer:
    """`planted_result` with `planted_gain` for every plan, no torch work."""

    def __init__(self, log: Path | None = None, pause: float = 0.0) -> None:
        self.log = log
        self.pause = pause

    def __call__(self, X, Y, heads, split, plans, *, model, training, device, progress, stack_size=64, **kw):
        if self.log is not None:
            with open(self.log, "a") as fh:
                fh.write(json.dumps([p.key for p in plans]) + "\n")
        time.sleep(self.pause)
        out = []
        for p in plans:
            out.append(planted_result(p, heads, depth=model.depth, epochs=training.epochs, gain=planted_gain,
                                      seconds=self.pause / max(1, len(plans))))
            progress(1)
        return out


FAKE_TASKS = ["g0_t0", "g0_t1", "g1_t0", "g1_t1"]


def fake_settings(out: Path, storage: str | None = None) -> dict:
    """Four planted tasks in two groups, 2 seeds, depth 2: 8 single, 14 pair and (the two planted
    pairs gain, so) 8 depth models, trained two per stack."""
    search = {"phases": ["single", "pairs", "depth"], "stack_size": 2, "heartbeat_interval": 1, "grace_period": 3,
              "halving": False}
    if storage:
        search["storage"] = storage
    return {
        "data": "builtin:planted", "name": "planted4", "tasks": FAKE_TASKS, "out": str(out), "device": "cpu",
        "data_options": {"n_rows": 200, "n_inputs": 8, "groups": 2, "tasks_per_group": 2, "label_fraction": 0.5},
        "training": {"seeds": 2, "epochs": 3}, "model": {"depth": 2, "width": 8}, "search": search,
    }


def main() -> None:
    settings = json.loads(sys.argv[1])
    log = Path(sys.argv[2])
    fake = "--fake" in sys.argv
    pause = float(sys.argv[sys.argv.index("--fake") + 1]) if fake else 0.0
    spec = resolve_spec(None, settings)
    if "--go" in sys.argv:
        Path(f"{log}.ready").touch()
        go = Path(sys.argv[sys.argv.index("--go") + 1])
        while not go.exists():
            time.sleep(0.01)
    train_fn = PlantedTrainer(log, pause) if fake else None
    result = run_search(spec, train_fn=train_fn, join="--join" in sys.argv)
    print(json.dumps({"trained": result.trained, "tables": sorted(result.tables),
                      "finished_elsewhere": result.finished_elsewhere}))


if __name__ == "__main__":
    main()
