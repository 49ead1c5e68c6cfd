"""Export a recommendation as a versioned training config, and train the models it describes.

`export_config(run_dir)` turns spec.json + recommendation.json (+ candidates.json for the
auxiliaries' provenance) into a plain mapping that holds everything needed to rebuild the data,
the auxiliary targets and one network per recommended group, with no reference to the run
directory: data source (a data file as an absolute path) and options, tasks and inputs,
preprocessing, split and seed, the auxiliary generator settings, model sizes, loss weighting,
optimiser and epochs. `write_config` saves it as YAML or JSON.

`train_config(config, out_dir=...)` rebuilds the data set (data.build_dataset) and the named
auxiliaries (auxgen.generate_candidates with the exported settings, then picked by name and
checked against their exported provenance), trains one model per group with
training.train_models, evaluates it on the validation and test splits, and writes metrics.json
and one checkpoint per group (a dict of plain values and the state dict, loadable with
``torch.load(path, weights_only=True)``; `load_trained` rebuilds the network from it).

Exporting needs no torch; training and loading import it when called.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskscout import __version__, rundir
from taskscout.errors import DataError, MissingResultsError, SpecError, close_matches

CONFIG_SCHEMA_VERSION = 1
FORMATS = ("yaml", "json")
SUFFIXES = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}
METRICS = "metrics.json"

# What data.build_dataset does to the raw columns (schema version 1 of the preprocessing); a
# config names it so that a future change of the pipeline is detected rather than silently used.
PREPROCESSING = {
    "version": 1,
    "numeric_inputs": "standardised with the training split's mean and std",
    "categorical_inputs": "one-hot over the categories seen in the training split",
    "identifier_inputs": "text columns with a different value in every row, or of more than 20 distinct dates, are not default inputs",
    "missing_inputs": "training mean plus a missing-indicator column",
    "classification_targets": "classes coded 0..C-1 in sorted order; NaN = unlabelled",
    "regression_targets": "standardised on the training split; RMSE reported in original units",
}

TOP_KEYS = ("schema_version", "taskscout_version", "study", "data", "preprocessing", "split", "seed",
            "auxiliary_generation", "model", "training", "groups")


# ---------------------------------------------------------------- export


def group_auxiliaries(group: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A recommendation group's auxiliaries by name, each once, with `serves` (the served tasks
    that gain from it) and per-task `expected_gain` and `ci`.

    Recommendations written before an auxiliary was listed once per group repeat it for every
    served task, with `serves` a task name and scalar gains; those entries are merged here.
    """
    out: dict[str, dict[str, Any]] = {}
    for a in group.get("aux") or []:
        name = str(a["name"])
        entry = out.setdefault(name, {"name": name, "kind": a.get("kind"), "serves": [], "expected_gain": {}, "ci": {}})
        serves = a.get("serves")
        served = [serves] if isinstance(serves, str) else list(serves or [])
        gains, ci = a.get("expected_gain"), a.get("ci")
        for t in served:
            if t not in entry["serves"]:
                entry["serves"].append(t)
            entry["expected_gain"].setdefault(t, gains.get(t) if isinstance(gains, Mapping) else gains)
            entry["ci"].setdefault(t, ci.get(t) if isinstance(ci, Mapping) else ci)
    return out


def _aux_entry(name: str, records: Mapping[str, Mapping[str, Any]], main: str, rec_aux: Mapping[str, Any]) -> dict[str, Any]:
    r = records.get(name)
    if r is None:
        raise MissingResultsError(
            f"recommended auxiliary {name!r} is not in candidates.json{close_matches(name, records)}; "
            "its provenance is needed to rebuild it: rerun `taskscout search` to rewrite candidates.json"
        )
    return {
        "name": name, "kind": r.get("kind"), "serves": list(r.get("serves") or [main]), "type": r.get("type"),
        "training_only": bool(r.get("training_only", False)), "adversarial": bool(r.get("adversarial", False)),
        "drops_inputs": list(r.get("drops_inputs") or []), "provenance": r.get("provenance") or {},
        "expected_gain": rec_aux.get("expected_gain"), "ci": rec_aux.get("ci"),
    }


