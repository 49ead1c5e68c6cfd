"""From measured gains to a recommendation: the affinity graph, groups under a budget, branch layers.

Inputs are the run-directory tables (rundir.py): `affinity.csv` (gain(j -> i) with a 95% interval
per method), `group_scores.csv` (a task's normalised loss L_task(in group) / L_task(alone) in
measured or surrogate-predicted groups) and `depth.csv` (gain per branch layer). Everything here
works on those tables alone, so a recommendation can be rebuilt without training anything.

Scores. A task's normalised loss in a group comes from, in this order: a measured group score (a
model the measured phases trained, or a subset the subsets phase trained, `with_subset_scores`), a
surrogate prediction, and otherwise Standley et al.'s higher-order approximation (HOA): the mean
over its partners j of the pair's normalised loss 1 - gain(j -> task). HOA's interval is the mean
of the partners' bounds (the partners' estimates share the task's single-task baseline, so they
are far from independent; averaging the bounds is the conservative choice).

Grouping. Choose networks (task groups, which may overlap, as in Standley et al.) so that the sum
over tasks of the normalised loss in the chosen network that serves the task is smallest; each
task is served by the best chosen network that contains it, and a task served alone has
normalised loss 1. A task joins a group only where its gain is real (the interval of its
normalised loss lies entirely below 1 and, with `search.fdr` < 1, the measured gain survives
Benjamini-Hochberg false-discovery-rate control over every measured comparison:
`control_false_discoveries`); otherwise it is served alone. The budget is a maximum
number of networks. Up to EXACT_MAX_TASKS tasks the solver is exact (branch and bound, below);
above that it is a greedy agglomeration (see `solve_grouping`).

Intervals of totals. Per-task intervals are combined as if the tasks' errors were independent:
total +- sqrt(sum of squared half-widths), lower and upper sides separately. Two solutions are
compared the same way on the tasks whose scores differ, which is what "the difference is inside
the intervals" means below.

    graph.py          the affinity graph: edges, strongest partners, GraphML
    scores.py         group scores (measured, surrogate, HOA) and false-discovery control
    solve.py          the grouping solver (exact, greedy) and the budget choice
    choices.py        per group: the branch layer and the auxiliaries
    subset_scores.py  measured subsets as group scores, surrogate predictions, groups to measure
    recommend.py      recommend (from tables) and recommend_run (from a run directory); the selection candidates
    selection.py      the selection stage's rule: finalists scored on held-out rows with fresh seeds

The recommendation's typed form, `Recommendation` (recommendation.json parsed and checked once,
read by export, verify and the report), is taskscout.recommendation: a module of its own that
imports none of the libraries above, so that the report and export load without them.
"""

from taskscout.grouping.choices import (
    RSA_SHARE_THRESHOLD,
    SIMILARITY_COLUMNS,
    AuxChoice,
    BranchChoice,
    choose_auxiliaries,
    choose_branch_layer,
)
from taskscout.grouping.graph import (
    Transfer,
    build_graph,
    load_graphml,
    negative_transfer_edges,
    save_graphml,
    strongest_partners,
)
from taskscout.grouping.recommend import (
    baselines_from_trials,
    recommend,
    recommend_run,
    selection_candidates,
    selection_candidates_run,
    write_recommendation,
)
from taskscout.grouping.scores import (
    ALONE,
    SCORE_SOURCES,
    GroupScorer,
    ScoreFn,
    TaskScore,
    control_false_discoveries,
)
from taskscout.grouping.selection import (
    Candidate,
    CandidateScore,
    Network,
    Selection,
    choose,
    select,
)
from taskscout.grouping.solve import (
    EXACT_MAX_TASKS,
    BudgetChoice,
    Grouping,
    choose_grouping,
    difference_is_inside_intervals,
    solve_grouping,
)
from taskscout.grouping.subset_scores import (
    SURROGATE_MAX_GROUP,
    anchored_predictions,
    groups_to_measure,
    observed_group_scores,
    sampled_predictor,
    with_subset_scores,
)
from taskscout.recommendation import Recommendation, read_recommendation

__all__ = [
    "ALONE", "EXACT_MAX_TASKS", "RSA_SHARE_THRESHOLD", "SCORE_SOURCES", "SIMILARITY_COLUMNS", "SURROGATE_MAX_GROUP",
    "AuxChoice", "BranchChoice", "BudgetChoice", "GroupScorer", "Grouping", "Recommendation", "ScoreFn", "TaskScore",
    "Transfer", "read_recommendation",
    "anchored_predictions", "baselines_from_trials", "build_graph", "choose_auxiliaries", "choose_branch_layer",
    "choose_grouping", "control_false_discoveries", "difference_is_inside_intervals", "groups_to_measure",
    "load_graphml", "negative_transfer_edges", "observed_group_scores", "recommend", "recommend_run", "sampled_predictor",
    "save_graphml", "solve_grouping", "strongest_partners", "with_subset_scores", "write_recommendation",
    "Candidate", "CandidateScore", "Network", "Selection", "choose", "select", "selection_candidates",
    "selection_candidates_run",
]
