"""The shape of the code that the brief asks for, checked: outside its own module no code compares a value with a
method, family or task name (it asks the strategy object instead), and no core function grows past a readable
length."""

from __future__ import annotations

import ast
from pathlib import Path

from jrft_desktop.core import methods, tasks
from jrft_desktop.core.families import FAMILIES

PACKAGE = Path(__file__).resolve().parents[1] / "jrft_desktop"
OWN_MODULES = ("core/methods/", "core/tasks/", "core/families.py")  # where the names belong
LONGEST_CORE_FUNCTION = 90  # lines, docstring included


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


def test_core_functions_stay_readable():
    lengths = [(node.end_lineno - node.lineno + 1, f"{path}:{node.lineno} {node.name}")
               for path, tree in _sources(PACKAGE / "core")
               for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    assert [entry for entry in lengths if entry[0] > LONGEST_CORE_FUNCTION] == []
