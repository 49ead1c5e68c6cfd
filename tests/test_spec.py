"""The study spec: file and flags merged (flags win), presets, validation messages, spec.json."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from taskscout.errors import SpecError
from taskscout.spec import BUDGET_PRESETS, StudySpec, resolve_spec, spec_from_json


def _study(tmp_path: Path, text: str, name: str = "study.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


BASE = 'data = "table.csv"\ntasks = ["a", "b"]\n'


def test_flags_win_over_the_file_key_by_key(tmp_path):
    path = _study(tmp_path, BASE + 'seed = 1\n[training]\nepochs = 5\nlr = 0.01\n[model]\nwidth = 32\n')
    spec = resolve_spec(path, {"seed": 3, "training": {"epochs": 7}, "tasks": ["b"]})
    assert spec.seed == 3
    assert spec.training.epochs == 7
    assert spec.training.lr == 0.01  # the file's value survives a flag on a sibling key
    assert spec.model.width == 32
    assert spec.tasks == ("b",)


def test_tables_merge_key_by_key(tmp_path):
    path = _study(tmp_path, 'data = "builtin:planted"\ntasks = ["g0_t0"]\n[data_options]\ngroups = 3\nseed = 4\n')
    spec = resolve_spec(path, {"data_options": {"groups": 2}})
    assert spec.data_options == {"groups": 2, "seed": 4}


def test_budget_presets_fill_only_unset_values(tmp_path):
    path = _study(tmp_path, BASE + 'budget = "small"\n[training]\nepochs = 5\n')
    spec = resolve_spec(path)
    small = BUDGET_PRESETS["small"]
    assert spec.training.epochs == 5  # set in the file: the preset does not touch it
    assert spec.training.seeds == small["training"]["seeds"] == 3
    assert spec.aux.cap == small["aux"]["cap"]
    assert spec.search.subsets == small["search"]["subsets"]
    # a flag's budget replaces the file's, and its presets follow
    large = resolve_spec(path, {"budget": "large"})
    assert (large.training.seeds, large.training.epochs) == (5, 5)
    # a flag value beats the preset too
    assert resolve_spec(path, {"training": {"seeds": 9}}).training.seeds == 9


def test_defaults_when_only_data_and_tasks_are_given():
    spec = resolve_spec("some/dir/prices.csv", {"tasks": ["a", "b"]})
    assert spec.name == "prices"
    assert spec.main_tasks == ("a", "b")  # no main: every task is a main task
    assert spec.main == ("a", "b") and '"main": [\n    "a",' in spec.to_json()  # resolved: spec.json names them
    assert resolve_spec("prices.csv", {"tasks": ["a", "b"], "main": ["b"]}).main == ("b",)
    assert spec.inputs is None and spec.budget == "medium" and spec.device == "auto"
    assert spec.run_dir == Path("reports") / "prices"
    assert resolve_spec("builtin:yeast", {"tasks": ["Class1"]}).name == "yeast"


def test_study_name_and_relative_data_path_come_from_the_file(tmp_path):
    (tmp_path / "table.csv").write_text("a,b,x\n1,2,3\n", encoding="utf-8")
    spec = resolve_spec(_study(tmp_path, BASE, name="prices.toml"))
    assert spec.name == "prices"
    assert Path(spec.data) == tmp_path / "table.csv"


def test_spec_is_frozen():
    spec = resolve_spec("t.csv", {"tasks": ["a"]})
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seed = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.training.epochs = 3  # type: ignore[misc]


def test_ints_are_accepted_where_floats_belong(tmp_path):
    spec = resolve_spec(_study(tmp_path, BASE + "[training]\nlr = 1\n[search]\ntime_limit = 60\n"))
    assert spec.training.lr == 1.0 and isinstance(spec.training.lr, float)
    assert spec.search.time_limit == 60.0


def test_spec_json_round_trip(tmp_path):
    text = BASE + """