def _data_source(source: str, spec_path: Path) -> str:
    """The data source as a config stores it: builtin:NAME as is, a data file as an absolute path.

    spec.json keeps a path as the search was given it, relative to the directory the search ran
    in; the config must find the data from wherever `train` runs.
    """
    if source.startswith("builtin:") or Path(source).is_absolute():
        return source
    here = os.path.abspath(source)
    if not os.path.exists(here):
        raise DataError(
            f"data file '{source}' named in {spec_path} is relative to the directory `taskscout search` ran in "
            f"and is not found from {Path.cwd()}; run `taskscout export` from that directory"
        )
    return here


def export_config(run_dir: str | Path) -> dict[str, Any]:
    """The training config of a run directory's recommendation (a JSON/YAML-able mapping).

    Each group lists its tasks, the tasks it serves (whose summed validation loss picks its best
    epoch), its branch layer, its auxiliaries with generator provenance, and a loss weight per
    target (1.0 each: the study's weighting scheme then applies on top).
    """
    from taskscout.spec import spec_from_json

    d = rundir.require(run_dir, rundir.SPEC, rundir.RECOMMENDATION)
    spec = spec_from_json((d / rundir.SPEC).read_text(encoding="utf-8"))
    rec = rundir.read_json(d / rundir.RECOMMENDATION)
    groups = rec.get("groups") or []
    if not groups:
        raise MissingResultsError(f"{d / rundir.RECOMMENDATION} has no groups; rerun `taskscout search` to the end")
    tasks = list(rec.get("tasks") or spec.tasks)
    assignment = rec.get("assignment") or {}
    needs_aux = any(g.get("aux") for g in groups)
    records: dict[str, Mapping[str, Any]] = {}
    if needs_aux:
        rundir.require(d, rundir.CANDIDATES)
        records = {str(c["name"]): c for c in rundir.read_json(d / rundir.CANDIDATES)}

    out_groups = []
    for k, g in enumerate(groups):
        members = [t for t in tasks if t in g.get("tasks", [])]
        serves = [t for t in tasks if assignment.get(t) == k] if assignment else list(members)
        auxes = [_aux_entry(name, records, (a["serves"] or members)[0], a) for name, a in group_auxiliaries(g).items()]
        out_groups.append({
            "name": rundir.group_key(members, tasks),
            "tasks": members,
            "serves": serves,
            "branch_layer": int(g.get("branch_layer", spec.model.depth)),
            "branch_source": g.get("branch_source"),
            "auxiliaries": auxes,
            "loss_weights": {n: 1.0 for n in [*members, *(a["name"] for a in auxes)]},
            "expected_gain": g.get("expected_gain") or {},
            "ci": g.get("ci") or {},
        })
    return {
        "schema_version": CONFIG_SCHEMA_VERSION,
        "taskscout_version": __version__,
        "study": spec.name,
        "data": {
            "source": _data_source(spec.data, d / rundir.SPEC), "options": dict(spec.data_options), "tasks": list(spec.tasks),
            "main": list(spec.main), "task_types": dict(spec.task_types),
            "inputs": None if spec.inputs is None else list(spec.inputs),
            "time_column": spec.time_column, "entity_column": spec.entity_column,
        },
        "preprocessing": dict(PREPROCESSING),
        "split": {"val": spec.split.val, "test": spec.split.test, "by": "time" if spec.time_column else "row",
                  "seed": spec.seed},
        "seed": spec.seed,
        "auxiliary_generation": {
            "kinds": list(spec.aux.kinds), "cap": spec.aux.cap, "caps": dict(spec.aux.caps),
            "adversarial": list(spec.aux.adversarial), "smooth_source": spec.aux.smooth_source,
            "horizon": spec.aux.horizon, "min_labelled": spec.aux.min_labelled,
        },
        "model": {"depth": spec.model.depth, "width": spec.model.width, "adversarial_lambda": spec.model.adversarial_lambda},
        "training": {
            "epochs": spec.training.epochs, "batch_size": spec.training.batch_size, "patience": spec.training.patience,
            "min_epochs": spec.training.min_epochs, "loss_weighting": spec.training.weighting,
            "optimiser": {"name": "adam", "lr": spec.training.lr, "weight_decay": spec.training.weight_decay},
            "device": spec.device,
        },
        "groups": out_groups,
    }


