"""Successive halving in the aux and depth phases: what it may drop, and that it keeps every real gain."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from taskscout import rundir
from taskscout.auxgen import AuxTask
from taskscout.search import run_search
from taskscout.search.halving import gain_floor, split_rungs
from taskscout.search.plan import PlannedModel
from taskscout.spec import resolve_spec
from taskscout.training import ModelResult

TASKS = ["g0_t0", "g0_t1", "g1_t0", "g1_t1"]
# Known mean gains of the auxiliary candidates on the tasks they serve, from clearly harmful to clearly useful.
AUX_GAINS = {f"aux{i}": g for i, g in enumerate((-0.3, -0.1, -0.02, 0.0, 0.02, 0.05, 0.1, 0.3))}
PAIR_GAIN = {True: 0.15, False: -0.05}  # inside / across a planted group, at the whole trunk


def _noise(key: str, seed: int, scale: float) -> float:
    """A fixed pseudo-random N(0, scale) draw per candidate and seed."""
    h = int(hashlib.sha256(f"{key}:{seed}".encode()).hexdigest()[:12], 16)
    return float(stats.norm.ppf((h % 10**9 + 0.5) / 10**9) * scale)


class KnownGainTrainer:
    """A task's loss alone is 1 + 0.1 t; with partners or an auxiliary it is (1 - gain) times that,
    gain = the candidate's known mean (scaled by branch_layer / depth for pairs) + seed noise."""

    def __init__(self, scale: float):
        self.scale, self.trained = scale, []

    def __call__(self, X, Y, heads, split, plans, *, model, training, progress, **kw):
        names = [h.name for h in heads]
        out = []
        for p in plans:
            self.trained.append(p.key)
            loss = {}
            for t in p.main:
                others = [names[x] for x in p.targets if x != t]
                if not others:
                    g = 0.0
                elif others[0].startswith("aux"):
                    g = AUX_GAINS[others[0]]
                else:
                    g = sum(PAIR_GAIN[o[:2] == names[t][:2]] for o in others) * p.branch_layer / model.depth
                candidate = f"{sorted(names[x] for x in p.targets)}:{p.branch_layer}:{names[t]}"
                noise = _noise(candidate, p.seed, self.scale) if others else 0.0
                loss[t] = (1 + 0.1 * t) * (1 - g - noise)
            out.append(ModelResult(plan=p, best_epoch=1, epochs_run=1, loss={"val": loss}, metric={"val": {}},
                                   seconds=0.0, curves=pd.DataFrame(columns=["task", "epoch", "split", "loss"]),
                                   state=None))
            progress(1)
        return out


def _candidates(ds, spec):
    values = ds.frame["x0"].to_numpy(dtype=float)
    return [AuxTask(name=n, kind="hints", serves=("g0_t0", "g1_t0"), values=values, type="regression",
                    provenance={"columns": ["x0"], "transform": "identity"}, training_only=False, score=0.3)
            for n in AUX_GAINS]


def _search(tmp_path, name, *, halving, seeds, scale):
    spec = resolve_spec("builtin:planted", {
        "tasks": TASKS, "out": str(tmp_path / name),
        "data_options": {"n_rows": 120, "n_inputs": 4, "groups": 2, "tasks_per_group": 2, "label_fraction": 0.5},
        "training": {"seeds": seeds, "epochs": 2}, "model": {"depth": 2, "width": 8},
        "search": {"phases": ["single", "pairs", "aux", "depth"], "halving": halving},
    })
    fake = KnownGainTrainer(scale)
    result = run_search(spec, train_fn=fake, candidates_fn=_candidates, finalize_run=False)
    tables = {n: pd.read_csv(spec.run_dir / n) for n in (rundir.AFFINITY, rundir.DEPTH)}
    return result, fake, tables


