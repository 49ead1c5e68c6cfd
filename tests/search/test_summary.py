"""The closing summary of `taskscout search` (taskscout/search/summary.py)."""

from __future__ import annotations

import pandas as pd

from taskscout import rundir
from taskscout.search import summary_text
from taskscout.search.runner import SearchResult


def test_an_undefined_spearman_is_printed_as_n_a(tmp_path):
    # With two tasks the estimators rank two gains at most; a constant ranking has no Spearman
    # and the summary printed "+nan" where the report says n/a.
    rundir.write_csv(tmp_path / rundir.AGREEMENT, pd.DataFrame(
        [("surrogate", float("nan"), 1.0, 0.04), ("tag", 0.5, 1.0, 0.1)], columns=list(rundir.AGREEMENT_COLUMNS)))
    result = SearchResult(run_dir=tmp_path, study_name="s", storage="sqlite://", phases=(), stopped_by_time_limit=False,
                          seconds=1.0, tables={}, finalized=())
    (line,) = [x for x in summary_text(result).splitlines() if x.startswith("estimators vs measured gains")]
    assert line.endswith(": surrogate n/a at 4%, tag +0.50 at 10%")