def _check_writable_below(path: Path, label: str) -> None:
    """A SpecError unless `path` (a file or directory to create or replace) can be written: its
    nearest existing ancestor must be a directory that accepts new files (tried with a temporary
    file that vanishes on close)."""
    here = next((a for a in path.absolute().parents if a.exists()), None)
    if here is None:
        return
    if not here.is_dir():
        raise SpecError(f"{label} cannot be created: '{here}' is a file, not a directory; choose a path outside it")
    try:
        with tempfile.TemporaryFile(dir=here):
            pass
    except OSError as e:
        raise SpecError(f"{label} cannot be written: '{here}' does not accept new files (a test file there failed: "
                        f"{e.strerror or e}); choose a writable directory") from None


def check_config_path(path: str | Path, format: str | None = None) -> str:
    """The format of a config to write at `path` (`config_format`), after checking that the file
    can be written there; a SpecError naming the problem otherwise. Writes nothing."""
    p = Path(path)
    if p.is_dir():
        raise SpecError(f"--out '{p}' is a directory; the training config is one file: "
                        f"give a file name such as '{p / 'train.yaml'}'")
    fmt = config_format(p, format)
    _check_writable_below(p, f"--out '{p}'")
    return fmt


def check_models_dir(path: str | Path, *, label: str | None = None) -> Path:
    """`path` after checking that it is, or can be made, a directory that accepts the trained
    models; a SpecError naming the problem (and `path` as `label`, default "--out 'PATH'")
    otherwise. Writes nothing."""
    p = Path(path)
    label = label or f"--out '{p}'"
    if p.exists() and not p.is_dir():
        raise SpecError(f"{label} is a file; `taskscout train` writes {METRICS} and one checkpoint per group "
                        "into a directory: give --out a directory path")
    if p.is_dir():
        _check_writable_below(p / METRICS, label)
    else:
        _check_writable_below(p, label)
    return p


def config_format(path: str | Path, format: str | None = None) -> str:
    """The format a config at `path` is written in: `format` when given (it must agree with a
    .yaml/.yml/.json suffix), else the suffix's; a SpecError for any other suffix without `format`."""
    if format is not None and format not in FORMATS:
        raise SpecError(f"--format must be one of {list(FORMATS)}. Got {format!r} instead.")
    p = Path(path)
    suffix = p.suffix.lower()
    implied = SUFFIXES.get(suffix)
    if format is None and implied is None:
        has = f"suffix {p.suffix!r}" if suffix else "no suffix"
        raise SpecError(f"--out '{p}' has {has}; a training config is written as .yaml/.yml or .json: "
                        f"name it like '{p.with_suffix('.yaml').name}', or pass --format yaml|json")
    if format is not None and implied is not None and implied != format:
        raise SpecError(f"--format {format} but --out '{p}' ends in {p.suffix} ({implied}); "
                        "drop --format or give the file a matching suffix")
    return format or implied


def write_config(config: Mapping[str, Any], path: str | Path, *, format: str | None = None) -> Path:
    """Write `config` as YAML or JSON (`config_format`: from the file suffix unless `format` is given)."""
    fmt = check_config_path(path, format)
    with _writing(Path(path)):
        if fmt == "json":
            return rundir.write_json(path, config)
        import yaml

        header = "# taskscout training config: `taskscout train THIS_FILE` trains one network per group\n"
        return rundir.write_text(path, header + yaml.safe_dump(dict(config), sort_keys=False, allow_unicode=True))


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turn a failed write (disk full, permissions changed since the check) into one error line;
    rundir's atomic writes leave no partial file behind."""
    try:
        yield
    except OSError as e:
        raise SpecError(f"cannot write '{path}': {e.strerror or e}; free space or choose another --out") from None


# ---------------------------------------------------------------- reading and checking a config


def _fail(where: str, key: str, expect: str, got: Any) -> SpecError:
    return SpecError(f"{key} in training config '{where}' must be {expect}. Got {got!r} instead.")


