"""The study spec: every setting of a study, validated once, frozen.

A spec comes from a TOML study file and/or CLI flags (flags win). Both arrive here as one nested
mapping of the same shape as the study file::

    name = "planted"             # top level: data, tasks, main, inputs, ...
    [data_options]               # parameters of a builtin generator
    [aux]                        # auxiliary-task generation
    [model]                      # trunk depth and width
    [training]                   # epochs, batch size, learning rate, seeds, ...
    [split]                      # validation and test fractions
    [search]                     # phases, time limit, storage, grouping budget

Rules for each key are declared once, next to the field (``_rule``), and checked in one place
(``_build``); a message names the key, what it must be and what it got.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskscout.errors import SpecError, close_matches
from taskscout.paths import path_problem

TASK_TYPES = ("binary", "multiclass", "regression", "ordinal")
AUX_KINDS = ("related", "adversarial", "hints", "quantization", "predict_inputs", "future")
PHASES = ("single", "pairs", "aux", "depth", "subsets", "estimators", "selection")
# The estimators (tag, gradcos, rsa) are diagnostics, run on request (`--phase estimators`): on a
# 7-task planted table they took 125 of 211 s and did not change the recommendation once the
# depth phase had run (docs/guide/search-cost.md).
DEFAULT_PHASES = tuple(p for p in PHASES if p != "estimators")
BUDGETS = ("small", "medium", "large")
DEVICES = ("auto", "cpu", "cuda")
MAX_SEED = 2**32 - 1

# What each budget preset fills in when the study or the flags do not say.
BUDGET_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "small": {"training": {"seeds": 3, "epochs": 25}, "aux": {"cap": 2}, "search": {"subsets": 12}},
    "medium": {"training": {"seeds": 3, "epochs": 40}, "aux": {"cap": 3}, "search": {"subsets": 24}},
    "large": {"training": {"seeds": 5, "epochs": 80}, "aux": {"cap": 5}, "search": {"subsets": 48}},
}


def _rule(default: Any, expect: str, check: Callable[[Any], bool], **kw: Any) -> Any:
    """A dataclass field carrying its validation rule and the text used in error messages."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"expect": expect, "check": check}, **kw)
    return field(default=default, metadata={"expect": expect, "check": check}, **kw)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _str_tuple(v: Any) -> bool:
    return isinstance(v, tuple) and all(isinstance(s, str) and s for s in v)


def _optional_str(v: Any) -> bool:
    return v is None or (isinstance(v, str) and v != "")


def _is_folder_name(v: Any) -> bool:
    # The study name becomes a folder under reports/, so it may not climb out of it.
    return isinstance(v, str) and v not in ("", ".", "..") and "/" not in v and "\\" not in v


@dataclass(frozen=True)
class ModelSettings:
    """Shape of every multi-task MLP in the study."""

    depth: int = _rule(2, "an int in [1, 8]", lambda v: _is_int(v) and 1 <= v <= 8)  # trunk layers L
    width: int = _rule(64, "an int in [2, 4096]", lambda v: _is_int(v) and 2 <= v <= 4096)  # H
    adversarial_lambda: float = _rule(1.0, "a float in (0, 100]", lambda v: _is_num(v) and 0 < v <= 100)


