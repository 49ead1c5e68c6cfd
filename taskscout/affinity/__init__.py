"""Task affinity: how much one task (or auxiliary) helps another.

`measured` holds the ground truth from trained models: paired per-seed gains
gain(j -> i) = (L_i[alone] - L_i[with j]) / L_i[alone] with Student-t intervals over seeds.
Cheap estimators live next to it, one file each.
"""

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
    "Interval", "depth_gains", "gain_interval", "group_scores", "measured_affinity", "paired_gains",
    "paired_norm_losses", "positive_pairs", "single_task_losses", "t_interval",
]