def _yaml_problem(e: Exception, text: str) -> str:
    """One line for a yaml parser error: 'line L, column C: problem (while ... at line L, column C)'."""
    def at(mark: Any) -> str:
        return f"line {mark.line + 1}, column {mark.column + 1}"

    mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
    if mark is not None and problem:
        context, context_mark = getattr(e, "context", None), getattr(e, "context_mark", None)
        where = f" ({context} at {at(context_mark)})" if context and context_mark is not None else ""
        return f"{at(mark)}: {problem}{where}"
    position, reason = getattr(e, "position", None), getattr(e, "reason", None)
    if isinstance(position, int) and reason:  # yaml.reader.ReaderError: a character yaml refuses
        line = text.count("\n", 0, position)
        column = position - (text.rfind("\n", 0, position) + 1)
        char = getattr(e, "character", None)
        code = ord(char) if isinstance(char, str) and len(char) == 1 else char
        what = f"#x{code:04x}" if isinstance(code, int) else repr(char)
        return f"line {line + 1}, column {column + 1}: unacceptable character {what}: {reason}"
    return " ".join(str(e).split())


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a training config (YAML or JSON) and check it (`check_config`); a relative data path
    is resolved against the config file's folder."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"training config '{p}' does not exist; write one with `taskscout export RUN_DIR --out {p.name}`")
    import yaml

    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"training config '{p}' is not UTF-8 text (byte {e.start}: {e.reason}); "
                        "give the YAML or JSON file written by `taskscout export`") from None
    except OSError as e:
        raise SpecError(f"cannot read training config '{p}': {e.strerror or e}") from None
    try:
        raw = yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError as e:
        raise SpecError(f"training config '{p}' is neither valid YAML nor JSON: {_yaml_problem(e, text)}; "
                        "fix it there or export it again with `taskscout export RUN_DIR`") from None
    config = check_config(raw, where=str(p))
    source = config["data"]["source"]
    if not source.startswith("builtin:") and not Path(source).is_absolute():
        # A relative data path in a config file is read from the config's folder, like a study file's;
        # configs exported before data paths were made absolute hold it relative to where the
        # search ran, so the working directory is tried second.
        here = os.path.normpath(p.parent.absolute() / source)
        if not os.path.exists(here):
            if not os.path.exists(source):
                raise DataError(
                    f"data.source {source!r} of training config '{p}' is neither in the config's folder ('{here}') "
                    "nor in the working directory; give an absolute path or one relative to the config file"
                )
            here = os.path.abspath(source)
        config["data"] = {**config["data"], "source": here}
    return config


def check_default_inputs(config: Mapping[str, Any], spec: Any, ds: Any) -> None:
    """A DataError when `config` was exported before identifier and date columns were left out of
    the default inputs (its preprocessing does not say so) and the data has such columns: its
    networks were searched with them as inputs, and training without them would differ silently."""
    if "identifier_inputs" in config["preprocessing"] or spec.inputs is not None:
        return
    if ds.left_out:
        raise DataError(
            f"this training config comes from a taskscout whose default inputs included {list(ds.left_out)}, which this version "
            f"leaves out (an identifier or dates); export the run again, or name the inputs in data.inputs"
        )


