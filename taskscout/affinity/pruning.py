"""Skipping hopeless candidates: a gain predictor from learning-curve features, and its record.

Bingel and Sogaard (EACL 2017) predict from features of the single-task learning curves whether
pairing a main task with an auxiliary task helps. Here the features are those of
`taskscout.curves` (per task: plateau epoch and the slopes of the normalised training curve at
10, 20, 30, 50 and 70% of training, `rundir.CURVE_FEATURE_COLUMNS`); the plateau epoch is divided
by the number of epochs trained so that runs of different length compare. A candidate pair
(source j -> target i) is described by [features of i, features of j] and labelled 1 when its
measured gain is real and positive (interval entirely above 0).

`GainPredictor` is a logistic regression (standardised features, L2 penalty `C`, classes weighted
to balance) fitted on the pairs measured so far. It calls a candidate hopeless when the predicted probability of a real gain
is below `threshold`. It refuses to call anything hopeless until it has seen at least
`min_train` measured pairs with both outcomes present: before that, it skips nothing.

`PruningRecord` keeps the account: candidates seen, skipped, models and seconds saved, and, in test
mode (the skipped candidates are trained anyway), how many skipped ones turned out to have a real
gain, i.e. would have been chosen.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from taskscout.curves import SLOPE_NAMES
from taskscout.errors import DataError

FEATURES = ("plateau_fraction", *SLOPE_NAMES)


def pair_features(curve_features: pd.DataFrame, pairs: Sequence[tuple[str, str]], *, epochs: int) -> np.ndarray:
    """(len(pairs), 2 * len(FEATURES)): [target features, source features] per (source, target) pair."""
    missing = [c for c in ("task", "plateau_epoch", *SLOPE_NAMES) if c not in curve_features.columns]
    if missing:
        raise DataError(f"curve features lack columns {missing}; expected the columns of curve_features.csv")
    table = curve_features.set_index("task")
    per_task = pd.DataFrame({
        "plateau_fraction": table["plateau_epoch"].astype(float) / max(1, epochs),
        **{s: table[s].astype(float) for s in SLOPE_NAMES},
    })
    absent = sorted({t for p in pairs for t in p} - set(per_task.index))
    if absent:
        raise DataError(f"no curve features for {absent}; train their single-task models first")
    rows = [np.concatenate([per_task.loc[t].to_numpy(), per_task.loc[s].to_numpy()]) for s, t in pairs]
    return np.array(rows, dtype=float).reshape(len(rows), 2 * len(FEATURES))


class GainPredictor:
    """Predicts from curve features whether a (source -> target) pair has a real positive gain."""

    def __init__(self, *, threshold: float = 0.1, min_train: int = 6, C: float = 1.0) -> None:
        self.threshold = threshold
        self.min_train = min_train
        self.C = C

    def fit(self, curve_features: pd.DataFrame, measured: pd.DataFrame, *, epochs: int) -> GainPredictor:
        """Fit on measured affinity rows (source, target, ci_low, ...) whose tasks have curve features."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        known = set(curve_features["task"])
        rows = measured[measured["source"].isin(known) & measured["target"].isin(known)]
        rows = rows[rows["ci_low"].notna()]
        pairs = list(zip(rows["source"], rows["target"], strict=True))
        y = (rows["ci_low"].astype(float) > 0).to_numpy(int)
        self.epochs_ = epochs
        self.n_train_ = len(pairs)
        self.positive_rate_ = float(y.mean()) if len(y) else math.nan
        self.model_ = None
        if len(pairs) >= self.min_train and 0 < y.sum() < len(y):
            # balanced class weights: real gains are rare, and unweighted probabilities would call
            # nearly every pair hopeless; weighted ones overstate a gain's chance, so a pair skipped
            # below `threshold` is one the features really speak against
            self.model_ = make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=1000, class_weight="balanced"))
            self.model_.fit(pair_features(curve_features, pairs, epochs=epochs), y)
        self.curve_features_ = curve_features
        return self

    @property
    def ready(self) -> bool:
        """Whether the predictor was fitted on enough pairs with both outcomes to skip anything."""
        return getattr(self, "model_", None) is not None

    def predict_proba(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Probability of a real positive gain per (source, target) pair; the base rate if not ready."""
        if not hasattr(self, "n_train_"):
            raise RuntimeError("GainPredictor.fit must be called before predict_proba")
        if not pairs:
            return np.zeros(0)
        if not self.ready:
            rate = self.positive_rate_ if np.isfinite(self.positive_rate_) else 1.0
            return np.full(len(pairs), rate)
        return self.model_.predict_proba(pair_features(self.curve_features_, pairs, epochs=self.epochs_))[:, 1]

    def hopeless(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Bool per pair: predicted probability of a real gain below `threshold` (never before `ready`)."""
        if not self.ready:
            return np.zeros(len(pairs), bool)
        return self.predict_proba(pairs) < self.threshold

    def hopeless_models(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Bool per unordered pair (a, b) trained as one model serving both directions: hopeless
        only when both a -> b and b -> a are."""
        if not pairs:
            return np.zeros(0, bool)
        both = self.hopeless([(a, b) for a, b in pairs] + [(b, a) for a, b in pairs])
        return both[: len(pairs)] & both[len(pairs):]


@dataclass(frozen=True)
class PruningRecord:
    """What pruning did: candidates seen and skipped, compute saved, and (test mode) what it cost.

    `would_be_chosen` counts skipped candidates that, trained anyway in test mode, turned out to be
    chosen (a real positive gain for pairs; among the best subsets for subset trials); it is -1
    when the skipped candidates were not trained (not test mode).
    """

    what: str  # "pairs" (gain predictor) or "subsets" (Optuna pruner)
    candidates: int
    skipped: int
    models_saved: int
    epochs_saved: int
    seconds_saved: float
    would_be_chosen: int = -1

    @property
    def miss_rate(self) -> float:
        """Fraction of skipped candidates that would have been chosen (NaN without test mode)."""
        if self.would_be_chosen < 0 or self.skipped == 0:
            return math.nan
        return self.would_be_chosen / self.skipped

    def row(self) -> dict[str, object]:
        return {**self.__dict__, "miss_rate": self.miss_rate}


def pair_pruning_record(
    skipped: Iterable[tuple[str, str]],
    candidates: int,
    *,
    models_per_pair: int,
    epochs_per_model: float,
    seconds_per_model: float,
    measured_anyway: pd.DataFrame | None = None,
    both_directions: bool = False,
) -> PruningRecord:
    """The record of the gain predictor's skips; `measured_anyway` (test mode) are their measured rows.

    A skipped (source, target) would have been chosen when its measured gain is real and positive;
    with `both_directions` (one model per unordered pair), when either direction's is."""
    skipped = list(skipped)
    chosen = -1
    if measured_anyway is not None:
        real = measured_anyway[measured_anyway["ci_low"].astype(float) > 0]
        found = set(zip(real["source"], real["target"], strict=True))
        chosen = sum(1 for s, t in skipped if (s, t) in found or (both_directions and (t, s) in found))
    n_models = len(skipped) * models_per_pair
    return PruningRecord(
        what="pairs", candidates=candidates, skipped=len(skipped), models_saved=n_models,
        epochs_saved=int(round(n_models * epochs_per_model)), seconds_saved=n_models * seconds_per_model,
        would_be_chosen=chosen,
    )


def gain_predictor_test(
    measured: pd.DataFrame,
    curve_features: pd.DataFrame,
    *,
    epochs: int,
    models_per_pair: int,
    epochs_per_model: float,
    seconds_per_model: float,
    fraction: float = 0.5,
    threshold: float = 0.1,
    seed: int = 0,
) -> tuple[PruningRecord, GainPredictor]:
    """Test mode of the gain predictor, on a pairs phase that trained every pair.

    The unordered pairs are shuffled (seeded); the first `fraction` play "the pairs measured so
    far" and train the predictor; each remaining pair is skipped when both of its directions are
    predicted hopeless. Since every pair was in fact trained, the record says how many skipped
    pairs had a real positive gain in either direction (would have been chosen).
    """
    known = set(curve_features["task"])
    pairs = sorted({tuple(sorted((s, t))) for s, t in zip(measured["source"], measured["target"], strict=True)
                    if s in known and t in known})
    order = np.random.default_rng(seed).permutation(len(pairs))
    n_train = int(round(fraction * len(pairs)))
    train = {pairs[i] for i in order[:n_train]}
    rest = [pairs[i] for i in order[n_train:]]
    seen = measured[[tuple(sorted((s, t))) in train for s, t in zip(measured["source"], measured["target"], strict=True)]]
    predictor = GainPredictor(threshold=threshold).fit(curve_features, seen, epochs=epochs)
    skip = predictor.hopeless_models(rest)
    skipped = [p for p, k in zip(rest, skip, strict=True) if k]
    record = pair_pruning_record(skipped, len(rest), models_per_pair=models_per_pair, epochs_per_model=epochs_per_model,
                                 seconds_per_model=seconds_per_model, measured_anyway=measured, both_directions=True)
    return record, predictor
