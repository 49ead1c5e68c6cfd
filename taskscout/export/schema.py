"""The training config as typed, frozen settings, checked with the study spec's rule mechanism.

Each field declares its rule next to it (`taskscout.spec.rule`; the model, auxiliary-generation
and training settings reuse the study spec's own rules), `taskscout.spec.check_settings` checks a
section's keys and values in one place, and `_check_consistency` checks what spans fields (served
tasks, branch layers within the trunk). `TrainingConfig.from_dict(raw).to_dict() == raw` for every
config `taskscout export` writes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from taskscout.errors import SpecError, close_matches
from taskscout.spec import (
    AuxSettings,
    ModelSettings,
    StudySpec,
    TrainingSettings,
    check_settings,
    rule,
)

CONFIG_SCHEMA_VERSION = 1
PREPROCESSING_VERSION = 1


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _names(v: Any) -> bool:
    return isinstance(v, tuple) and all(isinstance(s, str) and s for s in v)


def _optional_text(v: Any) -> bool:
    return v is None or isinstance(v, str)


def _same_rule(cls: type, name: str, default: Any) -> Any:
    """A field with the rule of `cls`'s field `name` (one declaration of each rule) and `default`."""
    metadata = next(f.metadata for f in dataclasses.fields(cls) if f.name == name)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class DataSource:
    """Where the data come from and which columns are tasks and inputs (`data`)."""

    source: str = _same_rule(StudySpec, "data", "")
    options: dict = _same_rule(StudySpec, "data_options", {})
    tasks: tuple[str, ...] = rule((), "a non-empty list of column names", lambda v: _names(v) and len(v) > 0)
    main: tuple[str, ...] = rule((), "a list of task names (empty: every task)", _names)
    task_types: dict = _same_rule(StudySpec, "task_types", {})
    inputs: tuple[str, ...] | None = _same_rule(StudySpec, "inputs", None)
    time_column: str | None = _same_rule(StudySpec, "time_column", None)
    entity_column: str | None = _same_rule(StudySpec, "entity_column", None)
    task_column: str | None = _same_rule(StudySpec, "task_column", None)
    targets: tuple[str, ...] = _same_rule(StudySpec, "targets", ())
    min_rows: int = _same_rule(StudySpec, "min_rows", 10)


@dataclass(frozen=True)
class Split:
    """Validation and test fractions, and how rows are split (`split`)."""

    val: float = rule(0.2, "a float in (0, 0.5)", lambda v: isinstance(v, float) and 0 < v < 0.5)
    test: float = rule(0.2, "a float in (0, 0.5)", lambda v: isinstance(v, float) and 0 < v < 0.5)
    by: str = rule("row", "row or time", lambda v: v in ("row", "time"))
    per_segment: bool = rule(False, "true or false (long format: each segment split apart)", lambda v: isinstance(v, bool))
    seed: int = _same_rule(StudySpec, "seed", 0)


@dataclass(frozen=True)
class Optimiser:
    """The optimiser every network trains with (`training.optimiser`)."""

    name: str = rule("adam", "'adam' (the optimiser taskscout trains with)", lambda v: v == "adam")
    lr: float = _same_rule(TrainingSettings, "lr", 3e-3)
    weight_decay: float = _same_rule(TrainingSettings, "weight_decay", 0.0)


@dataclass(frozen=True)
class Training:
    """How each network is trained (`training`)."""

    epochs: int = _same_rule(TrainingSettings, "epochs", 40)
    batch_size: int = _same_rule(TrainingSettings, "batch_size", 256)
    patience: int = _same_rule(TrainingSettings, "patience", 10)
    min_epochs: int = _same_rule(TrainingSettings, "min_epochs", 0)
    loss_weighting: str = _same_rule(TrainingSettings, "weighting", "equal")
    optimiser: Optimiser = field(default_factory=Optimiser)
    device: str = _same_rule(StudySpec, "device", "auto")


@dataclass(frozen=True)
class Auxiliary:
    """An auxiliary target a network trains, with the generator's provenance to rebuild it."""

    name: str = rule("", "a non-empty string", lambda v: isinstance(v, str) and v != "")
    kind: str | None = rule(None, "an auxiliary kind", _optional_text)
    serves: tuple[str, ...] = rule((), "a list of task names", _names)
    type: str | None = rule(None, "a task type", _optional_text)
    training_only: bool = rule(False, "true or false", lambda v: isinstance(v, bool))
    adversarial: bool = rule(False, "true or false", lambda v: isinstance(v, bool))
    drops_inputs: tuple[str, ...] = rule((), "a list of column names", _names)
    provenance: dict | None = rule(None, "a table (the generator's provenance)", lambda v: v is None or isinstance(v, dict))
    expected_gain: Any = rule(None, "a table of gains per served task", lambda v: v is None or isinstance(v, (dict, int, float)))
    ci: Any = rule(None, "a table of intervals per served task", lambda v: v is None or isinstance(v, (dict, list)))


