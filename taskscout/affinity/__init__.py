"""Task affinity: how much one task (or auxiliary) helps another, measured and estimated.

`measured` holds the ground truth from trained models: paired per-seed gains
gain(j -> i) = (L_i[alone] - L_i[with j]) / L_i[alone] with Student-t intervals over seeds.

`ESTIMATORS` is the registry of affinity estimators, filled where each is defined (one file
each: `measured_estimator`, `tag`, `gradcos`, `rsa`, `surrogate`); build one with
`make_estimator(name, **params)` and run it with `.estimate(problem)`. `agreement` scores the
cheap estimators against the measured gains. `subsets` trains Optuna-proposed task subsets for
the surrogate (the search's subsets phase drives it too); it is imported where it is used, as is
torch by the estimator modules, so `import taskscout.affinity` stays light.
"""

from taskscout.affinity import gradcos, measured_estimator, rsa, surrogate, tag  # noqa: F401  (fill the registry)
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
from taskscout.affinity.measured import (
    Interval,
    depth_gains,
    gain_interval,
    group_scores,
    measured_affinity,
    paired_gains,
    paired_norm_losses,
    positive_pairs,
    single_task_losses,
    t_interval,
)

__all__ = [
    "ESTIMATORS", "AffinityEstimator", "AffinityProblem", "Compute", "EstimatorResult", "Interval",
    "affinity_rows", "depth_gains", "gain_interval", "group_scores", "make_estimator", "measured_affinity",
    "paired_gains", "paired_norm_losses", "positive_pairs", "register_estimator", "single_task_losses",
    "t_interval",
]
