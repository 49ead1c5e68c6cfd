"""Train: one network per group of a config, its metrics and checkpoints, and loading them back."""

from __future__ import annotations

import dataclasses
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskscout import __version__, rundir
from taskscout.data import Dataset, Head, build_dataset
from taskscout.errors import DataError, close_matches
from taskscout.export.config import (
    CONFIG_SCHEMA_VERSION,
    METRICS,
    check_config,
    spec_from_config,
)
from taskscout.export.write import _writing, check_models_dir
from taskscout.spec import ModelSettings, StudySpec

if TYPE_CHECKING:
    from taskscout.search.problem import SearchProblem

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


def _rebuild_auxiliaries(ds: Dataset, spec: StudySpec, wanted: Sequence[Mapping[str, Any]]) -> list[Any]:
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


def _group_plans(cfg: Mapping[str, Any], problem: SearchProblem) -> list[Any]:
    """One trainer ModelPlan per group of the checked config `cfg`."""
    from taskscout.training import ModelPlan

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
    return plans


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

    from taskscout.search.problem import build_problem
    from taskscout.training import train_models

    cfg = check_config(config)
    check_models_dir(out_dir)
    spec = spec_from_config(cfg)
    ds = build_dataset(spec)
    wanted: dict[str, Mapping[str, Any]] = {}
    for g in cfg["groups"]:
        for a in g.get("auxiliaries", []):
            wanted.setdefault(a["name"], a)
    aux_tasks = _rebuild_auxiliaries(ds, spec, list(wanted.values()))
    problem = build_problem(ds, list(spec.tasks), aux_tasks)
    plans = _group_plans(cfg, problem)
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

    from taskscout.training import ModelPlan, build_model

    ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    heads = [Head(**h) for h in ckpt["heads"]]
    p = ckpt["plan"]
    plan = ModelPlan(targets=tuple(p["targets"]), main=tuple(p["main"]), seed=int(p["seed"]),
                     branch_layer=int(p["branch_layer"]), dropped_features=tuple(p["dropped_features"]))
    dtype = ckpt["state_dict"]["input_mask"].dtype
    net = build_model(plan, heads, in_features=len(ckpt["feature_names"]), model=ModelSettings(**ckpt["model"]), dtype=dtype)
    net.load_state_dict(ckpt["state_dict"])
    return net.eval(), ckpt