@dataclass(frozen=True)
class Network:
    """One network to train (`groups[k]`): its tasks, the tasks it serves, branch layer, auxiliaries."""

    name: str | None = rule(None, "a string", _optional_text)
    tasks: tuple[str, ...] = rule((), "a non-empty list of task names", lambda v: _names(v) and len(v) > 0)
    serves: tuple[str, ...] = rule((), "a non-empty list of task names (default: its tasks)", lambda v: _names(v) and len(v) > 0)
    branch_layer: int = rule(0, "an int >= 0", lambda v: _is_int(v) and v >= 0)
    branch_source: str | None = rule(None, "a string", _optional_text)
    auxiliaries: tuple[Auxiliary, ...] = ()
    loss_weights: dict = rule({}, "a table from its targets to numbers >= 0", lambda v: isinstance(v, dict) and all(
        isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0 for w in v.values()))
    expected_gain: dict = rule({}, "a table of gains per task", lambda v: isinstance(v, dict))
    ci: dict = rule({}, "a table of intervals per task", lambda v: isinstance(v, dict))

    @property
    def targets(self) -> tuple[str, ...]:
        """Its tasks, then its auxiliaries: the heads of its network."""
        return (*self.tasks, *(a.name for a in self.auxiliaries))


TOP_KEYS = ("schema_version", "taskscout_version", "study", "data", "preprocessing", "split", "seed",
            "auxiliary_generation", "model", "training", "groups")
_TOP_RULES = {
    "taskscout_version": ("a version string", lambda v: isinstance(v, str)),
    "study": ("a study name", _optional_text),
    "seed": ("an int >= 0", lambda v: _is_int(v) and v >= 0),
}


@dataclass(frozen=True)
class TrainingConfig:
    """A training config (`taskscout export` writes it, `taskscout train` trains it), checked once."""

    taskscout_version: str
    study: str | None
    data: DataSource
    preprocessing: dict
    split: Split
    seed: int
    auxiliary_generation: AuxSettings
    model: ModelSettings
    training: Training
    groups: tuple[Network, ...]

    def to_dict(self) -> dict[str, Any]:
        """The config file's mapping (YAML- and JSON-able)."""
        out = {"schema_version": CONFIG_SCHEMA_VERSION,
               **{k: _plain(getattr(self, k)) for k in TOP_KEYS if k != "schema_version"}}
        return out

    @classmethod
    def from_dict(cls, raw: Any, *, where: str = "<mapping>") -> TrainingConfig:
        """The config of mapping `raw`; a SpecError naming the first problem otherwise."""
        where = f"training config '{where}'"
        if not isinstance(raw, Mapping):
            raise SpecError(f"{where} must be a mapping of settings. Got {type(raw).__name__} instead.")
        version = raw.get("schema_version")
        if version != CONFIG_SCHEMA_VERSION:
            raise SpecError(f"{where} has schema_version {version!r}; this taskscout reads version "
                            f"{CONFIG_SCHEMA_VERSION}: export it again with `taskscout export RUN_DIR`")
        missing = [k for k in TOP_KEYS if k not in raw]
        if missing:
            raise SpecError(f"{where} lacks {', '.join(missing)}; export it again with `taskscout export RUN_DIR`")
        unknown = [k for k in raw if k not in TOP_KEYS]
        if unknown:
            raise SpecError(f"unknown key {unknown[0]!r} in {where}{close_matches(unknown[0], TOP_KEYS)}; "
                            f"allowed keys: {', '.join(TOP_KEYS)}")
        for key, (expect, check) in _TOP_RULES.items():
            if not check(raw[key]):
                raise SpecError(f"'{key}' in {where} must be {expect}. Got {raw[key]!r} instead.")
        pre = raw["preprocessing"]
        if not isinstance(pre, Mapping) or pre.get("version") != PREPROCESSING_VERSION:
            raise _fail(where, "preprocessing.version", f"{PREPROCESSING_VERSION} (the pipeline of this taskscout)",
                        pre.get("version") if isinstance(pre, Mapping) else pre)
        config = cls(
            taskscout_version=raw["taskscout_version"], study=raw["study"],
            data=_section(DataSource, raw["data"], where, "data"), preprocessing=dict(pre),
            split=_section(Split, raw["split"], where, "split"), seed=raw["seed"],
            auxiliary_generation=_section(AuxSettings, raw["auxiliary_generation"], where, "auxiliary_generation"),
            model=_section(ModelSettings, raw["model"], where, "model"),
            training=_training(raw["training"], where), groups=_networks(raw["groups"], where),
        )
        _check_consistency(config, where)
        return config


