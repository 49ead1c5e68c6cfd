"""The training config's constants, and reading and checking a config file (schema.py: its typed form)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from taskscout.errors import DataError, SpecError
from taskscout.export.schema import (
    PREPROCESSING_VERSION,
    TrainingConfig,
    _plain,
)
from taskscout.spec import resolve_spec

FORMATS = ("yaml", "json")
SUFFIXES = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}
METRICS = "metrics.json"

# What data.build_dataset does to the raw columns (schema version 1 of the preprocessing); a
# config names it so that a future change of the pipeline is detected rather than silently used.
PREPROCESSING = {
    "version": PREPROCESSING_VERSION,
    "numeric_inputs": "standardised with the training split's mean and std",
    "categorical_inputs": "one-hot over the categories seen in the training split",
    "identifier_inputs": "text columns with a different value in every row, or of more than 20 distinct dates, are not default inputs",
    "missing_inputs": "training mean plus a missing-indicator column",
    "classification_targets": "classes coded 0..C-1 in sorted order; NaN = unlabelled",
    "regression_targets": "standardised on the training split; RMSE reported in original units",
}

# ---------------------------------------------------------------- reading and checking a config


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


def _read_mapping(p: Path) -> Any:
    """The parsed text of config file `p` (YAML, a superset of JSON); a SpecError naming the problem."""
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
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError(f"training config '{p}' is neither valid YAML nor JSON: {_yaml_problem(e, text)}; "
                        "fix it there or export it again with `taskscout export RUN_DIR`") from None


def load_config(path: str | Path) -> dict[str, Any]:
    """The mapping of the training config at `path`, checked (`read_config`)."""
    return read_config(path).to_dict()


def read_config(path: str | Path) -> TrainingConfig:
    """Read a training config (YAML or JSON) and check it (`TrainingConfig.from_dict`); a relative
    data path is resolved against the config file's folder."""
    p = Path(path)
    config = TrainingConfig.from_dict(_read_mapping(p), where=str(p))
    source = config.data.source
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
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, source=here))
    return config


def check_config(config: Any, *, where: str = "<mapping>") -> dict[str, Any]:
    """The config's mapping after checking it (`TrainingConfig.from_dict`); a SpecError naming the
    first problem otherwise."""
    return TrainingConfig.from_dict(config, where=where).to_dict()


def spec_from_config(config: TrainingConfig | Mapping[str, Any]) -> Any:
    """The StudySpec that rebuilds the config's data and auxiliaries (data, split, aux, model, training)."""
    c = config if isinstance(config, TrainingConfig) else TrainingConfig.from_dict(config)
    data, training = c.data, c.training
    raw = {
        "data": data.source, "name": c.study or "trained", "tasks": list(data.tasks), "main": list(data.main),
        "inputs": None if data.inputs is None else list(data.inputs), "task_types": dict(data.task_types),
        "time_column": data.time_column, "entity_column": data.entity_column, "data_options": dict(data.options),
        "task_column": data.task_column, "targets": list(data.targets), "min_rows": data.min_rows,
        "seed": c.seed, "device": training.device, "split": {"val": c.split.val, "test": c.split.test},
        "aux": {k: v for k, v in _plain(c.auxiliary_generation).items() if v is not None},
        "model": _plain(c.model),
        "training": {
            "epochs": training.epochs, "batch_size": training.batch_size, "patience": training.patience,
            "min_epochs": training.min_epochs, "weighting": training.loss_weighting, "lr": training.optimiser.lr,
            "weight_decay": training.optimiser.weight_decay,
        },
    }
    if not raw["main"]:
        del raw["main"]
    return resolve_spec(None, {k: v for k, v in raw.items() if v is not None}, overrides_from="the training config")
