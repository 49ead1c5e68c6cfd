"""The `taskscout` command line: thin typer commands over the library.

Each command parses its flags, builds config objects, calls the library and prints. Heavy
imports (torch, optuna, plotly) happen inside command bodies so `--help` stays fast. Any
`TaskscoutError` becomes one line on stderr and exit code 2; anything else exits 1.
"""

import functools
import inspect
import json
import math
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from taskscout.errors import SpecError, TaskscoutError


class _App(typer.Typer):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Busy-waiting OpenMP threads made stacked training up to 7x slower on a shared CPU; the
        # policy is read when torch first starts its thread pool, so set it before any command
        # runs (the user's own setting wins).
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            return super().__call__(*args, **kwargs)
        except TaskscoutError as e:
            typer.echo(f"error: {e}", err=True)
            sys.exit(2)


app = _App(
    name="taskscout",
    help="Which tasks to train together, which auxiliary tasks help, and where a shared network should branch.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with `argv` and return its exit code (used by `python -m taskscout` and tests)."""
    try:
        app(args=argv, prog_name="taskscout")
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 1
    return 0


# ---------------------------------------------------------------- shared study flags

# Options several commands share, defined once.
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for item in values or []:
        if "=" not in item:
            raise SpecError(f"{flag} takes NAME=VALUE; got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _number(text: str) -> Any:
    """An int, a finite float, true/false, or else the text itself."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
        if math.isfinite(value):
            return value
    except ValueError:
        pass
    return {"true": True, "false": False}.get(text.lower(), text)


def _toml_value(text: str) -> Any:
    """VALUE of --set KEY=VALUE read as a TOML value (5, 0.1, true, ["a", "b"]); else the text."""
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


_STUDY_FLAGS: list[tuple[str, Any, Any]] = [
    ("tasks", str | None, typer.Option(help="Target columns, comma-separated (a,b,c).")),
    ("main", str | None, typer.Option(help="Main tasks, comma-separated; default: every task.")),
    ("inputs", str | None, typer.Option(help="Input columns, comma-separated; default: every other column.")),
    ("task_type", list[str] | None, typer.Option(help="Override a task's type: NAME=binary|multiclass|regression|ordinal (repeatable).")),
    ("time_column", str | None, typer.Option(help="Column with time stamps: splits by time, enables future-as-target.")),
    ("entity_column", str | None, typer.Option(help="Column naming the entity of each row (future targets never cross entities).")),
    ("task_column", str | None, typer.Option(help="Long format: the column naming each row's segment (store, patient, ...); one task per segment and --target. --tasks/--main then name segment values.")),
    ("target", list[str] | None, typer.Option(help="Long format: a column to predict per segment (repeatable).")),
    ("min_rows", int | None, typer.Option(help="Long format: segments with fewer rows are left out, with a note (default 10).")),
    ("aux_kinds", str | None, typer.Option(help="Auxiliary kinds to try, comma-separated: related,adversarial,hints,quantization,predict_inputs,future.")),
    ("aux_cap", int | None, typer.Option(help="Auxiliary candidates kept per kind per main task.")),
    ("cap", list[str] | None, typer.Option(help="Cap for one kind: KIND=N (repeatable).")),
    ("adversarial", str | None, typer.Option(help="Nuisance/domain columns to predict through gradient reversal, comma-separated.")),
    ("smooth_source", str | None, typer.Option(help="Numeric column behind a thresholded binary task (a smoothing target).")),
    ("horizon", int | None, typer.Option(help="Future-as-target: steps ahead t+1..t+H (default 1).")),
    ("aux_min_labelled", int | None, typer.Option(help="Auxiliary candidates need at least this many labelled training rows (default 20).")),
    ("depth", int | None, typer.Option(help="Trunk layers L.")),
    ("width", int | None, typer.Option(help="Trunk width H.")),
    ("epochs", int | None, typer.Option(help="Epochs per model (default from --budget).")),
    ("batch_size", int | None, typer.Option(help="Mini-batch size.")),
    ("lr", float | None, typer.Option(help="Adam learning rate.")),
    ("seeds", int | None, typer.Option(help="Seeds per comparison (default from --budget).")),
    ("weighting", str | None, typer.Option(help="Loss weighting: equal, uncertainty, ...")),
    ("budget", str | None, typer.Option(help="Preset for seeds, epochs and candidates: small, medium (default), large.")),
    ("time_limit", float | None, typer.Option(help="Stop starting new work after this many seconds.")),
    ("skip", list[str] | None, typer.Option(help="Skip a phase: single, pairs, aux, depth, subsets, estimators, selection (repeatable).")),
    ("phase", list[str] | None, typer.Option(help="Run a phase the defaults leave out: estimators (tag, gradcos, rsa scored against the measured gains; stored, so a rerun does not recompute them). Repeatable.")),
    ("networks", int | None, typer.Option(help="Budget of networks for grouping; default: best over all.")),
    ("fdr", float | None, typer.Option(help="Call a measured gain real only under Benjamini-Hochberg false-discovery-rate control at this level over every measured comparison (e.g. 0.05); default 1 = off.")),
    ("selection_rows", str | None, typer.Option(help="Held-out rows of the selection stage: crossfit (default: folds of the training split, one per fresh seed) or carve (half the validation split, set aside before the search).")),
    ("selection_rule", str | None, typer.Option(help="total (default): the selection stage chooses the whole grouping on held-out totals; per-task: the solver's per-task-gated grouping stands and the stage only records the comparison.")),
    ("device", str | None, typer.Option(help="auto (CUDA when present), cpu or cuda.")),
    ("seed", int | None, typer.Option(help="Seed for splits and models.")),
    ("out", str | None, typer.Option(help="Run directory; default reports/NAME.")),
    ("storage", str | None, typer.Option(help="Optuna storage URL; default SQLite in the run directory.")),
    ("name", str | None, typer.Option(help="Study name; default from the data.")),
    ("option", list[str] | None, typer.Option(help="Builtin data set parameter KEY=VALUE (repeatable), e.g. groups=3.")),
    ("set", list[str] | None, typer.Option(help="Any study-file setting: KEY=VALUE or SECTION.KEY=VALUE, VALUE in TOML (repeatable), e.g. training.patience=5.")),
]


def overrides_from_flags(flags: dict[str, Any]) -> dict[str, Any]:
    """The nested study mapping that the flags set (unset flags are absent).

    `--set` items come first, so a dedicated flag for the same setting wins over them.
    """
    out: dict[str, Any] = {}

    def put(section: str | None, key: str, value: Any) -> None:
        if value is None:
            return
        target = out.setdefault(section, {}) if section else out
        if not isinstance(target, dict):
            raise SpecError(f"'{section}' was given the value {target!r} with --set, but it is a section of settings")
        target[key] = value

    for key, text in _pairs(flags.get("set"), "--set").items():
        section, _, leaf = key.rpartition(".")
        if not leaf or "." in section:
            raise SpecError(f"--set takes KEY=VALUE or SECTION.KEY=VALUE (e.g. training.patience=5); got {key!r}")
        put(section or None, leaf, _toml_value(text))

    for key in ("tasks", "main", "inputs"):
        put(None, key, _csv(flags.get(key)))
    for key in ("time_column", "entity_column", "budget", "device", "seed", "out", "name", "task_column", "min_rows"):
        put(None, key, flags.get(key))
    put(None, "targets", flags.get("target") or None)
    if flags.get("task_type"):
        put(None, "task_types", _pairs(flags["task_type"], "--task-type"))
    if flags.get("option"):
        put(None, "data_options", {k: _number(v) for k, v in _pairs(flags["option"], "--option").items()})
    put("aux", "kinds", _csv(flags.get("aux_kinds")))
    put("aux", "cap", flags.get("aux_cap"))
    if flags.get("cap"):
        put("aux", "caps", {k: _number(v) for k, v in _pairs(flags["cap"], "--cap").items()})
    put("aux", "adversarial", _csv(flags.get("adversarial")))
    put("aux", "smooth_source", flags.get("smooth_source"))
    put("aux", "horizon", flags.get("horizon"))
    put("aux", "min_labelled", flags.get("aux_min_labelled"))
    put("model", "depth", flags.get("depth"))
    put("model", "width", flags.get("width"))
    for key in ("epochs", "batch_size", "lr", "seeds", "weighting"):
        put("training", key, flags.get(key))
    for key in ("time_limit", "networks", "fdr", "storage", "selection_rows", "selection_rule"):
        put("search", key, flags.get(key))
    if flags.get("skip") or flags.get("phase"):
        from taskscout.spec import DEFAULT_PHASES, PHASES

        for flag in ("skip", "phase"):
            bad = [p for p in flags.get(flag) or () if p not in PHASES]
            if bad:
                raise SpecError(f"--{flag} takes one of {list(PHASES)}; got {bad[0]!r}")
        wanted = set(DEFAULT_PHASES) | set(flags.get("phase") or ())
        put("search", "phases", [p for p in PHASES if p in wanted and p not in (flags.get("skip") or ())])
    return out


def study_command(fn: Any) -> Any:
    """Give a command the shared study flags and a SOURCE argument; it receives the resolved `spec`.

    The flags are declared once (`_STUDY_FLAGS`); the command's own parameters come first.
    """
    sig = inspect.signature(fn)
    own = [p for p in sig.parameters.values() if p.name != "spec"]
    source = inspect.Parameter(
        "source", inspect.Parameter.POSITIONAL_OR_KEYWORD,
        annotation=Annotated[str, typer.Argument(metavar="DATA|STUDY", help="A CSV/Parquet file, builtin:NAME, or a .toml study file.")],
    )
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[tp, opt])
        for name, tp, opt in _STUDY_FLAGS
    ]

    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> Any:
        from taskscout.spec import resolve_spec

        flags = {name: kwargs.pop(name) for name, _, _ in _STUDY_FLAGS}
        spec = resolve_spec(kwargs.pop("source"), overrides_from_flags(flags))
        if spec.task_column or spec.targets:  # long format: segment values become task names
            from taskscout.data.prepare import resolve_segments

            spec = resolve_segments(spec)
        return fn(spec=spec, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=[source, *own, *shared])  # type: ignore[attr-defined]
    return wrapper


# ---------------------------------------------------------------- commands


@app.command()
def datasets(as_json: JsonFlag = False) -> None:
    """List the bundled data sets usable as DATA = builtin:NAME."""
    from taskscout.data.builtin import BUILTINS

    rows = [
        {"name": f"builtin:{d.name}", "description": d.description, "tasks": list(d.tasks),
         "package": d.package, "time_column": d.time_column, "task_column": d.task_column, "source": d.source or None}
        for d in BUILTINS.values()
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        typer.echo(f"{r['name']:<26} {r['description']}")
        if r["task_column"]:  # long format: the tasks are per segment of the task column
            typer.echo(f"{'':<26} task column: {r['task_column']}; targets: {', '.join(r['tasks'])} (--target NAME)")
        else:
            typer.echo(f"{'':<26} tasks: {', '.join(r['tasks'])}")
        if r["source"]:
            typer.echo(f"{'':<26} source: {r['source']}")


@app.command()
@study_command
def validate(
    spec: Any,
    as_json: JsonFlag = False,
) -> None:
    """Check a study: print the resolved spec and a data summary (rows, tasks, labels per split)."""
    from taskscout.data import build_dataset, summarize
    from taskscout.search.preflight import check_search_settings

    if spec.device == "cuda":
        from taskscout.device import resolve_device

        resolve_device(spec.device)
    check_search_settings(spec)  # what a search would refuse before training, refused here too
    ds = build_dataset(spec)
    summary = summarize(ds)
    if as_json:
        typer.echo(json.dumps({"spec": spec.to_dict(), "summary": summary}, indent=2, default=str))
        return
    typer.echo(f"study      {spec.name}")
    typer.echo(f"data       {spec.data}")
    typer.echo(f"rows       {summary['rows']} (train {summary['split_rows']['train']}, val {summary['split_rows']['val']}, test {summary['split_rows']['test']})")
    typer.echo(f"inputs     {summary['inputs']} columns -> {summary['features']} features")
    for note in summary["notes"]:
        typer.echo(f"note       {note}")
    split_rule = f"by time ({spec.time_column}): test = latest rows" if spec.time_column else f"random by row (seed {spec.seed})"
    if spec.task_column:
        split_rule = f"per segment of {spec.task_column!r}, " + split_rule.replace("latest rows", "latest rows of each segment")
        typer.echo(f"segments   {len(set(ds.meta['segment'].values()))} of {spec.task_column!r}, targets "
                   f"{', '.join(spec.targets)}: {len(ds.tasks)} tasks (min_rows {spec.min_rows})")
    typer.echo(f"split      {split_rule}")
    typer.echo(f"main       {', '.join(spec.main_tasks)}")
    typer.echo(f"budget     {spec.budget} (seeds {spec.training.seeds}, epochs {spec.training.epochs}); device {spec.device}")
    typer.echo(f"model      trunk {spec.model.depth} x {spec.model.width}")
    typer.echo("tasks")
    width = max(len(t) for t in summary["tasks"])
    for name, t in summary["tasks"].items():
        lab = t["labelled"]
        if "balance" in t:
            shown = list(t["balance"].items())[:12]  # a line per task, also with many classes
            more = len(t["balance"]) - len(shown)
            detail = "balance " + ", ".join(f"{k}: {v:.0%}" for k, v in shown) + (f", ... {more} more classes" if more else "")
        else:
            detail = f"mean {t['mean']:g}, std {t['std']:g}"
        typer.echo(f"  {name:<{width}}  {t['type']:<10} labelled {lab['train']}/{lab['val']}/{lab['test']}  {detail}")
    typer.echo(f"valid: nothing was written; a search would write to {Path(spec.run_dir)}")


@app.command()
@study_command
def candidates(
    spec: Any,
    as_json: JsonFlag = False,
    show_dropped: Annotated[bool, typer.Option("--show-dropped/--hide-dropped", help="List candidates that screening dropped.")] = True,
) -> None:
    """List the auxiliary candidates the search would try (no training), with why any were dropped."""
    from taskscout.auxgen import candidate_records, generate_candidates, why_none
    from taskscout.data import build_dataset

    ds = build_dataset(spec)
    for note in ds.notes:
        typer.echo(f"note: {note}", err=True)
    records = candidate_records(ds, generate_candidates(ds, spec))
    shown = [r for r in records if show_dropped or r["dropped"] is None]
    if as_json:
        typer.echo(json.dumps(shown, indent=2))
        return
    header = ("name", "kind", "serves", "type", "labelled train/val/test", "score", "dropped")
    rows = [
        (r["name"], r["kind"] + (" (reversed)" if r["adversarial"] else ""), ",".join(r["serves"]), r["type"],
         "/".join(str(r["labelled"][s]) for s in ("train", "val", "test")),
         "-" if r["score"] is None else f"{r['score']:.3f}", r["dropped"] or "")
        for r in shown
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
    for row in [header, *rows]:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    kept = sum(r["dropped"] is None for r in records)
    typer.echo(f"{len(records)} candidates, {kept} kept, {len(records) - kept} dropped"
               + ("" if show_dropped else " (hidden: --show-dropped lists them)"))
    notes = why_none(ds, spec)
    if notes:
        typer.echo("no candidates of a kind:")
        for kind, main, reason in notes:
            typer.echo(f"  {kind} for {main}: {reason}")


# ---------------------------------------------------------------- search


def _search_bars() -> Any:
    """The progress bars on stderr of search and bench (taskscout.progress)."""
    from taskscout.progress import search_bars

    return search_bars()


@app.command()
@study_command
def search(
    spec: Any,
    fresh: Annotated[bool, typer.Option("--fresh/--resume", help="Start over (delete the study and its tables) or resume (default: completed models are reused).")] = False,
    plateau_epsilon: Annotated[float | None, typer.Option(help="Plateau: relative improvement below which the validation loss has plateaued (default 0.01).")] = None,
    plateau_window: Annotated[int | None, typer.Option(help="Plateau: epochs ahead over which the improvement is measured (default 3).")] = None,
    stack_size: Annotated[int | None, typer.Option(help="Models trained together in one stacked computation (default 64).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars (the summary is still printed).")] = False,
    join: Annotated[bool, typer.Option("--join", help="Work on a run that already exists in --storage; never create it (a worker).")] = False,
    create_only: Annotated[bool, typer.Option("--create-only", help="Create the run in --storage and exit without training (then start workers with --join).")] = False,
) -> None:
    """Train single-task, pairwise, auxiliary and branch-depth models; measure gains with intervals.

    Resumable: the same command again reuses every completed model. Writes the run directory
    (reports/NAME or --out): affinity.csv, group_scores.csv, depth.csv, trials.parquet, ...
    With --storage postgresql+psycopg2://... any number of processes, on any machines, run the
    same command and share the work.
    """
    import dataclasses

    from taskscout.api import search_spec
    from taskscout.search import run_search

    changes = {k: v for k, v in (("plateau_epsilon", plateau_epsilon), ("plateau_window", plateau_window),
                                 ("stack_size", stack_size)) if v is not None}
    rules = {f.name: f.metadata for f in dataclasses.fields(spec.search)}
    for key, value in changes.items():
        if not rules[key]["check"](value):
            raise SpecError(f"--{key.replace('_', '-')} must be {rules[key]['expect']}. Got {value!r} instead.")
    if changes:
        spec = dataclasses.replace(spec, search=dataclasses.replace(spec.search, **changes))
    if spec.device == "cuda":
        from taskscout.device import resolve_device

        resolve_device(spec.device)
    if join and create_only:
        raise SpecError("--join and --create-only exclude each other: create the run once, then start workers with --join")
    if create_only:
        from taskscout.search.storage import mask_url

        result = run_search(spec, fresh=fresh, create_only=True)
        typer.echo(f"created study '{result.study_name}' in {mask_url(result.storage)}; start workers with "
                   f"the same command and --join instead of --create-only")
        return
    try:
        run = search_spec(spec, fresh=fresh, quiet=quiet, join=join)
    except KeyboardInterrupt:
        from taskscout.search.runner import stored_models

        typer.echo(f"interrupted: {stored_models(spec)} models stored; run the same command again to resume", err=True)
        raise typer.Exit(130) from None
    typer.echo(run.summary())


@app.command()
@study_command
def estimators(
    spec: Any,
    methods: Annotated[str, typer.Option("--estimators", help="Estimators to score, comma-separated: tag, gradcos, rsa, surrogate.")] = "tag,gradcos,rsa,surrogate",
    pruning_test: Annotated[bool, typer.Option("--pruning-test/--no-pruning-test", help="Also measure pruning in test mode (subsets in shadow mode; gain predictor on the measured pairs).")] = True,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: torch's choice); 1 gives steadier timings on a busy machine.")] = None,
    selection: Annotated[str, typer.Option(help="Which epoch of a pair model gives a task's measured loss: own (the task's own best epoch, as the search) or joint (the model's best epoch).")] = "own",
) -> None:
    """Score the cheap affinity estimators against measured pairwise gains on this data.

    Trains every single task and pair (the measured phase), runs each estimator, and writes
    affinity.csv, agreement.csv, compute.csv, pruning.csv and the estimators' own tables to
    RUN_DIR/estimators (RUN_DIR: reports/NAME or --out).
    """

    from taskscout.affinity import AffinityProblem
    from taskscout.affinity.base import ESTIMATORS
    from taskscout.affinity.compare import agreement_lines, compare_estimators, write_comparison
    from taskscout.data import build_dataset
    from taskscout.errors import SpecError as _SpecError
    from taskscout.search import model_seeds

    names = _csv(methods) or []
    unknown = [n for n in names if n not in ESTIMATORS or n == "measured"]
    if unknown:
        raise _SpecError(f"--estimators takes names from {sorted(set(ESTIMATORS) - {'measured'})}; got {unknown[0]!r}")
    if selection not in ("joint", "own"):
        raise _SpecError(f"--selection must be joint or own. Got {selection!r} instead.")
    if len(spec.main_tasks) < 2:
        raise _SpecError(f"the estimators score how tasks help each other: give at least 2 main tasks "
                         f"(--tasks a,b,...). Got {list(spec.main_tasks)} instead.")
    if threads is not None:
        if threads < 1:
            raise _SpecError(f"--threads must be an int >= 1. Got {threads} instead.")
        import torch

        torch.set_num_threads(threads)
    ds = build_dataset(spec)
    problem = AffinityProblem.from_dataset(ds, main=spec.main_tasks, model=spec.model, training=spec.training,
                                           seeds=model_seeds(spec), device=spec.device)
    comparison = compare_estimators(problem, names=names, pruning_test=pruning_test, params={"measured": {"selection": selection}},
                                    plateau_epsilon=spec.search.plateau_epsilon, plateau_window=spec.search.plateau_window,
                                    report=lambda msg: typer.echo(msg, err=True))
    out = Path(spec.run_dir) / "estimators"
    write_comparison(out, comparison)
    for line in agreement_lines(comparison):
        typer.echo(line)
    for key, value in comparison.figures.items():
        typer.echo(f"{key}: {value:.3f}")
    for r in comparison.pruning.to_dict("records"):
        typer.echo(f"pruning {r['what']}: skipped {r['skipped']} of {r['candidates']}, saved {r['epochs_saved']} epochs "
                   f"({r['seconds_saved']:.1f} s); skipped ones that would have been chosen: {r['would_be_chosen']}")
    typer.echo(f"tables in {out}")


# ---------------------------------------------------------------- report


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A run directory written by `taskscout search`.")],
    png: Annotated[bool, typer.Option("--png", help="Also write every figure as RUN_DIR/figures/NAME.png (needs kaleido and Chromium).")] = False,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="First rebuild the measured tables and the recommendation from the search's storage (e.g. after distributed workers).")] = False,
    storage: Annotated[str | None, typer.Option(help="With --rebuild: the storage URL; default the one in RUN_DIR/spec.json, else RUN_DIR/study.db.")] = None,
) -> None:
    """(Re)build RUN_DIR/report.html from the saved results: no training, no torch."""
    from taskscout.api import open_run
    from taskscout.report import png_support

    if png and (why := png_support()):
        raise TaskscoutError(why)
    run = open_run(run_dir)
    if rebuild:
        typer.echo(f"rebuilt {len(run.rebuild(storage))} table(s) from the storage")
    typer.echo(f"wrote {run.report()}")
    if png:
        paths = run.write_pngs()
        typer.echo(f"wrote {len(paths)} PNG figure(s) to {Path(run_dir) / 'figures'}")


# ---------------------------------------------------------------- export and train


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A run directory written by `taskscout search`.")],
    out: Annotated[Path, typer.Option("--out", help="Config file to write (.yaml/.yml or .json; another suffix needs --format).")],
    fmt: Annotated[str | None, typer.Option("--format", help="yaml or json; default from the suffix of --out.")] = None,
) -> None:
    """Write the recommendation as a versioned training config for `taskscout train`."""
    from taskscout.api import open_run
    from taskscout.export import check_config_path

    check_config_path(out, fmt)
    run = open_run(run_dir)
    path = run.export(out, format=fmt)
    rec = run.recommendation
    typer.echo(f"wrote {path}: {len(rec.groups)} network(s) for {len(rec.tasks)} task(s); "
               f"train them with `taskscout train {path}`")


@app.command()
def train(
    config: Annotated[Path, typer.Argument(metavar="CONFIG", help="A training config written by `taskscout export`.")],
    out: Annotated[Path | None, typer.Option("--out", help="Directory for metrics.json and one checkpoint per group; default: CONFIG's name + '-models'.")] = None,
    device: Annotated[str | None, typer.Option(help="auto (CUDA when present), cpu or cuda; default from the config.")] = None,
) -> None:
    """Rebuild the data and auxiliaries of CONFIG, train one network per group, report test metrics."""
    from taskscout.export import check_models_dir, read_config, train_config
    from taskscout.spec import DEVICES

    if device is not None and device not in DEVICES:
        raise SpecError(f"--device must be one of {list(DEVICES)}. Got {device!r} instead.")
    cfg = read_config(config)
    out_dir = out if out is not None else config.with_name(config.stem + "-models")
    check_models_dir(out_dir, label=None if out is not None else f"the default output directory '{out_dir}' (no --out)")
    outcome = train_config(cfg, out_dir=out_dir, device=device)
    rows = [(t, g, m, f"{v:.4f}", f"{lo:.4f}") for t, g, m, v, lo in outcome.task_rows()]
    header = ("task", "network", "metric", "test metric", "test loss")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    for row in [header, *rows]:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    typer.echo(f"wrote {outcome.out_dir / 'metrics.json'} and {len(outcome.groups)} checkpoint(s) in {outcome.out_dir}")


# ---------------------------------------------------------------- verify


@app.command()
def verify(
    run_dir: Annotated[str, typer.Argument(metavar="RUN_DIR", help="A run directory written by `taskscout search`.")],
    seeds: Annotated[int | None, typer.Option(help="Fresh seeds per configuration; default: the study's seed count, at least 10 (3 seeds give very wide intervals).")] = None,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")] = "auto",
) -> None:
    """Recommended grouping vs all-separate vs all-together, retrained with fresh seeds, on the test split."""
    from taskscout.api import open_run
    from taskscout.device import resolve_device
    from taskscout.verify import CONFIGS, check_verify_inputs

    resolve_device(device)
    check_verify_inputs(run_dir, seeds=seeds)  # a bad run directory or seed count: an error before the banner
    run = open_run(run_dir)
    typer.echo(f"verifying {run_dir}: training the recommendation and both baselines ...")
    result = run.verify(seeds=seeds, device=device, report=False)
    out = result.to_dict()
    header = ("task", "metric", *(f"{c} loss/metric" for c in CONFIGS), "gain vs separate", "gain vs together")

    def num(v: Any) -> str:
        return "-" if v is None else f"{v:.4f}"

    def gain(v: list) -> str:
        if v[0] is None:
            return "-"
        if v[1] is None or v[2] is None:
            return f"{100 * v[0]:+.1f}% [no interval]"
        return f"{100 * v[0]:+.1f}% [{100 * v[1]:+.1f}, {100 * v[2]:+.1f}]"

    rows = [
        (t, out["tasks"][t]["separate"]["metric_name"],
         *(f"{num(out['tasks'][t][c]['loss'])} / {num(out['tasks'][t][c]['metric'])}" for c in CONFIGS),
         gain(out["gain_vs_separate"][t]), gain(out["gain_vs_together"][t]))
        for t in result.tasks
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    for row in [header, *rows]:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    typer.echo(f"overall gain vs separate {gain(out['overall_gain_vs_separate'])}, "
               f"vs together {gain(out['overall_gain_vs_together'])}; {result.models_trained} models trained")
    typer.echo(result.verdict)
    typer.echo(f"wrote {Path(run_dir) / 'verify.json'}")
    # report.html shows the verification: rebuild it, as the search does, when the report module
    # (and plotly) is installed
    try:
        path = run.report()
    except ModuleNotFoundError as e:
        if e.name not in ("taskscout.report", "plotly"):
            raise
        typer.echo(f"report.html not rebuilt ({e.name} is not installed); run `taskscout report {run_dir}` where it is")
    else:
        typer.echo(f"rebuilt {path} with the verification")


# ---------------------------------------------------------------- bench


@app.command()
def bench(
    models: Annotated[int, typer.Option(help="Models K trained stacked and one by one.")] = 64,
    seeds: Annotated[int, typer.Option(help="Distinct seeds among the K models (model k has seed k mod SEEDS). Models sharing a seed see the same batches and differ in their loss weights, as a search trains many task subsets per seed; --seeds equal to --models gives every model its own batches.")] = 8,
    inputs: Annotated[int, typer.Option(help="Input features.")] = 64,
    depth: Annotated[int, typer.Option(help="Trunk layers L.")] = 2,
    width: Annotated[int, typer.Option(help="Trunk width H.")] = 64,
    tasks: Annotated[int, typer.Option(help="Tasks per model (binary, multiclass, ordinal, regression, ...).")] = 4,
    batch: Annotated[int, typer.Option(help="Mini-batch size.")] = 256,
    steps: Annotated[int, typer.Option(help="Training steps per model, over all epochs (a multiple of --epochs).")] = 300,
    epochs: Annotated[int, typer.Option(help="Epochs the steps are spread over (a validation pass after each).")] = 3,
    branch_layer: Annotated[int | None, typer.Option(help="Shared trunk layers; default: the whole trunk.")] = None,
    sequential_models: Annotated[int | None, typer.Option(help="Time only this many models in the sequential loop (its models/s is compared); default: all.")] = None,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option(help="float32 or float64.")] = "float32",
    threads: Annotated[int | None, typer.Option(help="torch CPU threads; default: torch's choice.")] = None,
    parallel_stacks: Annotated[int | None, typer.Option(help="Stacks trained at once on CPU, one per thread, the K models split evenly; default: one per torch thread.")] = None,
    label_fraction: Annotated[float, typer.Option(help="Label each task on a random fraction F of the rows (drawn per task): the models train on the rows labelled for one of their targets only, in fewer steps.")] = 1.0,
    as_json: JsonFlag = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars on stderr.")] = False,
) -> None:
    """Batched vs sequential training speed on this machine: models/s, speed-up, GFLOP/s against
    the measured matmul peak, the ceiling (the same matrix products timed alone), memory."""
    if dtype not in ("float32", "float64"):
        raise SpecError(f"--dtype must be float32 or float64. Got {dtype!r} instead.")
    if threads is not None and threads < 1:
        raise SpecError(f"--threads must be an int >= 1. Got {threads} instead.")
    if parallel_stacks is not None and parallel_stacks < 1:
        raise SpecError(f"--parallel-stacks must be an int >= 1. Got {parallel_stacks} instead.")
    if not 0 < label_fraction <= 1:
        raise SpecError(f"--label-fraction must be a number in (0, 1]. Got {label_fraction} instead.")

    import torch

    from taskscout.bench import run_bench

    if threads is not None:
        torch.set_num_threads(threads)
    import contextlib

    bars = None if quiet else _search_bars()
    with bars if bars is not None else contextlib.nullcontext():
        result = run_bench(
            models=models, inputs=inputs, depth=depth, width=width, tasks=tasks, batch=batch, steps=steps,
            epochs=epochs, branch_layer=branch_layer, sequential_models=sequential_models, device=device,
            dtype=getattr(torch, dtype), parallel_stacks=parallel_stacks, seeds=seeds, progress=bars,
            label_fraction=label_fraction,
        )
    r = result.to_dict()
    if as_json:
        typer.echo(json.dumps(r, indent=2))
        return
    typer.echo(f"device      {r['device']} ({r['threads']} threads, {r['dtype']}, OMP_WAIT_POLICY={r['omp_wait_policy'] or 'default'})")
    typer.echo(f"models      {r['models']} ({r['seeds']} seeds) x trunk {r['depth']}x{r['width']}, {r['inputs']} inputs, "
               f"{r['tasks']} tasks, batch {r['batch']}, {r['steps_run']} steps over {r['epochs']} epochs"
               + (f" (labels on {r['label_fraction']:g} of the rows per task)" if r["label_fraction"] < 1 else ""))
    typer.echo(f"sequential  {r['sequential_models_per_s']:.2f} models/s ({r['sequential_models']} models in {r['sequential_seconds']:.1f} s)")
    typer.echo(f"stacked     {r['stacked_models_per_s']:.2f} models/s ({r['models']} models in {r['stacked_seconds']:.1f} s, "
               f"{r['parallel_stacks']} stack{'s' if r['parallel_stacks'] > 1 else ''} at once)")
    typer.echo(f"speed-up    {r['speedup']:.1f}x")
    typer.echo(f"GFLOP/s     {r['achieved_gflops']:.1f} achieved, {r['matmul_peak_gflops']:.1f} matmul peak ({r['fraction_of_peak']:.0%})")
    typer.echo(f"ceiling     {r['products_gflops']:.1f} GFLOP/s for the same products alone ({r['products_fraction_of_peak']:.0%} of peak; "
               f"the trainer reaches {r['achieved_gflops'] / r['products_gflops']:.0%} of it)")
    typer.echo(f"memory      {r['peak_memory_mib']:.0f} MiB peak resident, with the stacks' workers ({r['memory_over_baseline_mib']:.0f} MiB for the stacks)")
    typer.echo(f"agreement   max |val loss stacked - sequential| = {r['max_loss_difference']:.2g}")


# ---------------------------------------------------------------- status (distributed search)


@app.command()
@study_command
def status(
    spec: Any,
    as_json: JsonFlag = False,
) -> None:
    """Progress of a search, read from its storage: models per phase complete, training now (and
    by which workers), queued and failed. Works while workers run, from any machine."""
    from taskscout.search import PHASE_ORDER, storage_url
    from taskscout.search.plan import uses_sampled
    from taskscout.search.storage import mask_url, open_existing, phase_progress
    from taskscout.search.workers import live_workers

    url = storage_url(spec)
    store = open_existing(url, url, spec.name)
    phases = [p for p in PHASE_ORDER if p in spec.search.phases]
    if "pairs" in phases and uses_sampled(spec, store.study.user_attrs):  # many tasks: sampled subsets instead of pairs
        phases[phases.index("pairs")] = "sampled"
    rows = phase_progress(store, phases)
    alive = live_workers(store.storage, store.study_id, spec.search.grace_period)
    if as_json:
        phases = [vars(r) | {"workers": list(r.workers)} for r in rows]
        typer.echo(json.dumps({"study": spec.name, "workers": alive, "phases": phases}, indent=2))
        return
    typer.echo(f"study '{spec.name}' in {mask_url(url)}; {len(alive)} live worker(s): {', '.join(alive) or '-'}")
    typer.echo(f"{'phase':<8} {'complete':>8} {'running':>8} {'waiting':>8} {'failed':>7}  workers")
    for r in rows:
        typer.echo(f"{r.phase:<8} {r.complete:>8} {r.running:>8} {r.waiting:>8} {r.failed:>7}  {', '.join(r.workers)}".rstrip())