main = ["a"]
inputs = ["x", "y z"]
time_column = "t"
entity_column = "shop"
budget = "large"
device = "cpu"
seed = 7
out = "runs/one"
[task_types]
a = "ordinal"
[data_options]
groups = 2
[aux]
kinds = ["related", "hints"]
caps = {hints = 1}
adversarial = ["site"]
horizon = 3
[model]
depth = 3
width = 16
adversarial_lambda = 0.5
[training]
lr = 0.001
weighting = "uncertainty"
[split]
val = 0.1
test = 0.15
[search]
phases = ["single", "pairs"]
time_limit = 30.5
networks = 2
storage = "sqlite:///x.db"
"""
    spec = resolve_spec(_study(tmp_path, text))
    again = spec_from_json(spec.to_json())
    assert again == spec
    assert again.to_json() == spec.to_json()
    assert again.aux.kinds == ("related", "hints") and again.search.time_limit == 30.5


def test_spec_from_json_rejects_broken_text():
    with pytest.raises(SpecError, match="not valid JSON"):
        spec_from_json("{not json")


def test_unknown_key_names_it_and_lists_close_matches(tmp_path):
    with pytest.raises(SpecError) as e:
        resolve_spec(_study(tmp_path, BASE + "tsaks = ['a']\n"))
    msg = str(e.value)
    assert "unknown key 'tsaks'" in msg and "did you mean 'tasks'" in msg and "allowed keys:" in msg


def test_unknown_key_in_a_section(tmp_path):
    with pytest.raises(SpecError) as e:
        resolve_spec(_study(tmp_path, BASE + "[training]\npatiense = 3\n"))
    msg = str(e.value)
    assert "unknown key 'training.patiense'" in msg and "did you mean 'patience'" in msg
    assert "allowed keys [training]:" in msg and "weight_decay" in msg


def test_a_section_key_at_the_top_level_says_where_it_belongs(tmp_path):
    with pytest.raises(SpecError, match=r"'epochs' belongs in \[training\]"):
        resolve_spec(_study(tmp_path, BASE + "epochs = 3\n"))



def test_a_top_level_key_inside_a_section_says_so(tmp_path):
    with pytest.raises(SpecError, match=r"'entity_column' is a top-level setting, not part of \[model\]: "
                                        r"entity_column = VALUE above the first \[section\]"):
        resolve_spec(_study(tmp_path, BASE + "[model]\nentity_column = 'store'\n"))
    with pytest.raises(SpecError, match=r"not part of \[model\]: --set entity_column=VALUE"):
        resolve_spec(_study(tmp_path, BASE), {"model": {"entity_column": "store"}})


def test_a_setting_given_subkeys_is_not_taken_for_its_value(tmp_path):
    # --set data.entity_column=store once read "'data' must be a file path or builtin:NAME. Got
    # {'entity_column': 'store'}"
    with pytest.raises(SpecError) as e:
        resolve_spec(_study(tmp_path, BASE), {"data": {"entity_column": "store"}})
    msg = str(e.value)
    assert "'data' in the flags is a setting, not a section of settings" in msg
    assert "the sections are aux, model, training, split, search" in msg and "--set entity_column=VALUE" in msg

@pytest.mark.parametrize(
    ("line", "key", "given", "allowed"),
    [
        ('[model]\ndepth = "two"', "'model.depth'", "'two'", "an int in [1, 8]"),
        ("[model]\ndepth = 0", "'model.depth'", "0", "an int in [1, 8]"),
        ("[training]\nlr = -3", "'training.lr'", "-3", "a float in (0, 1]"),
        ("[training]\nseeds = true", "'training.seeds'", "True", "an int in [1, 100]"),
        ("[training]\nmin_epochs = -1", "'training.min_epochs'", "-1", "an int in [0, 10000]"),
        ('device = "gpu"', "'device'", "'gpu'", "one of ['auto', 'cpu', 'cuda']"),
        ('budget = "huge"', "'budget'", "'huge'", "one of ['small', 'medium', 'large']"),
        ("seed = -1", "'seed'", "-1", "an int in [0, 4294967295]"),
        ('[aux]\nkinds = ["telepathy"]', "'aux.kinds'", "['telepathy']", "a list drawn from"),
        ("[split]\nval = 0.6", "'split.val'", "0.6", "a float in (0, 0.5)"),
        ('name = "../elsewhere"', "'name'", "'../elsewhere'", "usable as a folder name"),
        ('[task_types]\na = "fuzzy"', "'task_types'", "{'a': 'fuzzy'}", "binary"),
    ],
)
def test_wrong_type_or_value_names_key_value_and_what_is_allowed(tmp_path, line, key, given, allowed):
    with pytest.raises(SpecError) as e:
        resolve_spec(_study(tmp_path, BASE + line + "\n"))
    msg = str(e.value)
    assert key in msg and f"Got {given} instead" in msg and allowed in msg and "study.toml" in msg


def test_tasks_must_be_a_list_not_a_string(tmp_path):
    path = _study(tmp_path, 'data = "t.csv"\ntasks = "a,b"\n')
    with pytest.raises(SpecError, match=r"'tasks' .* must be a list of column names. Got 'a,b' instead"):
        resolve_spec(path)


def test_a_section_given_a_value_is_an_error(tmp_path):
    with pytest.raises(SpecError, match=r"'model' .* must be a table of settings"):
        resolve_spec(_study(tmp_path, BASE + "model = 3\n"))


def test_errors_say_whether_the_file_or_a_flag_was_wrong(tmp_path):
    path = _study(tmp_path, BASE)
    with pytest.raises(SpecError, match="'model.width' in the flags must be"):
        resolve_spec(path, {"model": {"width": 1}})


def test_broken_toml_and_missing_file(tmp_path):
    with pytest.raises(SpecError, match="is not valid TOML"):
        resolve_spec(_study(tmp_path, "data = \n"))
    with pytest.raises(SpecError, match="does not exist"):
        resolve_spec(str(tmp_path / "nope.toml"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tasks": []}, "no tasks given"),
        ({"tasks": ["a", "a"]}, "more than once"),
        ({"main": ["a", "a"]}, "main tasks are listed more than once"),
        ({"main": ["c"]}, "main task 'c' is not among the tasks"),
        ({"task_types": {"c": "binary"}}, "task_types names 'c'"),
        ({"time_column": "a"}, "time_column 'a' is also listed as a task"),
        ({"entity_column": "shop"}, "entity_column needs a time_column"),
        ({"split": {"val": 0.45, "test": 0.45}}, "leave too few training rows"),
    ],
)
def test_inconsistent_settings(overrides, message):
    with pytest.raises(SpecError, match=message):
        resolve_spec("t.csv", {"tasks": ["a", "b"], **overrides})


def test_no_data_at_all():
    with pytest.raises(SpecError, match="no data given"):
        resolve_spec(None, {"tasks": ["a"]})


def test_main_tasks_and_defaults_are_plain_values():
    spec = resolve_spec("t.csv", {"tasks": ["a", "b"], "main": ["b"]})
    assert spec.main_tasks == ("b",)
    assert isinstance(spec, StudySpec) and spec.to_dict()["tasks"] == ["a", "b"]


def test_docs_study_example_is_valid_and_names_every_key(tmp_path):
    page = Path(__file__).resolve().parents[1] / "docs" / "guide" / "study-files.md"
    example = page.read_text(encoding="utf-8").split("```toml\n", 1)[1].split("```", 1)[0]
    spec = resolve_spec(_study(tmp_path, example))
    assert spec.tasks == ("sales", "returns", "rating") and spec.aux.caps == {"hints": 2}
    raw = tomllib.loads(example)
    # The long-format keys would turn the wide example into a long one; their own page
    # shows them in a study file.
    long_keys = ("task_column", "targets", "min_rows")
    segments = (Path(__file__).resolve().parents[1] / "docs" / "guide" / "segments.md").read_text(encoding="utf-8")
    for key in long_keys:
        assert f"{key} = " in segments, f"docs/guide/segments.md lacks '{key}'"
    for f in dataclasses.fields(StudySpec):
        if f.name in long_keys:
            continue
        assert f.name in raw, f"study-files.md example lacks '{f.name}'"
        section = getattr(spec, f.name)
        if dataclasses.is_dataclass(section):
            for sub in dataclasses.fields(section):
                assert sub.name in raw[f.name], f"study-files.md example lacks '{f.name}.{sub.name}'"
