"""Export: a run directory's recommendation as a training config, and writing it as YAML or JSON."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from taskscout import __version__, rundir
from taskscout.errors import DataError, MissingResultsError, SpecError, close_matches
from taskscout.export.config import FORMATS, METRICS, PREPROCESSING, SUFFIXES
from taskscout.export.schema import CONFIG_SCHEMA_VERSION, TrainingConfig
from taskscout.recommendation import Group, read_recommendation
from taskscout.spec import spec_from_json

# ---------------------------------------------------------------- export


def group_auxiliaries(group: Group) -> dict[str, dict[str, Any]]:
    """A recommendation group's auxiliaries by name, with `serves` (the served tasks that gain
    from it) and per-task `expected_gain` and `ci`."""
    return {a.name: a.to_dict() for a in group.aux}


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
    d = rundir.require(run_dir, rundir.SPEC, rundir.RECOMMENDATION)
    spec = spec_from_json((d / rundir.SPEC).read_text(encoding="utf-8"))
    rec = read_recommendation(d)
    tasks = list(rec.tasks)
    needs_aux = any(g.aux for g in rec.groups)
    records: dict[str, Mapping[str, Any]] = {}
    if needs_aux:
        rundir.require(d, rundir.CANDIDATES)
        records = {str(c["name"]): c for c in rundir.read_json(d / rundir.CANDIDATES)}

    out_groups = []
    for k, g in enumerate(rec.groups):
        members = [t for t in tasks if t in g.tasks]
        serves = [t for t in tasks if rec.assignment[t] == k]
        auxes = [_aux_entry(name, records, (a["serves"] or members)[0], a) for name, a in group_auxiliaries(g).items()]
        out_groups.append({
            "name": rundir.group_key(members, tasks),
            "tasks": members,
            "serves": serves,
            "branch_layer": g.branch_layer,
            "branch_source": g.branch_source,
            "auxiliaries": auxes,
            "loss_weights": {n: 1.0 for n in [*members, *(a["name"] for a in auxes)]},
            "expected_gain": dict(g.expected_gain),
            "ci": {t: None if c is None else list(c) for t, c in g.ci.items()},
        })
    config = {
        "schema_version": CONFIG_SCHEMA_VERSION,
        "taskscout_version": __version__,
        "study": spec.name,
        "data": {
            "source": _data_source(spec.data, d / rundir.SPEC), "options": dict(spec.data_options), "tasks": list(spec.tasks),
            "main": list(spec.main), "task_types": dict(spec.task_types),
            "inputs": None if spec.inputs is None else list(spec.inputs),
            "time_column": spec.time_column, "entity_column": spec.entity_column,
            "task_column": spec.task_column, "targets": list(spec.targets), "min_rows": spec.min_rows,
        },
        "preprocessing": dict(PREPROCESSING),
        "split": {"val": spec.split.val, "test": spec.split.test, "by": "time" if spec.time_column else "row",
                  "per_segment": bool(spec.task_column),
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
    # what is written is what `taskscout train` reads: checked here, not first when training
    return TrainingConfig.from_dict(config, where=f"exported from {d}").to_dict()


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
