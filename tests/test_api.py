"""Tests for the Python API (taskscout/api.py): search and open_run return a Run that does what the commands do."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

import taskscout
import taskscout.api
from taskscout import rundir
from taskscout.data.builtin import load_builtin
from taskscout.errors import DataError, MissingResultsError, SpecError
from taskscout.export import TrainingConfig, read_config
from taskscout.recommendation import Recommendation

TASKS = ["g0_t0", "g0_t1", "g1_t0"]
SMALL = {"budget": "small", "quiet": True, "training": {"epochs": 4, "seeds": 2},
         "search": {"phases": ["single", "pairs"]}}


@pytest.fixture(scope="module")
def frame_run(tmp_path_factory):
    """A search of a DataFrame (a builtin:planted frame of 400 rows), single and pairs phases."""
    frame = load_builtin("planted", {"n_rows": 400})
    out = tmp_path_factory.mktemp("api") / "run"
    return frame, taskscout.search(frame, tasks=TASKS, out=out, **SMALL)


def test_search_of_a_dataframe_keeps_it_in_the_run_directory(frame_run):
    frame, run = frame_run
    assert (run.path / "data.parquet").is_file()
    assert run.spec.data == str(run.path / "data.parquet") and run.spec.name == "dataframe"
    assert run.spec.tasks == tuple(TASKS) and run.spec.budget == "small" and run.spec.training.epochs == 4
    assert isinstance(run.recommendation, Recommendation) and run.recommendation.tasks == tuple(TASKS)
    assert set(run.affinity.columns) == set(rundir.AFFINITY_COLUMNS)
    assert set(zip(run.affinity["source"], run.affinity["target"], strict=True)) == {
        (s, t) for s in TASKS for t in TASKS if s != t}
    # single: 3 tasks x 2 seeds; pairs: 3 pairs and the all-task model, x 2 seeds
    assert run.result is not None and run.result.trained == 2 * 3 + 2 * 4
    assert run.summary().startswith("search 'dataframe': 14 models trained")


def test_open_run_reads_what_search_wrote_and_resume_reuses_it(frame_run):
    frame, run = frame_run
    again = taskscout.open_run(run.path)
    assert again.result is None and again.recommendation == run.recommendation
    assert again.affinity.equals(run.affinity)
    resumed = taskscout.search(frame, tasks=TASKS, out=run.path, **SMALL)
    assert resumed.result.trained == 0 and resumed.recommendation == run.recommendation


def test_report_export_and_verify_do_what_the_commands_do(frame_run, tmp_path):
    _, run = frame_run
    (run.path / rundir.REPORT).unlink()
    assert run.report() == run.path / rundir.REPORT and run.report().is_file()
    path = run.export(tmp_path / "train.yaml")
    config = read_config(path)
    assert isinstance(config, TrainingConfig)
    assert config.to_dict() == yaml.safe_load(path.read_text())  # the typed config round-trips the file
    assert sorted(t for g in config.groups for t in g.serves) == sorted(TASKS)
    assert config.data.source == str(run.path / "data.parquet")
    result = run.verify(seeds=2, device="cpu")
    assert result.tasks == tuple(TASKS) and len(result.seeds) == 2
    assert rundir.read_json(run.path / rundir.VERIFY) == result.to_dict()
    assert "Not verified yet" not in (run.path / rundir.REPORT).read_text(encoding="utf-8")


def test_bad_input_is_one_error_and_writes_nothing(tmp_path):
    out = tmp_path / "never"
    with pytest.raises(SpecError, match="data must be a file path, builtin:NAME"):
        taskscout.search(42, tasks=TASKS, out=out)
    with pytest.raises(SpecError, match=r"'budget' in the arguments of taskscout.search must be one of"):
        taskscout.search("builtin:planted", out=out, budget="huge")
    with pytest.raises(SpecError, match="unknown key 'epochs'.*belongs in \\[training\\]"):
        taskscout.search("builtin:planted", out=out, epochs=3)
    frame = load_builtin("planted", {"n_rows": 100})
    with pytest.raises(DataError, match="column names must be strings"):
        taskscout.search(frame.rename(columns={"x0": 0}), tasks=TASKS, out=out)
    with pytest.raises(DataError, match="nope"):
        taskscout.search(frame, tasks=["g0_t0", "nope"], out=out / "deeper", quiet=True)
    assert not out.exists()
    with pytest.raises(MissingResultsError, match="does not exist"):
        taskscout.open_run(tmp_path / "none")


def test_builtin_tasks_default_to_the_data_sets_labels(monkeypatch, tmp_path):
    seen = {}

    def fake(spec, **kw):
        seen["spec"] = spec
        return taskscout.api.Run(tmp_path)

    monkeypatch.setattr(taskscout.api, "search_spec", fake)
    taskscout.search("builtin:planted", budget="small", quiet=True)
    assert seen["spec"].tasks == tuple(f"g{g}_t{i}" for g in range(3) for i in range(3))
    taskscout.search("builtin:planted", data_options={"groups": 2, "tasks_per_group": 2}, quiet=True)
    assert seen["spec"].tasks == ("g0_t0", "g0_t1", "g1_t0", "g1_t1")


def test_taskscout_search_is_the_package_and_the_function():
    import taskscout.search as package

    assert taskscout.search is package and callable(package)
    assert package.run_search is taskscout.run_search
    # `import taskscout` stays fast: the API, pandas and torch load when first used
    code = "import sys, taskscout; print(sorted(m for m in ('taskscout.api', 'pandas', 'torch') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


@pytest.mark.slow
def test_search_of_builtin_planted_groups_the_planted_tasks(tmp_path, monkeypatch):
    # the target as a notebook user writes it (run directory: reports/planted), with the
    # default settings: the selection stage's 5 fresh seeds show the planted grouping better than
    # all-together on the held-out total (docs/guide/selection.md)
    monkeypatch.chdir(tmp_path)
    run = taskscout.search("builtin:planted", budget="small", quiet=True)
    assert run.path.absolute() == tmp_path / "reports" / "planted"
    rec = run.recommendation
    assert sorted(g.tasks for g in rec.groups) == [
        (f"g{g}_t0", f"g{g}_t1", f"g{g}_t2") for g in range(3)]
    assert rec.selection is not None and rec.selection.rule == "total" and len(rec.selection.scores) >= 3
    assert rec.selection.chosen == "recommended" and rec.selection.score("recommended").vs_best_baseline[2] < 0
    assert Recommendation.from_dict(rundir.read_json(run.path / rundir.RECOMMENDATION)).to_dict() == \
        rundir.read_json(run.path / rundir.RECOMMENDATION)


def test_a_finished_search_run_again_trains_nothing_and_does_not_redraw_the_report(tmp_path, monkeypatch):
    import os

    import taskscout.report
    import taskscout.training

    settings = {**SMALL, "data_options": {"n_rows": 400}}
    run = taskscout.search("builtin:planted", tasks=TASKS, out=tmp_path / "run", **settings)
    report = run.path / rundir.REPORT
    drawn_at = report.stat().st_mtime_ns
    trained, drawn = [], []
    train, draw = taskscout.training.train_models, taskscout.report.build_report
    monkeypatch.setattr(taskscout.training, "train_models", lambda *a, **k: trained.append(1) or train(*a, **k))
    monkeypatch.setattr(taskscout.report, "build_report", lambda d: drawn.append(d) or draw(d))

    again = taskscout.search("builtin:planted", tasks=TASKS, out=tmp_path / "run", **settings)
    assert again.result.rerun and again.result.trained == 0 and trained == []
    assert drawn == [] and report.stat().st_mtime_ns == drawn_at  # its inputs are unchanged: not drawn again
    assert again.recommendation == run.recommendation and "report" in again.result.finalized

    later = drawn_at + 10**9  # a file the report is drawn from changed after it: drawn again, nothing trained
    os.utime(run.path / rundir.RECOMMENDATION, ns=(later, later))
    third = taskscout.search("builtin:planted", tasks=TASKS, out=tmp_path / "run", **settings)
    assert third.result.rerun and trained == [] and drawn == [run.path]


def test_the_modules_a_finished_search_runs_through_do_not_import_torch_plotly_or_scipy_stats():
    # a rerun of a finished search trains and draws nothing: these imports would be most of its time
    code = ("import sys, taskscout.api, taskscout.search.runner, taskscout.grouping; "
            "print(sorted(m for m in ('torch', 'plotly', 'scipy.stats', 'sklearn') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
