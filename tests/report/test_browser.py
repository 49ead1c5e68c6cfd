"""report.html in headless Chromium: no console error, no failed or network request, no dialog,
every section rendered (each plot has its svg), and user strings shown as literal text.

Needs Debian's chromium (`apt-get install -y chromium`); skipped when /usr/bin/chromium is absent.
The page is driven over the DevTools protocol on a pipe (tests/report/cdp.py), no extra packages.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taskscout import rundir
from taskscout.report import build_report
from taskscout.report.html import SECTION_TITLES

from .cdp import CHROMIUM, Browser
from .conftest import BOLD, EVIL, STUDY, write_run_dir

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is absent (apt-get install -y chromium)"),
]

WAIT_FOR_PLOTS = """
new Promise(resolve => {
  const t0 = Date.now();
  (function check() {
    const divs = [...document.querySelectorAll('.plotly-graph-div')];
    if (divs.every(d => d.querySelector('.main-svg')) || Date.now() - t0 > 15000) resolve(true);
    else setTimeout(check, 100);
  })();
})
"""

INSPECT = """
JSON.stringify({
  title: document.title,
  h1: document.querySelector('h1').textContent,
  imgs: document.querySelectorAll('img').length,
  sections: [...document.querySelectorAll('section')].map(s => ({
    id: s.id,
    heading: s.querySelector('h2').textContent,
    text: s.textContent,
    missing: s.querySelectorAll('p.missing').length,
    figures: [...s.querySelectorAll('.plotly-graph-div')].map(d => ({
      id: d.id, svgs: d.querySelectorAll('.main-svg').length, text: d.textContent,
    })),
  })),
})
"""


def _partial_run_dir(d: Path) -> Path:
    write_run_dir(d)
    for name in (rundir.AGREEMENT, rundir.DEPTH, rundir.VERIFY, rundir.CURVES, rundir.COMPUTE):
        (d / name).unlink()
    return d


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """Both reports (complete and partial run directory) as rendered in one browser session."""
    root = tmp_path_factory.mktemp("browser")
    reports = {
        "complete": build_report(write_run_dir(root / "complete")),
        "partial": build_report(_partial_run_dir(root / "partial")),
    }
    out = {}
    with Browser() as b:
        for key, path in reports.items():
            start = len(b.events)
            b.open(path)
            b.evaluate(WAIT_FOR_PLOTS)
            b.settle(0.5)
            out[key] = {"dom": json.loads(b.evaluate(INSPECT)), "problems": b.problems(since=start)}
    return out


@pytest.mark.parametrize("key", ["complete", "partial"])
def test_no_console_error_failed_request_or_dialog(pages, key):
    assert pages[key]["problems"] == []


@pytest.mark.parametrize("key", ["complete", "partial"])
def test_every_section_and_plot_rendered(pages, key):
    dom = pages[key]["dom"]
    assert [s["id"] for s in dom["sections"]] == list(SECTION_TITLES)
    assert [s["heading"] for s in dom["sections"]] == list(SECTION_TITLES.values())
    for s in dom["sections"]:
        for f in s["figures"]:
            assert f["svgs"] >= 1, f"{f['id']} in section {s['id']} has no svg"
    expected = {"affinity": 1, "graph": 1, "grouping": 3, "auxiliaries": 1, "curves": 1, "agreement": 1, "history": 2, "verify": 1}
    if key == "partial":
        expected.update(grouping=2, curves=0, agreement=0, history=1, verify=0)
    assert {s["id"]: len(s["figures"]) for s in dom["sections"] if s["id"] != "summary"} == expected


def test_missing_files_are_explained_in_the_page(pages):
    sections = {s["id"]: s for s in pages["partial"]["dom"]["sections"]}
    assert "taskscout verify" in sections["verify"]["text"]
    assert "--phase estimators" in sections["agreement"]["text"]
    assert "--skip single" in sections["curves"]["text"]
    assert sections["verify"]["missing"] == 1


def test_user_strings_render_as_literal_text(pages):
    dom = pages["complete"]["dom"]
    assert dom["imgs"] == 0  # the task name did not become an <img>
    assert dom["title"] == f"taskscout report: {STUDY}" and dom["h1"] == dom["title"]
    figures = {f["id"]: f["text"] for s in dom["sections"] for f in s["figures"]}
    # Tick labels of the heatmap and node labels of the graph show the names character for character
    # (plotly would have rendered <b>delta</b> as a bold "delta" had it not been escaped).
    for fig in ("fig-affinity_heatmap", "fig-affinity_graph", "fig-group_tree", "fig-learning_curves"):
        assert EVIL in figures[fig] and BOLD in figures[fig]
    summary = next(s for s in dom["sections"] if s["id"] == "summary")
    assert EVIL in summary["text"] and BOLD in summary["text"]


MANY_INSPECT = """
JSON.stringify({
  bytes: document.documentElement.outerHTML.length,
  details: document.querySelectorAll('details').length,
  openDetails: document.querySelectorAll('details[open]').length,
  heatmapOutlines: document.querySelectorAll('#fig-affinity_heatmap .shapelayer path').length,
  graphTraces: document.getElementById('fig-affinity_graph').data.length,
  svgs: [...document.querySelectorAll('.plotly-graph-div')].map(d => d.querySelectorAll('.main-svg').length),
})
"""


@pytest.fixture(scope="module")
def many_page(tmp_path_factory):
    from .conftest import write_many_run_dir

    path = build_report(write_many_run_dir(tmp_path_factory.mktemp("many") / "run"))
    with Browser() as b:
        b.open(path)
        b.evaluate(WAIT_FOR_PLOTS)
        b.settle(0.5)
        return {"dom": json.loads(b.evaluate(MANY_INSPECT)), "problems": b.problems(), "size": path.stat().st_size}


def test_a_hundred_task_report_renders_readably(many_page):
    from .conftest import MANY_GROUPS, MANY_PER_GROUP

    dom = many_page["dom"]
    assert many_page["problems"] == []
    assert many_page["size"] < 10 * 2**20  # the page stays under 10 MB
    assert dom["svgs"] and all(n >= 1 for n in dom["svgs"])
    assert dom["heatmapOutlines"] == MANY_GROUPS  # each recommended group outlined on the heatmap
    # only real edges: the 10 x 10 x 9 within-group gains (interval excludes 0), none of the noise,
    # plus one node trace per group
    assert dom["graphTraces"] == MANY_GROUPS * MANY_PER_GROUP * (MANY_PER_GROUP - 1) + MANY_GROUPS
    assert dom["details"] >= 1 and dom["openDetails"] == 0  # long tables come collapsed