def check_config(config: Any, *, where: str = "<mapping>") -> dict[str, Any]:
    """The config itself after checking its schema; a SpecError naming the first problem otherwise."""
    if not isinstance(config, Mapping):
        raise SpecError(f"training config '{where}' must be a mapping of settings. Got {type(config).__name__} instead.")
    version = config.get("schema_version")
    if version != CONFIG_SCHEMA_VERSION:
        raise SpecError(
            f"training config '{where}' has schema_version {version!r}; this taskscout reads version "
            f"{CONFIG_SCHEMA_VERSION}: export it again with `taskscout export RUN_DIR`"
        )
    missing = [k for k in TOP_KEYS if k not in config]
    if missing:
        raise SpecError(f"training config '{where}' lacks {', '.join(missing)}; export it again with `taskscout export RUN_DIR`")
    unknown = [k for k in config if k not in TOP_KEYS]
    if unknown:
        raise SpecError(f"unknown key {unknown[0]!r} in training config '{where}'{close_matches(unknown[0], TOP_KEYS)}; "
                        f"allowed keys: {', '.join(TOP_KEYS)}")
    pre = config["preprocessing"]
    if not isinstance(pre, Mapping) or pre.get("version") != PREPROCESSING["version"]:
        raise _fail(where, "preprocessing.version", f"{PREPROCESSING['version']} (the pipeline of this taskscout)",
                    pre.get("version") if isinstance(pre, Mapping) else pre)
    data = config["data"]
    if not isinstance(data, Mapping) or not isinstance(data.get("source"), str) or not data.get("source"):
        raise _fail(where, "data.source", "a file path or builtin:NAME", data.get("source") if isinstance(data, Mapping) else data)
    tasks = data.get("tasks")
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) for t in tasks):
        raise _fail(where, "data.tasks", "a non-empty list of column names", tasks)
    main = data.get("main") or []
    if not isinstance(main, list) or any(t not in tasks for t in main):
        raise _fail(where, "data.main", f"a list drawn from data.tasks {tasks} (empty: every task)", data.get("main"))
    depth = (config["model"] or {}).get("depth") if isinstance(config["model"], Mapping) else None
    if not isinstance(depth, int) or isinstance(depth, bool):
        raise _fail(where, "model.depth", "an int", depth)
    groups = config["groups"]
    if not isinstance(groups, list) or not groups:
        raise _fail(where, "groups", "a non-empty list of groups", groups)
    served: dict[str, int] = {}
    for k, g in enumerate(groups):
        at = f"groups[{k}]"
        if not isinstance(g, Mapping):
            raise _fail(where, at, "a mapping", g)
        members = g.get("tasks")
        if not isinstance(members, list) or not members or any(t not in tasks for t in members):
            raise _fail(where, f"{at}.tasks", f"a non-empty list drawn from data.tasks {tasks}", members)
        serves = g.get("serves", members)
        if not isinstance(serves, list) or not serves or any(t not in members for t in serves):
            raise _fail(where, f"{at}.serves", f"a non-empty list drawn from its tasks {members}", serves)
        for t in serves:
            if t in served:
                raise SpecError(f"task {t!r} is served by groups[{served[t]}] and {at} in training config '{where}'; "
                                "each task must be served by exactly one group")
            served[t] = k
        b = g.get("branch_layer")
        if not isinstance(b, int) or isinstance(b, bool) or not 0 <= b <= depth:
            raise _fail(where, f"{at}.branch_layer", f"an int in [0, {depth}] (model.depth)", b)
        auxes = g.get("auxiliaries", [])
        if not isinstance(auxes, list) or not all(isinstance(a, Mapping) and isinstance(a.get("name"), str) for a in auxes):
            raise _fail(where, f"{at}.auxiliaries", "a list of mappings with a 'name'", auxes)
        names = [*members, *(a["name"] for a in auxes)]
        weights = g.get("loss_weights", {})
        if not isinstance(weights, Mapping) or any(
            n not in names or not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w) or w < 0
            for n, w in weights.items()
        ):
            raise _fail(where, f"{at}.loss_weights", f"a mapping from its targets {names} to numbers >= 0", weights)
    # Tasks outside data.main stay in data.tasks because the data set and the auxiliaries built
    # from them (e.g. TASK__related) depend on them; only the main tasks need a serving group.
    unserved = [t for t in (main or tasks) if t not in served]
    if unserved:
        raise SpecError(f"main task {unserved[0]!r} is served by no group in training config '{where}'; "
                        "add it to one group's 'serves'")
    return dict(config)


def spec_from_config(config: Mapping[str, Any]):
    """The StudySpec that rebuilds the config's data and auxiliaries (data, split, aux, model, training)."""
    from taskscout.spec import resolve_spec

    data, training, aux = config["data"], config["training"], config["auxiliary_generation"]
    optimiser = training.get("optimiser", {}) or {}
    if optimiser.get("name", "adam") != "adam":
        raise SpecError(f"training.optimiser.name must be 'adam' (the optimiser taskscout trains with). "
                        f"Got {optimiser.get('name')!r} instead.")
    raw = {
        "data": data["source"], "name": config.get("study") or "trained", "tasks": list(data["tasks"]),
        "main": list(data.get("main") or []), "inputs": data.get("inputs"), "task_types": dict(data.get("task_types") or {}),
        "time_column": data.get("time_column"), "entity_column": data.get("entity_column"),
        "data_options": dict(data.get("options") or {}), "seed": config["seed"],
        "device": training.get("device", "auto"),
        "split": {"val": config["split"]["val"], "test": config["split"]["test"]},
        "aux": {k: aux[k] for k in ("kinds", "cap", "caps", "adversarial", "smooth_source", "horizon", "min_labelled") if k in aux},
        "model": dict(config["model"]),
        "training": {
            "epochs": training["epochs"], "batch_size": training["batch_size"], "patience": training.get("patience", 10),
            "min_epochs": training.get("min_epochs", 0), "weighting": training.get("loss_weighting", "equal"), "lr": optimiser.get("lr", 3e-3),
            "weight_decay": optimiser.get("weight_decay", 0.0),
        },
    }
    if not raw["main"]:
        del raw["main"]
    return resolve_spec(None, {k: v for k, v in raw.items() if v is not None})


