"""Affinity: how much each task helps each other task, measured and estimated.

`ESTIMATORS` is the registry of affinity estimators (one file each in this package); build one
with `make_estimator(name, **params)` and run it with `.estimate(problem)`. `agreement` scores
the cheap estimators against the measured gains.
"""

from taskscout.affinity.base import (
    ESTIMATORS,
    AffinityEstimator,
    AffinityProblem,
    Compute,
    EstimatorResult,
    affinity_rows,
    make_estimator,
    register_estimator,
)

__all__ = [
    "ESTIMATORS", "AffinityEstimator", "AffinityProblem", "Compute", "EstimatorResult",
    "affinity_rows", "make_estimator", "register_estimator",
]
