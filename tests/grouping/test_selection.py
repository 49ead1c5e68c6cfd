"""The selection rule over known held-out losses (no training)."""

import math

import pytest

from taskscout.errors import MissingResultsError
from taskscout.grouping import Candidate, Network, Selection, select

TASKS = ("a", "b", "c", "d")
SEEDS = (20000, 20001, 20002, 20003)


def cand(name, groups):
    return Candidate(name, tuple(Network(tuple(g), tuple(g), 2) for g in groups), "")


SEP = cand("all-separate", [[t] for t in TASKS])
TOG = cand("all-together", [TASKS])
REC = cand("recommended", [["a", "b"], ["c", "d"]])


def losses(factors, jitter=0.01):
    """(network, seed) -> task -> loss: 1 alone; `factors[name]` x 1 in that candidate's networks, with a
    seed-dependent jitter of alternating sign per candidate."""
    out = {}
    for k, c in enumerate((SEP, TOG, REC)):
        for n in c.networks:
            for i, s in enumerate(SEEDS):
                f = 1.0 if len(n.tasks) == 1 else factors[c.name] * (1 + jitter * (i % 2 * 2 - 1) * (-1) ** k)
                out[(n, s)] = {t: f for t in n.tasks}
    return out


@pytest.mark.parametrize("factors, chosen, best", [
    ({"all-together": 0.8, "recommended": 0.95}, "all-together", "all-together"),
    ({"all-together": 1.2, "recommended": 1.1}, "all-separate", "all-separate"),
    ({"all-together": 0.9, "recommended": 0.7}, "recommended", "all-together"),
    ({"all-together": 0.9, "recommended": 0.9}, "all-together", "all-together"),  # a tie: the simpler
    ({"all-together": 1.2, "recommended": 0.99}, "recommended", "all-separate"),  # within noise of separate: simpler
])
def test_rule(factors, chosen, best):
    sel = select([TOG, REC, SEP], losses(factors), SEEDS)
    assert (sel.chosen, sel.best_baseline) == (chosen, best)
    if chosen != "all-separate" and best == "all-together" and factors["all-together"] < 1:
        assert sel.score("all-separate").vs_best_baseline[1] > 0
    mean, low, high = sel.gain_vs_separate
    assert mean == pytest.approx(1 - (factors.get(chosen, 1.0) if chosen != "all-separate" else 1.0), abs=1e-9)
    assert low <= mean <= high


def test_a_candidate_worse_than_the_better_baseline_is_never_chosen():
    # all-together is clearly worse than all-separate, so the rule may not start from it
    sel = select([TOG, REC, SEP], losses({"all-together": 1.3, "recommended": 1.001}, jitter=0.02), SEEDS)
    assert sel.chosen == "recommended" and sel.best_baseline == "all-separate"
    assert any("all-together is worse than all-separate" in r for r in sel.reasons)


def test_per_task_rule_and_round_trip():
    sel = select([TOG, REC, SEP], losses({"all-together": 0.8, "recommended": 0.95}), SEEDS, rule="per-task")
    assert sel.chosen == "recommended" and "would choose all-together" in sel.reasons[-1]
    again = Selection.from_dict(sel.to_dict())
    assert again == sel
    assert again.candidate.networks == REC.networks


def test_no_held_out_losses_is_an_error():
    with pytest.raises(MissingResultsError, match="no held-out loss"):
        select([TOG, REC, SEP], {}, SEEDS)
    # one seed gives no interval: nothing is clearly better, so the simplest candidate stays
    one = select([TOG, REC, SEP], losses({"all-together": 0.9, "recommended": 0.7}), SEEDS[:1])
    assert one.chosen == "all-together" and math.isinf(one.score("recommended").total[1])