# ---------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainedGroup:
    """One trained network of a config, evaluated at its best validation epoch."""

    name: str
    tasks: tuple[str, ...]
    serves: tuple[str, ...]
    auxiliaries: tuple[str, ...]
    branch_layer: int
    best_epoch: int
    epochs_run: int
    seconds: float
    val: dict[str, dict[str, float]]    # target -> {"loss", "metric"}
    test: dict[str, dict[str, float]]
    checkpoint: Path


@dataclass(frozen=True)
class TrainOutcome:
    out_dir: Path
    groups: tuple[TrainedGroup, ...]
    metric_names: dict[str, str]        # task -> auc | accuracy | rmse

    def task_rows(self) -> list[tuple[str, str, str, float, float]]:
        """(task, group, metric name, test metric, test loss) for each task, from the group serving it."""
        rows = []
        for g in self.groups:
            for t in g.serves:
                rows.append((t, g.name, self.metric_names[t], g.test[t]["metric"], g.test[t]["loss"]))
        return rows


def _rebuild_auxiliaries(ds: Any, spec: Any, wanted: Sequence[Mapping[str, Any]]) -> list[Any]:
    """The exported auxiliaries, regenerated from the data and checked against their provenance."""
    if not wanted:
        return []
    from taskscout.auxgen import generate_candidates

    by_name = {a.name: a for a in generate_candidates(ds, spec)}
    out = []
    for w in wanted:
        a = by_name.get(w["name"])
        if a is None:
            raise DataError(
                f"auxiliary {w['name']!r} of the config is not among the {len(by_name)} candidates rebuilt from "
                f"{spec.data}{close_matches(w['name'], by_name)}; the data or auxiliary settings differ from the "
                "exported study: export again from a run on this data"
            )

        def same(p: Mapping[str, Any]) -> str:
            return json.dumps({k: v for k, v in p.items() if k != "scores"}, sort_keys=True, default=str)

        if w.get("kind") not in (None, a.kind) or ("provenance" in w and same(w["provenance"]) != same(a.provenance)):
            raise DataError(
                f"auxiliary {w['name']!r} rebuilt from {spec.data} differs from the config's provenance "
                f"(kind {a.kind}, {a.provenance.get('transform')!r}); the data changed since the export: export again"
            )
        out.append(a)
    return out