def _real_positive(tables) -> pd.DataFrame:
    aff = tables[rundir.AFFINITY].assign(branch_layer=-1)
    depth = tables[rundir.DEPTH].rename(columns={"group": "source"}).assign(target=tables[rundir.DEPTH]["task"])
    rows = pd.concat([aff[["source", "target", "branch_layer", "gain", "ci_low", "ci_high", "n_seeds"]],
                      depth[["source", "target", "branch_layer", "gain", "ci_low", "ci_high", "n_seeds"]]])
    return rows[rows["ci_low"] > 0].set_index(["source", "target", "branch_layer"]).sort_index()


def test_the_floor_is_zero_up_to_four_seeds_and_needs_a_spread_beyond():
    assert [gain_floor(s, None) for s in (2, 3, 4)] == [0.0, 0.0, 0.0]
    assert gain_floor(1, 0.1) is None  # one seed: nothing to halve
    assert gain_floor(5, None) is None  # S >= 5 without a bound on the spread: nothing is dropped
    t = stats.t.ppf(0.975, 4)
    assert gain_floor(5, 0.1) == pytest.approx(-0.1 * (4 - t) / math.sqrt(5))


@pytest.mark.parametrize("seeds", [3, 4, 5, 8])
def test_no_sample_with_an_interval_above_zero_has_a_value_at_or_below_the_floor(seeds):
    """Samuelson's bound, checked on samples made to sit just above zero: every value of a sample
    whose 95% t interval excludes zero from above lies above the floor (given its spread)."""
    rng = np.random.default_rng(seeds)
    t = stats.t.ppf(0.975, seeds - 1)
    checked = 0
    for _ in range(4000):
        x = rng.normal(0, 1, seeds) * rng.uniform(0.1, 2)
        x = x - x.mean() + t * x.std(ddof=1) / math.sqrt(seeds) * rng.uniform(1.0, 1.2)  # interval just above 0
        low = x.mean() - t * x.std(ddof=1) / math.sqrt(seeds)
        if low <= 0:
            continue
        checked += 1
        assert x.min() > gain_floor(seeds, x.std(ddof=1))
    assert checked > 3000


def test_split_rungs_keeps_every_candidate_it_cannot_judge():
    models = [PlannedModel("aux", ("a",), (x,), s, 2) for x in ("good", "bad", "unknown") for s in (0, 1, 2)]
    losses = pd.DataFrame([(("a",), (), 2, 0, "a", 1.0), (("a",), ("good",), 2, 0, "a", 0.9),
                           (("a",), ("bad",), 2, 0, "a", 1.0)],  # gain exactly 0: cannot end real and positive
                          columns=["tasks", "aux", "branch_layer", "seed", "task", "loss"])
    rungs = split_rungs(models, losses, (0, 1, 2))
    assert [m.aux[0] for m in rungs.first] == ["good", "bad", "unknown"]
    assert sorted({m.aux[0] for m in rungs.later}) == ["good", "unknown"]
    assert {m.seed for m in rungs.later} == {1, 2}
    assert (rungs.candidates, rungs.dropped) == (3, 1)


@pytest.mark.parametrize(("seeds", "scale"), [(3, 0.08), (5, 0.08)])
def test_halving_finds_every_real_gain_of_a_full_run_with_the_same_interval(tmp_path, seeds, scale):
    full, full_fake, full_tables = _search(tmp_path, "full", halving=False, seeds=seeds, scale=scale)
    half, half_fake, half_tables = _search(tmp_path, "half", halving=True, seeds=seeds, scale=scale)
    real_full, real_half = _real_positive(full_tables), _real_positive(half_tables)
    assert len(real_full) >= 2  # known useful auxiliaries, planted pairs
    pd.testing.assert_frame_equal(real_half.loc[real_full.index], real_full)
    assert set(real_half.index) == set(real_full.index)  # nothing dropped can be real
    assert set(half_fake.trained) < set(full_fake.trained)  # the harmful candidates got one seed
    aux = {o.phase: o for o in half.phases}["aux"]
    assert aux.note.startswith("successive halving:") and aux.planned < {o.phase: o for o in full.phases}["aux"].planned
