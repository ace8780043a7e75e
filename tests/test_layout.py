"""The shape of the package: no module over ~400 lines, no import cycle and no import of a package above (imports
inside functions count: the packages are a stack, STACK below), and the CLI is the only place that prints or
imports click and rich."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lfgen"
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every lfgen module *name* imports, at the top or inside a function."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and "TYPE_CHECKING" in
                   ast.unparse(block.test) for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue  # `if TYPE_CHECKING:` imports are for annotations; they never run
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("lfgen"):
                out.add(target)
    return out


def _is_package_of(a: str, b: str) -> bool:
    return b.startswith(a + ".")


GRAPH = {name: {t for t in _imports(name, path) if not _is_package_of(t, name)} for name, path in MODULES.items()}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_size(name):
    lines = MODULES[name].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it by concern"


def test_no_import_cycle():
    """Lazy package exports (lfgen, lfgen.builder, ...) are not edges: a package's __init__ names its
    modules only as strings; nor are imports under ``if TYPE_CHECKING:``. A cycle here is two modules that
    each need the other, at import time or when a function runs."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name)


def test_only_the_cli_imports_click_and_rich_and_prints():
    offenders = []
    for name, path in MODULES.items():
        if name.startswith("lfgen.cli") or name.startswith("lfgen._lf"):
            continue  # the CLI prints; the _lf scripts talk to their parent on stdout
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(m.split(".")[0] == "click" for m in mods):
                    offenders.append(f"{name} imports click")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append(f"{name} calls print()")
    assert not offenders, offenders


# The packages as a stack, lowest first: a package imports from its own level or below, never above (imports inside
# functions count). The top-level modules below every package are the base: errors, layout, yamlio, numbers, paths,
# resources, launch (every process start), guard, tiny, tiny_vlm and the lazy exports; lfgen.demo (it lays an experiment out)
# sits with experiments; the package itself and __main__ on top.
STACK = ("runs", "catalogs", "models", "builder", "experiments", "training", "tuning", "results", "cli")
BASE = {"lfgen._lazy", "lfgen._lf", "lfgen.errors", "lfgen.layout", "lfgen.yamlio", "lfgen.numbers", "lfgen.paths",
        "lfgen.resources", "lfgen.launch", "lfgen.guard", "lfgen.tiny", "lfgen.tiny_vlm"}
PLACED = {"lfgen.demo": "experiments"}  # top-level modules that belong to a level of the stack
TOP = {"lfgen", "lfgen.__main__"}


def _level(module: str) -> int:
    """0 for the base, 1.. for the packages in STACK order, one above them for the top."""
    if module in TOP:
        return len(STACK) + 1
    if module in BASE or module.rpartition(".")[0] == "lfgen._lf":
        return 0
    package = PLACED.get(module) or module.split(".")[1]
    if package not in STACK:
        raise AssertionError(f"{module}: its package is not in tests/test_layout.py's STACK; place it there")
    return STACK.index(package) + 1


def test_every_module_has_a_place_in_the_stack():
    for name in MODULES:
        _level(name)


def test_no_package_imports_one_above_it():
    """results is compare and report: the top; the records every command reads (states, stores, run-dir readers,
    metrics) are lfgen.runs, below the builder. An upward import, even inside a function, is a cycle waiting."""
    upward = sorted(f"{name} -> {target}" for name, targets in GRAPH.items() for target in targets
                    if _level(target) > _level(name))
    assert not upward, "imports of a package above: " + "; ".join(upward)


def test_the_stack_test_sees_a_lazy_upward_import(tmp_path):
    """The check reads imports inside functions too (the cycles were hidden there): a planted one is found."""
    module = tmp_path / "planted.py"
    module.write_text("def f():\n    from lfgen.results.table import collect\n    return collect\n")
    assert "lfgen.results.table" in _imports("lfgen.runs.planted", module)


def test_no_test_module_imports_another_test_module():
    """Fixtures are in conftest.py and helpers in tests/helpers.py: a test module imported by another is collected
    twice and ties the two together (eight modules imported the project fixture from test_faults.py)."""
    tests = Path(__file__).resolve().parent
    offenders = []
    for path in sorted(tests.rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and \
                    node.module.rpartition(".")[2].startswith("test_"):
                offenders.append(f"{path.relative_to(tests)} imports {'.' * node.level}{node.module}")
    assert not offenders, offenders