def train_config(
    config: Mapping[str, Any],
    *,
    out_dir: str | Path,
    device: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> TrainOutcome:
    """Train one model per group of `config` and write out_dir/metrics.json and out_dir/group_K.pt.

    Each group's model trains on its tasks and auxiliaries at its branch layer with the config's
    seed; the tasks it serves pick its best epoch. Losses and metrics come from the validation
    and test splits at that epoch (the test split is never used for any choice).
    """
    import torch

    from taskscout.data import build_dataset
    from taskscout.search.problem import build_problem
    from taskscout.training import ModelPlan, train_models

    cfg = check_config(config)
    check_models_dir(out_dir)
    spec = spec_from_config(cfg)
    ds = build_dataset(spec)
    check_default_inputs(cfg, spec, ds)
    wanted: dict[str, Mapping[str, Any]] = {}
    for g in cfg["groups"]:
        for a in g.get("auxiliaries", []):
            wanted.setdefault(a["name"], a)
    aux_tasks = _rebuild_auxiliaries(ds, spec, list(wanted.values()))
    problem = build_problem(ds, list(spec.tasks), aux_tasks)
    index = problem.head_index
    plans = []
    for k, g in enumerate(cfg["groups"]):
        auxes = [a["name"] for a in g.get("auxiliaries", [])]
        targets = [*g["tasks"], *auxes]
        weights = g.get("loss_weights") or {}
        plans.append(ModelPlan(
            targets=tuple(index[n] for n in targets), main=tuple(index[n] for n in g.get("serves", g["tasks"])),
            seed=int(cfg["seed"]), branch_layer=int(g["branch_layer"]),
            dropped_features=tuple(sorted({f for a in auxes for f in problem.dropped.get(a, ())})),
            loss_weights=tuple(float(weights.get(n, 1.0)) for n in targets), key=g.get("name") or f"group {k + 1}",
        ))
    results = train_models(problem.X, problem.Y, problem.heads, problem.split, plans, model=spec.model,
                           training=spec.training, device=device or spec.device, eval_splits=("val", "test"),
                           keep_state=True, progress=progress, stack_size=spec.search.stack_size)

    out = Path(out_dir)
    files: dict[Path, bytes] = {}
    heads = [dataclasses.asdict(h) for h in problem.heads]
    names = [h.name for h in problem.heads]
    groups = []
    for k, (g, plan, res) in enumerate(zip(cfg["groups"], plans, results, strict=True)):
        def scores(split: str, plan: Any = plan, res: Any = res) -> dict[str, dict[str, float]]:
            return {names[t]: {"loss": float(res.loss[split][t]), "metric": float(res.metric[split][t])} for t in plan.targets}

        path = out / f"group_{k + 1}.pt"
        checkpoint = {
            "schema_version": CONFIG_SCHEMA_VERSION, "taskscout_version": __version__, "group": _plain(g),
            "plan": {"targets": list(plan.targets), "main": list(plan.main), "seed": plan.seed,
                     "branch_layer": plan.branch_layer, "dropped_features": list(plan.dropped_features),
                     "loss_weights": list(plan.weights())},
            "heads": heads, "feature_names": list(ds.feature_names),
            "model": dataclasses.asdict(spec.model), "training": dataclasses.asdict(spec.training),
            "best_epoch": int(res.best_epoch), "state_dict": res.state,
            "val": scores("val"), "test": scores("test"),
        }
        buf = io.BytesIO()
        torch.save(checkpoint, buf)
        files[path] = buf.getvalue()
        groups.append(TrainedGroup(
            name=g.get("name") or rundir.group_key(g["tasks"], spec.tasks), tasks=tuple(g["tasks"]),
            serves=tuple(g.get("serves", g["tasks"])), auxiliaries=tuple(a["name"] for a in g.get("auxiliaries", [])),
            branch_layer=plan.branch_layer, best_epoch=int(res.best_epoch), epochs_run=int(res.epochs_run),
            seconds=float(res.seconds), val=scores("val"), test=scores("test"), checkpoint=path,
        ))
    metric_names = {t.name: t.metric_name for t in ds.tasks}
    outcome = TrainOutcome(out, tuple(groups), metric_names)
    files[out / METRICS] = rundir.json_text(_metrics_json(outcome, cfg)).encode()
    # The checkpoints and metrics.json land together or not at all: a failed write leaves the
    # directory as it was, never checkpoints that its metrics.json does not describe.
    with _writing(out):
        rundir.write_all(files)
    return outcome


def _plain(v: Any) -> Any:
    """JSON-like plain values only (what torch.load(weights_only=True) accepts)."""
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return v.item() if hasattr(v, "item") else str(v)


def _metrics_json(outcome: TrainOutcome, cfg: Mapping[str, Any]) -> dict[str, Any]:
    def num(x: float) -> float | None:
        return round(x, 6) if math.isfinite(x) else None

    return {
        "schema_version": CONFIG_SCHEMA_VERSION,
        "study": cfg.get("study"),
        "tasks": {t: {"group": g, "metric_name": m, "test_metric": num(v), "test_loss": num(lo)}
                  for t, g, m, v, lo in outcome.task_rows()},
        "groups": [
            {"name": g.name, "tasks": list(g.tasks), "serves": list(g.serves), "auxiliaries": list(g.auxiliaries),
             "branch_layer": g.branch_layer, "best_epoch": g.best_epoch, "epochs_run": g.epochs_run,
             "seconds": round(g.seconds, 3), "checkpoint": g.checkpoint.name,
             "val": {n: {k: num(x) for k, x in s.items()} for n, s in g.val.items()},
             "test": {n: {k: num(x) for k, x in s.items()} for n, s in g.test.items()}}
            for g in outcome.groups
        ],
    }


def load_trained(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """The network of a checkpoint written by `train_config` (eval mode, CPU) and the checkpoint dict."""
    import torch

    from taskscout.spec import ModelSettings
    from taskscout.training import Head, ModelPlan, build_model

    ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    heads = [Head(**h) for h in ckpt["heads"]]
    p = ckpt["plan"]
    plan = ModelPlan(targets=tuple(p["targets"]), main=tuple(p["main"]), seed=int(p["seed"]),
                     branch_layer=int(p["branch_layer"]), dropped_features=tuple(p["dropped_features"]))
    dtype = ckpt["state_dict"]["input_mask"].dtype
    net = build_model(plan, heads, in_features=len(ckpt["feature_names"]), model=ModelSettings(**ckpt["model"]), dtype=dtype)
    net.load_state_dict(ckpt["state_dict"])
    return net.eval(), ckpt
