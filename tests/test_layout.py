"""The shape of the code: no import cycle, a core that imports no face, short functions and modules.

The import graph is read from the source (every ``import`` statement, in functions too), so a cycle cannot
hide behind a lazy import; a fresh interpreter checks what importing the core really loads.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
# The core, which every face builds on and which knows nothing of options, files jobs, HTTP or plots.
CORE = (
    "rmkit.data",
    "rmkit.modeling",
    "rmkit.checkpoints",
    "rmkit.layouts",
    "rmkit.inference",
    "rmkit.losses",
    "rmkit.metrics",
    "rmkit.runtime",
)
FACES = (
    "rmkit.options",
    "rmkit.cli",
    "rmkit.serving",
    "rmkit.demo",
    "rmkit.jobs",
    "rmkit.training",
    "rmkit.evaluation",
)
FORBIDDEN = ("argparse", "yaml", "http", "urllib", "socket", "matplotlib", "fastapi", "starlette", "uvicorn")
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 450


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "rmkit").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(path: Path, known: dict[str, Path]) -> tuple[set[str], set[str]]:
    """``(rmkit modules, other top-level packages)`` that ``path`` imports anywhere in its code."""
    ours, others = set(), set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # ``from rmkit.evaluation import plots`` imports the module rmkit.evaluation.plots
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                for a in node.names
            ]
        else:
            continue
        for name in names:
            (ours if name.split(".")[0] == "rmkit" else others).add(
                name if name.startswith("rmkit") else name.split(".")[0]
            )
    return ours, others


def graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    known = modules()
    edges, external = {}, {}
    for name, path in known.items():
        ours, others = imports(path, known)
        edges[name] = {m for m in ours if m in known and m != name}
        external[name] = others
    return edges, external


def test_the_import_graph_has_no_cycle():
    edges, _ = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join([*path[path.index(nxt) :], nxt])
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])


def core_closure(edges: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), [m for m in edges if m.startswith(CORE)]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(edges[m] - {"rmkit"})  # the root package only re-exports the core
    return seen


@pytest.mark.slow
def test_the_core_imports_no_face_and_no_http_yaml_argparse_or_plotting():
    edges, external = graph()
    closure = core_closure(edges)
    assert not {m for m in closure if m.startswith(FACES)}, sorted(closure)
    for m in sorted(closure):
        assert not external[m] & set(FORBIDDEN), (m, sorted(external[m] & set(FORBIDDEN)))
    code = "import sys, rmkit.inference, rmkit.modeling, rmkit.metrics, rmkit.losses, rmkit.data, rmkit.runtime\n"
    code += f"print(sorted(m for m in sys.modules if m.startswith({FACES!r}) or m.split('.')[0] in ('matplotlib', 'fastapi')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]", loaded


def test_no_function_over_60_lines_and_no_module_over_450():
    long_functions, long_modules = [], []
    for name, path in modules().items():
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long_modules.append((name, len(text.splitlines())))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long_functions.append((name, node.name, lines))
    assert not long_modules, long_modules
    assert not long_functions, long_functions


# The model classes, and the modules allowed to ask which one a model is: the kinds and the classes' own.
MODEL_CLASSES = {"RewardModel", "ProcessRewardModel"}
KIND_MODULES = ("rmkit.kinds", "rmkit.modeling", "rmkit.process")


def test_no_face_branches_on_a_model_class():
    """Every command asks the model's kind (rmkit.kinds) what differs; none tests the model's class."""
    found = []
    for name, path in modules().items():
        if name.startswith(KIND_MODULES):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
                named = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                if named & MODEL_CLASSES:
                    found.append((name, node.lineno))
    assert not found, found


def test_the_kinds_import_no_face():
    """The kinds sit under the commands: they import no job, server, runner, option parser or CLI."""
    edges, _ = graph()
    kinds = {m for m in edges if m.startswith("rmkit.kinds")}
    assert kinds, "rmkit.kinds is missing"
    assert not {(k, m) for k in kinds for m in edges[k] if m.startswith(FACES)}
