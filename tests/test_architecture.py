"""The shape of the code that the brief asks for, checked: outside its own module no code compares a value with a
method, family or task name (it asks the strategy object instead), no function grows past a readable length, no
module imports itself back through others, and the typed settings pass mypy."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp

from jrft_desktop.core import methods, tasks
from jrft_desktop.core.families import FAMILIES

PACKAGE = Path(__file__).resolve().parents[1] / "jrft_desktop"
OWN_MODULES = ("core/methods/", "core/tasks/", "core/families.py")  # where the names belong
LONGEST_FUNCTION = 60  # lines, docstring included


def _sources(under: Path):
    for path in sorted(under.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        yield relative, ast.parse(path.read_text(encoding="utf-8"))


def _strategy_names() -> set[str]:
    names = {method.name for method in methods.all_methods()} | {task.name for task in tasks.all_tasks()}
    return names | set(FAMILIES)


def _compared_strings(tree: ast.AST):
    """(line, text) of every string constant that is an operand of ==, !=, in or not in."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn))
                                                 for op in node.ops):
            for operand in (node.left, *node.comparators):
                candidates = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
                for candidate in candidates:
                    if isinstance(candidate, ast.Constant) and isinstance(candidate.value, str):
                        yield node.lineno, candidate.value


def test_no_branch_on_a_strategy_name_outside_its_module():
    names = _strategy_names()
    assert {"slash", "lora", "classify", "bert", "distilbert"} <= names  # the check knows what it looks for
    found = [f"{path}:{line} compares with {text!r}"
             for path, tree in _sources(PACKAGE) if not path.startswith(OWN_MODULES)
             for line, text in _compared_strings(tree) if text in names]
    assert found == []


def test_the_check_sees_a_branch_on_a_name():
    tree = ast.parse("if spec.name == 'slash' or family in ('bert', 'gpt2'):\n    pass\n")
    assert [text for _, text in _compared_strings(tree)] == ["slash", "bert", "gpt2"]


def test_functions_stay_readable():
    lengths = [(node.end_lineno - node.lineno + 1, f"{path}:{node.lineno} {node.name}")
               for path, tree in _sources(PACKAGE)
               for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    assert len(lengths) > 500  # the whole package, the GUI included
    assert [entry for entry in lengths if entry[0] > LONGEST_FUNCTION] == []


def import_cycles(graph) -> list[list[str]]:
    """The strongly connected groups of more than one module in an import graph (Tarjan): each is a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = stack[stack.index(module):]
            del stack[stack.index(module):]
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


def test_no_import_circle_lazy_imports_included():
    graph = grimp.build_graph("jrft_desktop", exclude_type_checking_imports=True)  # every import statement
    assert "jrft_desktop.core.train.loop" in graph.find_modules_directly_imported_by("jrft_desktop.gui.worker")
    assert import_cycles(graph) == []


def test_the_cycle_check_sees_a_circle():
    class Graph:
        modules = {"a", "b", "c", "d"}
        imports = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}

        def find_modules_directly_imported_by(self, module):
            return self.imports[module]

    assert import_cycles(Graph()) == [["a", "b", "c"]]


def test_the_settings_type_check():
    """MethodSpec's options (spec.d, spec.rank ...) are real, typed fields: mypy checks the methods and the config."""
    done = subprocess.run([sys.executable, "-m", "mypy", "--follow-imports=silent", "--ignore-missing-imports",
                           "--cache-dir", "/dev/null", str(PACKAGE / "core" / "methods"),
                           str(PACKAGE / "core" / "config.py")], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