@dataclass(frozen=True)
class TrainingSettings:
    """How each model is trained."""

    epochs: int = _rule(40, "an int in [1, 10000]", lambda v: _is_int(v) and 1 <= v <= 10000)
    batch_size: int = _rule(256, "an int in [1, 1000000]", lambda v: _is_int(v) and 1 <= v <= 10**6)
    lr: float = _rule(3e-3, "a float in (0, 1]", lambda v: _is_num(v) and 0 < v <= 1)
    weight_decay: float = _rule(0.0, "a float in [0, 1]", lambda v: _is_num(v) and 0 <= v <= 1)
    patience: int = _rule(5, "an int in [1, 10000]", lambda v: _is_int(v) and 1 <= v <= 10000)
    # Epochs every model trains before patience may stop it (an epochs count below it just means
    # every model runs all its epochs). On small labelled sets the first epochs' validation loss is
    # noisy: with patience alone, 27 of 135 single-task models on builtin:planted (5 generator
    # seeds) stopped before epoch 10, some with their best at epoch 1; with 10, the pairs phase
    # found 4 spurious real gains across planted groups instead of 9 (README, "Study files").
    min_epochs: int = _rule(10, "an int in [0, 10000]", lambda v: _is_int(v) and 0 <= v <= 10000)
    seeds: int = _rule(3, "an int in [1, 100]", lambda v: _is_int(v) and 1 <= v <= 100)
    weighting: str = _rule("equal", "a loss weighting name", lambda v: isinstance(v, str) and v != "")


@dataclass(frozen=True)
class AuxSettings:
    """Which auxiliary tasks to generate, and how many of each kind."""

    kinds: tuple[str, ...] = _rule(
        AUX_KINDS, f"a list drawn from {list(AUX_KINDS)}", lambda v: _str_tuple(v) and set(v) <= set(AUX_KINDS)
    )
    cap: int = _rule(3, "an int in [0, 100]", lambda v: _is_int(v) and 0 <= v <= 100)  # per kind per main task
    caps: dict = _rule(
        {}, f"a table mapping kinds {list(AUX_KINDS)} to ints >= 0",
        lambda v: isinstance(v, dict) and all(k in AUX_KINDS and _is_int(n) and n >= 0 for k, n in v.items()),
    )
    adversarial: tuple[str, ...] = _rule((), "a list of column names", _str_tuple)
    smooth_source: str | None = _rule(None, "a column name", _optional_str)
    horizon: int = _rule(1, "an int in [1, 30]", lambda v: _is_int(v) and 1 <= v <= 30)
    min_labelled: int = _rule(20, "an int >= 1", lambda v: _is_int(v) and v >= 1)

    def cap_for(self, kind: str) -> int:
        return int(self.caps.get(kind, self.cap))


@dataclass(frozen=True)
class SplitSettings:
    """Row fractions held out for validation and test (by time when a time column is set)."""

    val: float = _rule(0.2, "a float in (0, 0.5)", lambda v: _is_num(v) and 0 < v < 0.5)
    test: float = _rule(0.2, "a float in (0, 0.5)", lambda v: _is_num(v) and 0 < v < 0.5)


