"""Sizes the house keeps: no source file over 500 lines, and no function over 80 lines in model/,
realtime/ and calibration/. A module that grows past it holds more than one idea and is split by
idea (pure moves), as realtime/push.py, realtime/run_control.py and realtime/viewers/display.py
were; a function that grows past it is split into named steps.

And no formatter pragmas: no formatter runs over the code (CI runs ``ruff check``, the linter;
the line length is its E501), so a formatter pragma (fmt skip) would guard nothing."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("model", "realtime", "calibration", "scripts", "tests", "fesnet")
PRODUCT = ("model", "realtime", "calibration")
MAX_LINES = 500
MAX_FUNCTION_LINES = 80


def function_lengths(source: str) -> dict[str, int]:
    """Lines of every function and method (decorators included; a nested function counts in
    its parent too), by qualified name with its first line."""
    out: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                    assert child.end_lineno is not None
                    out[f"{name}:{first}"] = child.end_lineno - first + 1
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return out


def test_no_python_file_is_over_500_lines() -> None:
    sizes = {
        str(path.relative_to(REPO)): len(path.read_text(encoding="utf-8").splitlines())
        for folder in FOLDERS
        for path in sorted((REPO / folder).rglob("*.py"))
    }
    assert len(sizes) > 50  # the tree was found
    assert {p: n for p, n in sizes.items() if n > MAX_LINES} == {}


def test_no_function_is_over_80_lines() -> None:
    long: dict[str, int] = {}
    seen = 0
    for folder in PRODUCT:
        for path in sorted((REPO / folder).rglob("*.py")):
            for name, n in function_lengths(path.read_text(encoding="utf-8")).items():
                seen += 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(REPO)}:{name}"] = n
    assert seen > 500  # the functions were found
    assert long == {}


def test_no_formatter_pragmas() -> None:
    pragma = "# fmt" + ":"  # spelled in two parts, so this file does not hold one itself
    found = [
        f"{path.relative_to(REPO)}:{i}"
        for folder in FOLDERS
        for path in sorted((REPO / folder).rglob("*.py"))
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pragma in line
    ]
    assert found == []


def test_the_function_measure_counts_decorators_nesting_and_methods() -> None:
    source = (
        "@decorator\n"
        "def outer():\n"
        "    def inner():\n"
        "        return 1\n"
        "    return inner\n"
        "class C:\n"
        "    async def method(self):\n"
        "        pass\n"
    )
    assert function_lengths(source) == {"outer:1": 5, "outer.inner:3": 2, "C.method:7": 2}
