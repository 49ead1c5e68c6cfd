"""The shape of the code: stage order of imports, no import cycles, short functions, torch-free stages.

Every import in taskscout/ is read with `ast`, wherever it is written: at the top of a module,
inside a function, under `if TYPE_CHECKING:`, or as `importlib.import_module("taskscout...")`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "taskscout"

# The stages of ../shared/docs/DESIGN.md, first to last: a module may import its own stage and the
# stages above it, never one below. Each entry names modules or packages (with everything in them).
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("spec", ("taskscout.errors", "taskscout.spec", "taskscout.rundir", "taskscout.device", "taskscout.curves",
                 "taskscout.paths")),
    ("data", ("taskscout.data",)),
    ("auxgen", ("taskscout.auxgen",)),
    ("training", ("taskscout.weighting", "taskscout.models", "taskscout.parallel", "taskscout.training")),
    ("affinity", ("taskscout.affinity",)),
    ("grouping", ("taskscout.grouping", "taskscout.recommendation")),
    ("search", ("taskscout.search",)),
    ("report/export/verify/api", ("taskscout.report", "taskscout.export", "taskscout.verify", "taskscout.bench",
                                  "taskscout.api", "taskscout.progress")),
    ("cli", ("taskscout.cli", "taskscout.__main__")),
)
# The package root is the front door: it loads the API lazily, and any module may read its
# __version__. It is therefore not a stage of its own, and imports of it are not checked.
FRONT_DOOR = "taskscout"

MAX_LINES = 80


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _stage(module: str) -> int:
    for i, (_, prefixes) in enumerate(STAGES):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"{module} has no stage: add it to STAGES in tests/test_architecture.py")


def _resolve(name: str) -> str:
    """The taskscout module an imported name lives in (`taskscout.data.Head` -> `taskscout.data`)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _imports(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported taskscout module) for every import in the file, at any depth."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from taskscout import rundir` imports a module; `from taskscout.data import Head` a name
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names = [node.args[0].value]
        found += [(node.lineno, _resolve(n)) for n in names if n == "taskscout" or n.startswith("taskscout.")]
    return found


def test_every_module_has_a_stage():
    for module in MODULES:
        if module != FRONT_DOOR:
            _stage(module)


def test_no_module_imports_a_later_stage():
    wrong = []
    for module, path in MODULES.items():
        if module == FRONT_DOOR:
            continue
        for line, target in _imports(module, path):
            if target != FRONT_DOOR and _stage(target) > _stage(module):
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {module} ({STAGES[_stage(module)][0]}) imports "
                             f"{target} ({STAGES[_stage(target)][0]})")
    assert not wrong, "imports against the stage order:\n" + "\n".join(wrong)


# A function-level import of a taskscout module is there to keep a heavy library out of the
# importing module: torch (training, models, parallel), optuna (search, affinity.subsets),
# scikit-learn (auxgen). The CLI defers every import so that `taskscout --help` stays fast.
DEFERRED_FOR = ("taskscout.training", "taskscout.models", "taskscout.parallel", "taskscout.search",
                "taskscout.affinity.subsets", "taskscout.auxgen", "taskscout.report")  # report: plotly
DEFERS_ALL = ("taskscout.cli",)


def _deferred(path: Path) -> list[tuple[int, str]]:
    """(line, module) of the imports of taskscout modules inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("taskscout"):
                    out.append((node.lineno, node.module))
                elif isinstance(node, ast.Import):
                    out += [(node.lineno, a.name) for a in node.names if a.name.startswith("taskscout")]
    return out


def test_function_level_imports_only_keep_heavy_libraries_out():
    wrong = [f"{path.relative_to(ROOT)}:{line}: {target}" for module, path in MODULES.items()
             if module not in DEFERS_ALL
             for line, target in _deferred(path)
             if not any(target == p or target.startswith(p + ".") for p in DEFERRED_FOR)]
    assert not wrong, "import these at the top of the module:\n" + "\n".join(wrong)


def test_import_taskscout_and_the_cli_load_no_heavy_library():
    # what `taskscout --help` loads: typer and the CLI module, none of the libraries of the stages
    code = ("import sys, taskscout, taskscout.cli; "
            "print(sorted(m for m in ('torch', 'optuna', 'plotly', 'sklearn', 'scipy', 'pandas', 'networkx') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of `graph` (a list of nodes, first = last), or []."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_no_import_cycle_between_the_parts_of_a_stage():
    # the stage order forbids cycles across stages; within one, e.g. report <-> export is a cycle too
    def unit(module: str) -> str:
        prefixes = STAGES[_stage(module)][1]
        return next(p for p in prefixes if module == p or module.startswith(p + "."))

    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        if module == FRONT_DOOR:
            continue
        for _, target in _imports(module, path):
            if target != FRONT_DOOR and unit(target) != unit(module):
                graph.setdefault(unit(module), set()).add(unit(target))
    assert _cycle(graph) == []


def test_the_cycle_finder_finds_a_known_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "d": {"a", "c"}}) == []


def _functions() -> list[tuple[str, int, str]]:
    """(qualified name, lines, place) of every function and method in taskscout/."""
    out = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        place = str(path.relative_to(ROOT))

        def walk(node: ast.AST, prefix: str, place: str = place) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    name = f"{prefix}.{child.name}"
                    if not isinstance(child, ast.ClassDef):
                        first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                        out.append((name, child.end_lineno - first + 1, f"{place}:{child.lineno}"))
                    walk(child, name, place)

        walk(tree, module)
    return out


def test_no_function_is_longer_than_80_lines():
    functions = _functions()
    assert len(functions) > 500  # the walk sees the code base
    long = [f"{where}: {name} has {n} lines" for name, n, where in functions if n > MAX_LINES]
    assert not long, f"functions over {MAX_LINES} lines (split them):\n" + "\n".join(long)


@pytest.mark.parametrize("module", ["taskscout.report", "taskscout.export"])
def test_report_and_export_import_with_torch_blocked(module):
    code = f"import sys; sys.modules['torch'] = None; import {module}; print('imported')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "imported"


# A machine without torch: importing it fails as for a package that is not installed. (Setting
# sys.modules["torch"] = None is not that: scipy.stats then takes torch for present and fails.)
NO_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoTorch())
"""


def test_the_stages_after_the_search_work_without_torch(tmp_path):
    # a run directory from synthetic tables (tests/report/conftest.py), then what a user does with
    # it on a laptop without torch: rebuild the recommendation, build the report, export a config
    code = NO_TORCH + f"""
from pathlib import Path
from tests.report.conftest import write_run_dir
from taskscout.export import export_config, write_config
from taskscout.grouping import recommend_run
from taskscout.report import build_report
run = write_run_dir(Path({str(tmp_path)!r}) / "run")
recommend_run(run)
build_report(run)
write_config(export_config(run), run.parent / "train.yaml")
print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert (tmp_path / "run" / "report.html").stat().st_size > 0
    assert "groups:" in (tmp_path / "train.yaml").read_text()