@dataclass(frozen=True)
class SearchSettings:
    """What the search does and within which limits."""

    phases: tuple[str, ...] = _rule(
        DEFAULT_PHASES, f"a list drawn from {list(PHASES)}", lambda v: _str_tuple(v) and set(v) <= set(PHASES)
    )
    time_limit: float | None = _rule(None, "seconds > 0", lambda v: v is None or (_is_num(v) and v > 0))
    storage: str | None = _rule(None, "an Optuna storage URL", _optional_str)
    networks: int | None = _rule(None, "an int >= 1", lambda v: v is None or (_is_int(v) and v >= 1))
    # False-discovery rate for calling measured gains real (Benjamini-Hochberg over every measured
    # comparison); 1 = off: each gain is judged by its own 95% interval.
    fdr: float = _rule(1.0, "a float in (0, 1]", lambda v: _is_num(v) and 0 < v <= 1)
    subsets: int = _rule(24, "an int >= 0", lambda v: _is_int(v) and v >= 0)
    # The selection stage (search/selection.py): which held-out rows score the finalists, and
    # whether the choice is made on totals or the solver's per-task-gated choice stands.
    selection_rows: str = _rule("crossfit", "one of ['crossfit', 'carve']", lambda v: v in ("crossfit", "carve"))
    selection_rule: str = _rule("total", "one of ['total', 'per-task']", lambda v: v in ("total", "per-task"))
    # Fresh seeds per finalist; None: as many as 30% of the single and pairs phases' training compute pays for (5..10).
    selection_seeds: int | None = _rule(None, "an int in [2, 100]", lambda v: v is None or (_is_int(v) and 2 <= v <= 100))
    # When all pairs x seeds would exceed this many models, the pairs phase trains sampled task
    # subsets instead (models linear in the number of tasks; taskscout.affinity.sampled).
    max_models: int = _rule(2000, "an int >= 1", lambda v: _is_int(v) and v >= 1)
    plateau_epsilon: float = _rule(0.01, "a float in (0, 1)", lambda v: _is_num(v) and 0 < v < 1)
    plateau_window: int = _rule(3, "an int >= 1", lambda v: _is_int(v) and v >= 1)
    stack_size: int = _rule(64, "an int in [1, 4096]", lambda v: _is_int(v) and 1 <= v <= 4096)
    # Successive halving in the aux and depth phases: one seed first, the other seeds only for the
    # candidates whose gain could still be real (search/halving.py); false trains every seed.
    halving: bool = _rule(True, "true or false", lambda v: isinstance(v, bool))
    # Shared storage (several workers): each worker records a heartbeat for the models it trains
    # every heartbeat_interval seconds; models whose heartbeat is older than grace_period belong
    # to a dead worker and are trained again, at most max_retry times per model.
    heartbeat_interval: int = _rule(10, "an int in [1, 3600] (seconds)", lambda v: _is_int(v) and 1 <= v <= 3600)
    grace_period: int = _rule(60, "an int in [2, 86400] (seconds)", lambda v: _is_int(v) and 2 <= v <= 86400)
    max_retry: int = _rule(3, "an int in [0, 100]", lambda v: _is_int(v) and 0 <= v <= 100)


@dataclass(frozen=True)
class StudySpec:
    """A whole study: data, tasks, auxiliary generation, model, training and search settings."""

    data: str = _rule("", "a file path or builtin:NAME", lambda v: isinstance(v, str) and v != "")
    name: str = _rule("", "a non-empty string usable as a folder name (no '/')", _is_folder_name)
    tasks: tuple[str, ...] = _rule((), "a list of column names", _str_tuple)
    main: tuple[str, ...] = _rule((), "a list of task names", _str_tuple)
    inputs: tuple[str, ...] | None = _rule(None, "a list of column names", lambda v: v is None or _str_tuple(v))
    task_types: dict = _rule(
        {}, f"a table mapping task names to one of {list(TASK_TYPES)}",
        lambda v: isinstance(v, dict) and all(isinstance(t, str) and t in TASK_TYPES for t in v.values()),
    )
    time_column: str | None = _rule(None, "a column name", _optional_str)
    entity_column: str | None = _rule(None, "a column name", _optional_str)
    # Long format (data/segments.py): one task per value of task_column and target; `tasks` and
    # `main` then name segment values or task names, and segments under min_rows rows are left out.
    task_column: str | None = _rule(None, "a column name", _optional_str)
    targets: tuple[str, ...] = _rule((), "a list of column names", _str_tuple)
    min_rows: int = _rule(10, "an int >= 3", lambda v: _is_int(v) and v >= 3)
    budget: str = _rule("medium", f"one of {list(BUDGETS)}", lambda v: v in BUDGETS)
    device: str = _rule("auto", f"one of {list(DEVICES)}", lambda v: v in DEVICES)
    # Model seeds are seed*100 + k, stored as 64-bit integers and given to torch and numpy.
    seed: int = _rule(0, f"an int in [0, {MAX_SEED}]", lambda v: _is_int(v) and 0 <= v <= MAX_SEED)
    out: str | None = _rule(None, "a directory path", _optional_str)
    data_options: dict = _rule({}, "a table of generator parameters", lambda v: isinstance(v, dict))
    aux: AuxSettings = field(default_factory=AuxSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    split: SplitSettings = field(default_factory=SplitSettings)
    search: SearchSettings = field(default_factory=SearchSettings)

    @property
    def main_tasks(self) -> tuple[str, ...]:
        """The main tasks: those named with `main`, else every task."""
        return self.main or self.tasks

    @property
    def run_dir(self) -> Path:
        return Path(self.out) if self.out else Path("reports") / self.name

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


_SECTIONS: dict[str, type] = {
    "aux": AuxSettings,
    "model": ModelSettings,
    "training": TrainingSettings,
    "split": SplitSettings,
    "search": SearchSettings,
}


def _to_plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _to_plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_to_plain(x) for x in v]
    return v


