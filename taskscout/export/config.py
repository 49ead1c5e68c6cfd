"""The training config's schema: its constants, and reading and checking a config file."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from taskscout.errors import DataError, SpecError, close_matches

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
        "task_column": data.get("task_column"), "targets": data.get("targets"), "min_rows": data.get("min_rows"),
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