def _fail(where: str, key: str, expect: str, got: Any) -> SpecError:
    return SpecError(f"{key} in {where} must be {expect}. Got {got!r} instead.")


_REQUIRED: dict[type, tuple[str, ...]] = {
    DataSource: ("source", "tasks"), Split: ("val", "test"), Training: ("epochs", "batch_size"),
    Network: ("tasks", "branch_layer"), Auxiliary: ("name",),
}


def _section(cls: type, raw: Any, where: str, label: str, nested: Mapping[str, Any] | None = None) -> Any:
    """The settings `cls` of mapping `raw` (checked by the spec's rules), with `nested` sections built apart."""
    if not isinstance(raw, Mapping):
        raise _fail(where, label, "a mapping of settings", raw)
    for key in _REQUIRED.get(cls, ()):
        if key not in raw:
            expect = next(f.metadata["expect"] for f in dataclasses.fields(cls) if f.name == key)
            raise _fail(where, f"{label}.{key}", expect, None)
    values = check_settings(cls, {k: v for k, v in raw.items() if k not in (nested or {})}, where, label)
    return cls(**values, **(nested or {}))


def _training(raw: Any, where: str) -> Training:
    optimiser = raw.get("optimiser", {}) if isinstance(raw, Mapping) else {}
    return _section(Training, raw, where, "training",
                    {"optimiser": _section(Optimiser, optimiser or {}, where, "training.optimiser")})


def _networks(raw: Any, where: str) -> tuple[Network, ...]:
    if not isinstance(raw, list) or not raw:
        raise _fail(where, "groups", "a non-empty list of groups", raw)
    out = []
    for k, g in enumerate(raw):
        at = f"groups[{k}]"
        if not isinstance(g, Mapping):
            raise _fail(where, at, "a mapping", g)
        auxes = g.get("auxiliaries", [])
        if not isinstance(auxes, list) or not all(isinstance(a, Mapping) and isinstance(a.get("name"), str) for a in auxes):
            raise _fail(where, f"{at}.auxiliaries", "a list of mappings with a 'name'", auxes)
        nested = {"auxiliaries": tuple(_section(Auxiliary, a, where, f"{at}.auxiliaries[{j}]") for j, a in enumerate(auxes))}
        if "serves" not in g and isinstance(g.get("tasks"), list):
            nested["serves"] = tuple(g["tasks"])
        out.append(_section(Network, g, where, at, nested))
    return tuple(out)


def _check_consistency(config: TrainingConfig, where: str) -> None:
    """What spans fields: main tasks among the tasks, groups within the tasks and the trunk, each
    main task served by exactly one group."""
    tasks, depth = config.data.tasks, config.model.depth
    if any(t not in tasks for t in config.data.main):
        raise _fail(where, "data.main", f"a list drawn from data.tasks {list(tasks)} (empty: every task)", list(config.data.main))
    served: dict[str, int] = {}
    for k, g in enumerate(config.groups):
        at = f"groups[{k}]"
        if any(t not in tasks for t in g.tasks):
            raise _fail(where, f"{at}.tasks", f"a non-empty list drawn from data.tasks {list(tasks)}", list(g.tasks))
        if any(t not in g.tasks for t in g.serves):
            raise _fail(where, f"{at}.serves", f"a non-empty list drawn from its tasks {list(g.tasks)}", list(g.serves))
        for t in g.serves:
            if t in served:
                raise SpecError(f"task {t!r} is served by groups[{served[t]}] and {at} in {where}; "
                                "each task must be served by exactly one group")
            served[t] = k
        if g.branch_layer > depth:
            raise _fail(where, f"{at}.branch_layer", f"an int in [0, {depth}] (model.depth)", g.branch_layer)
        if any(n not in g.targets for n in g.loss_weights):
            raise _fail(where, f"{at}.loss_weights", f"a mapping from its targets {list(g.targets)} to numbers >= 0", g.loss_weights)
    # Tasks outside data.main stay in data.tasks because the data set and the auxiliaries built
    # from them (e.g. TASK__related) depend on them; only the main tasks need a serving group.
    unserved = [t for t in (config.data.main or tasks) if t not in served]
    if unserved:
        raise SpecError(f"main task {unserved[0]!r} is served by no group in {where}; add it to one group's 'serves'")


def _plain(v: Any) -> Any:
    """Settings as the config file's plain values: dataclasses as mappings, tuples as lists."""
    if dataclasses.is_dataclass(v):
        return {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v
