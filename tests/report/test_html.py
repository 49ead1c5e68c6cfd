"""report.html: self-contained, plotly.js once, every section, user strings escaped, missing files explained."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import plotly.offline
import pytest

from taskscout import rundir
from taskscout.errors import MissingResultsError
from taskscout.report import build_report, build_sections
from taskscout.report.html import SECTION_TITLES

from .conftest import BOLD, EVIL, STUDY, TASKS


@pytest.fixture
def page(run_dir) -> str:
    return build_report(run_dir).read_text(encoding="utf-8")


def test_writes_report_html_into_the_run_directory(run_dir):
    path = build_report(run_dir)
    assert path == run_dir / rundir.REPORT and path.stat().st_size > 0
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def test_self_contained(page):
    remote = re.findall(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//", page, flags=re.I)
    assert remote == []
    assert re.search(r"@import|url\(\s*[\"']?https?:", page) is None


def test_plotly_js_inlined_exactly_once(page):
    js = plotly.offline.get_plotlyjs()
    assert page.count(js[:300]) == 1
    assert page.count(js[-300:]) == 1
    assert page.count("Plotly.newPlot(") == 11  # one call per figure of the complete run directory


def test_every_section_heading_present(page):
    for sid, title in SECTION_TITLES.items():
        assert f'<section id="{sid}"><h2>{title}</h2>' in page


def test_user_strings_never_appear_unescaped(page):
    for raw in (EVIL, BOLD, STUDY, "<script>alert"):
        assert raw not in page
    # The page carries them entity-escaped; so do the figure payloads, where plotly decodes the
    # entities back into literal text (plotly's own JSON escaping would leave \u003cimg there,
    # which a browser decodes and plotly would then parse as markup).
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "demo &lt;script&gt;alert(&quot;study&quot;)&lt;script&gt;" in page
    payloads = "".join(re.findall(r"Plotly\.newPlot\((.*?)\)\s*\};", page, flags=re.S))
    assert payloads.count("&lt;img src=x onerror=alert(1)&gt;") > 10
    assert "\\u003cimg" not in payloads and "\\u003cb\\u003edelta" not in payloads


def test_the_agreement_section_says_when_the_estimators_were_not_run(run_dir):
    agreement = pd.read_csv(run_dir / rundir.AGREEMENT)
    assert {"tag", "gradcos", "rsa"} & set(agreement["method"])
    assert "--phase estimators" not in build_report(run_dir).read_text(encoding="utf-8")
    agreement[agreement["method"] == "surrogate"].to_csv(run_dir / rundir.AGREEMENT, index=False)  # a default search's
    assert "were not run: they are diagnostics, off by default" in build_report(run_dir).read_text(encoding="utf-8")


def test_missing_optional_files_say_what_to_run(run_dir):
    for name in (rundir.AGREEMENT, rundir.DEPTH, rundir.VERIFY, rundir.CURVES, rundir.CURVE_FEATURES,
                 rundir.CANDIDATES, rundir.COMPUTE):
        (run_dir / name).unlink()
    page = build_report(run_dir).read_text(encoding="utf-8")
    assert "taskscout verify" in page
    assert "--phase estimators" in page
    assert "--skip depth" in page
    assert "--skip single" in page
    # The hint is the study's own (resumable) search command, shell-quoted, then HTML-escaped.
    tasks = ",".join(TASKS).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert f"<code>taskscout search builtin:planted --tasks &#x27;{tasks}&#x27; --out {run_dir}</code>" in page
    sections = {s.id: s for s in build_sections(run_dir)}
    assert [b.name for b in sections["grouping"].figures] == ["group_tree", "pareto"]
    assert sections["verify"].figures == () and sections["agreement"].figures == ()
    # Aux gains are still in affinity.csv; without candidates.json their kind is unknown.
    assert [b.name for b in sections["auxiliaries"].figures] == ["aux_leaderboard"]


def test_a_run_directory_with_only_the_spec_still_builds(run_dir):
    for p in run_dir.iterdir():
        if p.name != rundir.SPEC:
            p.unlink()
    page = build_report(run_dir).read_text(encoding="utf-8")
    assert page.count("Plotly.newPlot(") == 0
    assert page.count('class="missing"') >= len(SECTION_TITLES) - 1
    for sid in SECTION_TITLES:
        assert f'<section id="{sid}">' in page


def test_no_spec_is_a_clear_error(tmp_path):
    with pytest.raises(MissingResultsError, match="spec.json"):
        build_report(tmp_path)
    with pytest.raises(MissingResultsError, match="does not exist"):
        build_report(tmp_path / "nope")


def test_building_the_report_never_imports_torch(run_dir):
    code = (
        "import sys; from taskscout.report import build_report; "
        f"build_report({str(run_dir)!r}); print('torch' in sys.modules, 'optuna' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == ["False", "False"]


def test_a_related_auxiliary_trained_as_a_member_is_named_not_none(run_dir):
    # recommendation.json lists g0_t0__related for g0_t2 under `auxiliaries` but not in the group
    # that trains g0_t0 itself; the grouping table said "none" beside it.
    rec = rundir.read_json(run_dir / rundir.RECOMMENDATION)
    rec["tasks"] = ["g0_t0", "g0_t2"]
    rec["groups"] = [{"tasks": ["g0_t0", "g0_t2"], "serves": ["g0_t0", "g0_t2"], "branch_layer": 2,
                      "branch_source": "measured", "aux": [], "expected_gain": {}, "ci": {}}]
    rec["assignment"] = {"g0_t0": 0, "g0_t2": 0}
    rec["auxiliaries"] = {"g0_t0": [], "g0_t2": [{"name": "g0_t0__related", "kind": "related",
                                                   "expected_gain": 0.1, "ci": [0.05, 0.15]}]}
    rundir.write_json(run_dir / rundir.RECOMMENDATION, rec)
    summary = next(s for s in build_sections(run_dir) if s.id == "summary")
    row = re.search(r"<tr><td>1</td>(.*?)</tr>", "".join(b for b in summary.blocks if isinstance(b, str))).group(1)
    assert ("g0_t0__related (for g0_t2) is a copy of a member task of this network, trained in it as a task"
            in row)
    assert "none" not in row


def test_summary_counts_every_phase_of_compute_csv(run_dir):
    # It counted trials.parquet (the measured phases only) and set a "wall time" from the trials'
    # shares of their training calls beside the phases' sum, which it could undercut.
    summary = next(s for s in build_sections(run_dir) if s.id == "summary")
    facts = summary.blocks[0]
    assert "27 models, 270 epochs trained over every phase" in facts
    assert ("14.0 s (0.2 min) of wall time spent training, summed over the phases (single 4.0 s, pairs 3.0 s, "
            "aux 2.0 s, depth 4.5 s, estimators 0.5 s)") in facts
    assert "wall time</dt>" not in facts


def test_selection_table_shows_candidates_side_by_side():
    from taskscout.report.html import _selection_table

    def cand(name, nets, total, diff):
        return {"name": name, "aliases": [], "origin": "", "totals": {}, "total": total, "vs_best_baseline": diff,
                "networks": [{"tasks": n, "serves": n, "branch_layer": 2, "aux": []} for n in nets]}

    sel = {"rows": "crossfit", "rows_detail": "fold rows", "seeds": [20000, 20001, 20002], "chosen": "recommended",
           "best_baseline": "all-together",
           "candidates": [cand("all-together", [["a", "b", "c"]], [2.5, 2.4, 2.6], [0.0, 0.0, 0.0]),
                          cand("recommended", [["a", "b"], ["c"]], [2.2, 2.1, 2.3], [-0.3, -0.4, -0.2]),
                          cand("all-separate", [["a"], ["b"], ["c"]], [3.0, 3.0, 3.0], [0.5, 0.4, 0.6])]}
    head, table = _selection_table(sel)
    assert "3 candidates retrained with 3 fresh seeds" in head and "the better baseline is all-together" in head
    rows = table.split("<tr>")[2:]
    assert "chosen" in rows[1] and "{a, b}" in rows[1] and "2.200 [+2.100, +2.300]" in rows[1]
    assert "-0.300 [-0.400, -0.200]" in rows[1] and "none" in rows[2]
    assert _selection_table(None) == []