def _normalise(value: Any, annotation: str) -> Any:
    """Lists become tuples for tuple fields; ints are accepted where floats are expected."""
    if isinstance(value, list) and "tuple" in annotation:
        return tuple(value)
    if "float" in annotation and _is_int(value):
        return float(value)
    return value


def _top_level_form(key: str, where: str) -> str:
    """How to give top-level setting `key` where the mistake was made (the flags or a study file)."""
    return f"--set {key}=VALUE" if where == "the flags" else f"{key} = VALUE above the first [section]"


def _check(cls: type, raw: Any, where: str, section: str = "") -> dict[str, Any]:
    """Validate the keys and values of one section; returns them normalised (sections nested).

    Every key is checked against the rule declared next to its field, so a message can name
    the key (as `section.key`), where it came from, the value given and what is allowed.
    """
    known = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        label = f"{section}.{key}" if section else str(key)
        if cls is StudySpec and key in _SECTIONS:
            if not isinstance(value, Mapping):
                raise SpecError(f"'{key}' in {where} must be a table of settings ([{key}]). Got {value!r} instead.")
            values[key] = _check(_SECTIONS[key], value, where, key)
            continue
        if key not in known:
            allowed = sorted(known)
            scope = f" [{section}]" if section else ""
            homes = [name for name, sec in _SECTIONS.items() if key in {f.name for f in dataclasses.fields(sec)}]
            if homes and homes[0] != section:
                hint = f" ('{key}' belongs in [{homes[0]}])"
            elif section and key in {f.name for f in dataclasses.fields(StudySpec)}:
                hint = f" ('{key}' is a top-level setting, not part of [{section}]: {_top_level_form(key, where)})"
            else:
                hint = close_matches(key, allowed)
            raise SpecError(
                f"unknown key '{label}' in {where}{hint}; allowed keys{scope}: {', '.join(allowed)}"
            )
        f = known[key]
        if cls is StudySpec and isinstance(value, Mapping) and "dict" not in str(f.type):
            # e.g. --set data.entity_column=x: 'data' is one value, not a section of settings
            inner = next(iter(value), "")
            raise SpecError(f"'{key}' in {where} is a setting, not a section of settings, so '{key}.{inner}' means "
                            f"nothing; the sections are {', '.join(_SECTIONS)}"
                            + (f" ('{inner}' is a top-level setting: {_top_level_form(inner, where)})" if inner in known else ""))
        normalised = _normalise(value, str(f.type))
        if not f.metadata["check"](normalised):
            raise SpecError(f"'{label}' in {where} must be {f.metadata['expect']}. Got {value!r} instead.")
        values[key] = normalised
    return values


def check_settings(cls: type, raw: Mapping[str, Any], where: str, section: str = "") -> dict[str, Any]:
    """`raw` checked against the rules declared next to `cls`'s fields (`rule`) and normalised
    (lists to tuples, ints to floats where floats are expected): the study spec's mechanism, for
    other validated settings such as taskscout.export's training config."""
    return _check(cls, raw, where, section)


rule = _rule  # a dataclass field with its validation rule, for settings checked with check_settings


