"""Per-group choices: the branch layer (measured depth gains, else representation similarity) and the auxiliaries."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from taskscout import rundir
from taskscout.errors import SpecError
from taskscout.grouping._tables import _EPS, _key, _num, _require_columns, _split_group

# Representation-similarity fallback for the branch layer: tasks may share every layer up to the
# deepest one where the Spearman correlation of their representation dissimilarity matrices is at
# least this; 0.5 is the usual "strong correlation" cut-off for rank correlations.
RSA_SHARE_THRESHOLD = 0.5
SIMILARITY_COLUMNS = ("pair", "layer", "similarity")


# ---------------------------------------------------------------- branch layer


@dataclass(frozen=True)
class BranchChoice:
    """Where a group's shared trunk should branch, and the evidence."""

    layer: int
    source: str  # depth | measured | rsa | default
    mean_gain: float = math.nan
    ci: tuple[float, float] = (math.nan, math.nan)


def _depth_rows(depth: pd.DataFrame | None, group: tuple[str, ...], order: Sequence[str]) -> pd.DataFrame:
    if depth is None or not len(depth):
        return pd.DataFrame(columns=list(rundir.DEPTH_COLUMNS))
    _require_columns(depth, rundir.DEPTH_COLUMNS, "depth")
    keys = depth["group"].map(lambda g: rundir.group_key(_split_group(g), order))
    rows = depth[keys == rundir.group_key(group, order)]
    if len(rows) or len(group) < 3:
        return rows
    # A larger group that the depth phase never trained: pool the rows of its pairs, if all exist.
    pairs = {rundir.group_key(p, order) for p in itertools.combinations(group, 2)}
    inside = keys.isin(pairs)
    return depth[inside] if set(keys[inside]) == pairs else depth.iloc[0:0]


def choose_branch_layer(
    group: Sequence[str],
    *,
    order: Sequence[str],
    depth: pd.DataFrame | None,
    similarity: pd.DataFrame | None,
    depth_L: int,
    measured: bool = False,
) -> BranchChoice:
    """The branch layer of a multi-task network.

    `measured`: the scores the network is chosen on were measured on this very group with the
    whole trunk shared (pairs, all-together, trained subsets). Unless the depth phase trained the
    group itself at other layers, its branch layer is then `depth_L`, source "measured": the
    configuration whose gains were measured, rather than a pooled or representation-similarity
    guess (on planted data, RSA's layer 1 for measured triples lost 24% test loss to all-together
    where the measured full sharing was within noise of it).

    From the depth phase: per layer, the mean gain over the group's tasks (interval: mean of the
    bounds), at layers where every task has a row; the layer with the best mean wins, except that
    a deeper layer (more sharing, fewer parameters) takes its place when the difference of the two
    means is inside their intervals (independent errors); among those, the deepest. A group of
    three or more that the depth phase never trained pools the rows of its pairs.
    Without depth rows: the representation-similarity estimate (rows pair, layer, similarity):
    the deepest layer at which every pair of the group has similarity >= RSA_SHARE_THRESHOLD, or,
    when no layer reaches it, the layer where the weakest pair is most similar. Without either:
    full sharing (`depth_L`), source "default".
    """
    group = _key(group, order)
    rows = _depth_rows(depth, group, order)
    if measured and not (len(rows) and set(rows["group"].map(lambda g: _key(_split_group(g), order))) == {group}):
        return BranchChoice(depth_L, "measured")
    if len(rows):
        layers = []
        for layer, at in rows.groupby("branch_layer"):
            if not set(group) <= set(at["task"].astype(str)):
                continue
            g, lo, hi = at["gain"].astype(float), at["ci_low"].astype(float), at["ci_high"].astype(float)
            if not (np.isfinite(g).all()):
                continue
            layers.append((int(layer), float(g.mean()), float(lo.mean()), float(hi.mean())))
        if layers:
            best = max(layers, key=lambda r: (r[1], r[0]))
            ties = [
                r for r in layers
                if r[0] >= best[0] and best[1] - r[1] <= math.sqrt((best[1] - best[2]) ** 2 + (r[3] - r[1]) ** 2) + _EPS
            ]
            pick = max(ties, key=lambda r: r[0])
            return BranchChoice(pick[0], "depth", pick[1], (pick[2], pick[3]))
    if similarity is not None and len(similarity):
        _require_columns(similarity, SIMILARITY_COLUMNS, "similarity")
        keys = similarity["pair"].map(lambda p: rundir.group_key(_split_group(p), order))
        pairs = {rundir.group_key(p, order) for p in itertools.combinations(group, 2)}
        sims = similarity[keys.isin(pairs)].assign(_pair=keys[keys.isin(pairs)])
        weakest = [
            (int(layer), float(at["similarity"].min()))
            for layer, at in sims.groupby("layer")
            if set(at["_pair"]) == pairs and np.isfinite(at["similarity"].astype(float)).all()
        ]
        if weakest:
            passing = [r for r in weakest if r[1] >= RSA_SHARE_THRESHOLD]
            pick = max(passing, key=lambda r: r[0]) if passing else max(weakest, key=lambda r: (r[1], -r[0]))
            return BranchChoice(pick[0], "rsa")
    return BranchChoice(depth_L, "default")


# ---------------------------------------------------------------- auxiliaries


@dataclass(frozen=True)
class AuxChoice:
    name: str
    kind: str
    serves: str
    expected_gain: float
    ci: tuple[float, float]


def choose_auxiliaries(
    affinity: pd.DataFrame,
    *,
    tasks: Sequence[str],
    aux_kinds: Mapping[str, str] | None = None,
    cap: int = 3,
    discovered: Mapping[tuple[str, str], bool | None] | None = None,
) -> dict[str, list[AuxChoice]]:
    """Per main task, the auxiliaries with a real measured gain on it (ci_low > 0), best first,
    at most `cap` of them. An auxiliary is any source that is not one of `tasks`. With
    `discovered` ((auxiliary, task) -> the false-discovery-rate verdict, as
    `GroupScorer.aux_rows` holds it) a gain must also be a discovery."""
    _require_columns(affinity, rundir.AFFINITY_COLUMNS, "affinity")
    if not isinstance(cap, int) or cap < 0:
        raise SpecError(f"the auxiliary cap must be an int >= 0. Got {cap!r} instead.")
    aux_kinds = dict(aux_kinds or {})
    main = set(tasks)
    rows = affinity[
        (affinity["method"] == "measured") & affinity["target"].isin(main) & ~affinity["source"].isin(main)
    ]
    out: dict[str, list[AuxChoice]] = {t: [] for t in tasks}
    for r in rows.to_dict("records"):
        lo, hi, gain = _num(r["ci_low"]), _num(r["ci_high"]), _num(r["gain"])
        if lo > 0 and math.isfinite(gain):
            name = str(r["source"])
            if discovered is not None and discovered.get((name, str(r["target"]))) is False:
                continue
            out[str(r["target"])].append(AuxChoice(name, aux_kinds.get(name, "unknown"), str(r["target"]), gain, (lo, hi)))
    for t in out:
        out[t] = sorted(out[t], key=lambda a: (-a.expected_gain, a.name))[:cap]
    return out