def _construct(cls: type, values: Mapping[str, Any]) -> Any:
    """The frozen settings object of already-checked values (sections built recursively)."""
    if cls is StudySpec:
        values = {k: _construct(_SECTIONS[k], v) if k in _SECTIONS else v for k, v in values.items()}
    return cls(**values)


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`; tables (sections, data_options, task_types, caps) merge key by
    key, so a flag changes one entry of a table without dropping the others."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def read_study_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a TOML study file; relative data paths resolve from the file's folder."""
    p = Path(path)
    problem = path_problem(p)
    if problem is not None:
        raise SpecError(f"study file '{p}' {problem}; give a .toml study file or a data file")
    if p.is_dir():
        raise SpecError(f"study file '{p}' is a directory; give a .toml study file or a data file")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8-sig"))  # a byte-order mark is not TOML
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SpecError(f"study file '{p}' is not valid TOML: {e}") from None
    except OSError as e:
        raise SpecError(f"cannot read study file '{p}': {e.strerror or e}") from None
    data = raw.get("data")
    # Relative to the study file, never to the working directory: a same-named file there must
    # not stand in for the study's data.
    if isinstance(data, str) and data and not data.startswith("builtin:") and not Path(data).is_absolute():
        raw["data"] = str(p.parent / data)
    if "name" not in raw:
        raw["name"] = _name_from(p, "study file")
    return raw


def default_name(data: str) -> str:
    """The study name used when none is given: the builtin's name or the data file's stem."""
    if data.startswith("builtin:"):
        return data.split(":", 1)[1] or "study"
    return _name_from(Path(data), "data file")


def _name_from(path: Path, what: str) -> str:
    """The stem of `path` as a study name; a SpecError when it cannot name a folder (`..csv`)."""
    if not _is_folder_name(path.stem):
        raise SpecError(f"the {what} name '{path.name}' gives no usable study name ('{path.stem}' cannot name "
                        f"the run directory); give one with --name NAME or 'name = ...'")
    return path.stem


def resolve_spec(source: str | None, overrides: Mapping[str, Any] | None = None, *,
                 overrides_from: str = "the flags") -> StudySpec:
    """Build the spec from a study file or a data source, plus flag overrides (flags win).

    `source` is a `.toml` study file, a data file, `builtin:NAME`, or None when the overrides
    carry `data`. The file and the flags are checked separately, so an error names where the bad
    value came from. Budget presets fill only what neither the file nor the flags set.
    Raises SpecError for unknown keys, wrong types, invalid values and inconsistent settings;
    a message names the overrides as `overrides_from` (the Python API: its arguments).
    """
    if source is not None and str(source).lower().endswith(".toml"):
        file_values = _check(StudySpec, read_study_file(source), f"study file '{source}'")
    elif source is not None:
        file_values = _check(StudySpec, {"data": str(source)}, "the command line")
    else:
        file_values = {}
    flag_values = _check(StudySpec, {k: v for k, v in (overrides or {}).items() if v is not None}, overrides_from)
    user = _merge(file_values, flag_values)
    if "data" not in user:
        raise SpecError("no data given: pass a data file, builtin:NAME or a study file with 'data = ...'")
    preset = {k: dict(v) for k, v in BUDGET_PRESETS[user.get("budget", "medium")].items()}
    merged = _merge(preset, user)
    if "name" not in merged:
        merged["name"] = default_name(str(merged["data"]))
    spec = _construct(StudySpec, merged)
    _check_consistency(spec)
    if not spec.main:  # resolved means every default filled in: no main tasks named = all of them
        spec = dataclasses.replace(spec, main=spec.tasks)
    return spec


def check_long_format(spec: StudySpec) -> None:
    """The rules of a long-format study (task_column and targets)."""
    col = spec.task_column
    if spec.targets and not col and not spec.data.startswith("builtin:"):  # a builtin may name its task column
        raise SpecError("targets are given without a task column: long format needs --task-column COL "
                        "(for a wide table name the target columns with --tasks)")
    if not col:
        return
    if not spec.targets:
        raise SpecError(f"task column '{col}' is given without a target: name the column to predict with --target Y")
    if len(set(spec.targets)) != len(spec.targets):
        raise SpecError(f"targets are listed more than once: {list(spec.targets)}")
    if col in spec.targets:
        raise SpecError(f"target '{col}' is the task column; the task column says which segment a row belongs to, "
                        f"name another column as the target")
    if col == spec.time_column:
        raise SpecError(f"task column '{col}' is also the time column; the task column names segments and the time "
                        f"column orders the rows within each, give two different columns")
    for t in spec.task_types:
        if t not in spec.targets:
            raise SpecError(f"task_types names '{t}', which is not a target{close_matches(t, spec.targets)}; "
                            f"in long format types are given per target")
    for role, column in (("time_column", spec.time_column), ("entity_column", spec.entity_column)):
        if column is not None and column in spec.targets:
            raise SpecError(f"{role} '{column}' is also a target; a target cannot order or group the rows")


def _check_consistency(spec: StudySpec) -> None:
    check_long_format(spec)
    if not spec.tasks and not spec.task_column and not spec.targets:
        raise SpecError("no tasks given: name the target columns with --tasks a,b,c or 'tasks = [...]' "
                        "(or, for a long table, a --task-column and --target)")
    if len(set(spec.tasks)) != len(spec.tasks):
        raise SpecError(f"tasks are listed more than once: {list(spec.tasks)}")
    if len(set(spec.main)) != len(spec.main):
        raise SpecError(f"main tasks are listed more than once: {list(spec.main)}")
    for m in () if spec.task_column or spec.targets else spec.main:  # long format: checked against the data's segments
        if m not in spec.tasks:
            raise SpecError(f"main task '{m}' is not among the tasks {list(spec.tasks)}{close_matches(m, spec.tasks)}")
    for t in () if spec.task_column or spec.targets else spec.task_types:
        if t not in spec.tasks:
            raise SpecError(f"task_types names '{t}', which is not a task{close_matches(t, spec.tasks)}")
    if spec.split.val + spec.split.test >= 0.8:
        raise SpecError(
            f"split fractions val={spec.split.val} and test={spec.split.test} leave too few training rows; keep their sum below 0.8"
        )
    if spec.search.grace_period <= spec.search.heartbeat_interval:
        raise SpecError(
            f"search grace_period ({spec.search.grace_period} s) must be longer than heartbeat_interval "
            f"({spec.search.heartbeat_interval} s), or live workers would be taken for dead; "
            "a grace period of several intervals is safe"
        )
    for role, column in (("time_column", spec.time_column), ("entity_column", spec.entity_column)):
        if column is not None and column in spec.tasks:
            raise SpecError(f"{role} '{column}' is also listed as a task; a task cannot order or group the rows")
    if spec.entity_column is not None and spec.entity_column == spec.time_column:
        raise SpecError(f"entity_column and time_column are both '{spec.time_column}'; the time column orders the "
                        f"rows and the entity column says whose row it is: name two different columns")
    _check_aux_roles(spec)
    if spec.inputs is not None and len(set(spec.inputs)) != len(spec.inputs):
        raise SpecError(f"inputs are listed more than once: {list(spec.inputs)}")
    if spec.entity_column and not spec.time_column:
        raise SpecError("entity_column needs a time_column: entities only matter for time-ordered rows")


def _check_aux_roles(spec: StudySpec) -> None:
    """Auxiliary settings that contradict the main tasks."""
    main = spec.main or spec.tasks
    for column in spec.aux.adversarial:
        if column in main:
            raise SpecError(f"adversarial column '{column}' is a main task; gradient reversal would train the network "
                            f"to forget the very target it should predict: drop it from --adversarial (or from --main)")
    source = spec.aux.smooth_source
    if source is not None and source in main:
        raise SpecError(f"smooth_source '{source}' is a main task itself; name the numeric column that the binary "
                        f"task was thresholded from (such as a score whose cut-off gives the labels)")


def spec_from_json(text: str) -> StudySpec:
    """Load a spec saved as spec.json (already resolved: no presets applied again).

    `spec_from_json(spec.to_json()) == spec` for every resolved spec.
    """
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError(f"spec.json is not valid JSON: {e}") from None
    return _construct(StudySpec, _check(StudySpec, raw, "spec.json"))
