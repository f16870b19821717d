"""Imports run one way (docs/ARCHITECTURE.md, "Packages and import direction"):

    fesnet.<root modules>  <-  fesnet.model  <-  fesnet.realtime  <-  fesnet.calibration
                                                                  <-  fesnet.realtime.viewers
                                                                         <-  fesnet.realtime.bench
                                                 (all of them)    <-  entry points

The root modules (``fesnet/*.py``: the argparse types every command line uses) import nothing of
the project; model imports nothing of the others; realtime imports model; calibration and the
viewers import realtime and model but not each other; the benchmarks (realtime/bench/) measure
the viewers and the cluster too, and nothing of the product imports them; only the entry points
(command lines) compose everything.
Every import counts, also one inside a function; one under ``if TYPE_CHECKING:`` does not (it
never runs). And no module imports itself back through others: no circle anywhere.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {folder: f"fesnet.{folder}" for folder in ("model", "realtime", "calibration")}

ENTRY_POINTS = {
    "fesnet.realtime.cli",  # fesnet-spot
    "fesnet.realtime.__main__",
    "fesnet.realtime.viewers.commands",  # fesnet-spot serve / webrtc-server / remote-camera
    "fesnet.realtime.bench.viewer_paths",  # python -m fesnet.realtime.bench.viewer_paths
    "fesnet.realtime.bench.cli",  # fesnet-bench
    "fesnet.calibration.cli",  # fesnet-calibrate
}
MAY_IMPORT = {
    "root": {"root"},
    "model": {"root", "model"},
    "realtime": {"root", "model", "realtime"},
    "calibration": {"root", "model", "realtime", "calibration"},
    "viewers": {"root", "model", "realtime", "viewers"},
    "bench": {"root", "model", "realtime", "viewers", "bench"},
}


def layer(module: str) -> str:
    if module in ENTRY_POINTS:
        return "entry"
    if module.startswith("fesnet.realtime.viewers"):
        return "viewers"
    if module.startswith("fesnet.realtime.bench"):
        return "bench"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in FOLDERS else "root"


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted((REPO / "fesnet").glob("*.py")):
        out["fesnet" if path.stem == "__init__" else f"fesnet.{path.stem}"] = path
    for folder, package in FOLDERS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """Project modules ``module`` imports (resolved to the deepest known module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module and name.startswith("fesnet."):
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: imports_of(m, p, known) for m, p in mods.items()}


def violations(g: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, targets in g.items():
        allowed = MAY_IMPORT.get(layer(module))
        if allowed is None:  # an entry point composes everything
            continue
        for target in targets:
            if target in ENTRY_POINTS or layer(target) not in allowed:
                wrong.append(f"{module} ({layer(module)}) imports {target} ({layer(target)})")
    return sorted(wrong)


def circles(g: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}
    found: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(g.get(m, ())):
            if state.get(t) == 1:
                found.append([*stack[stack.index(t) :], t])
            elif t not in state:
                visit(t, stack)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [])
    return found


def test_every_import_runs_the_allowed_way() -> None:
    g = graph()
    assert "fesnet.model.merger" in g["fesnet.realtime.spotter"]  # the graph is really read
    assert "fesnet.calibration.baseline" in g["fesnet.realtime.viewers.commands"]
    assert "fesnet.argtypes" in g["fesnet.model.runtime"]
    assert violations(g) == []


def test_no_module_imports_itself_back() -> None:
    assert circles(graph()) == []


def test_the_checker_sees_a_wrong_import_and_a_circle(tmp_path: Path) -> None:
    """The rules above, on made-up modules that break them."""
    known = {"fesnet.model.a", "fesnet.realtime.b", "fesnet.calibration.c"}
    src = tmp_path / "a.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from fesnet.calibration import c\n"
        "def f():\n    from ..realtime.b import x\n"
    )
    assert imports_of("fesnet.model.a", src, known) == {"fesnet.realtime.b"}  # lazy, relative
    g = {
        "fesnet.model.a": {"fesnet.realtime.b"},
        "fesnet.realtime.b": {"fesnet.model.a"},
        "fesnet.realtime.viewers.hub": {"fesnet.calibration.c", "fesnet.realtime.cli"},
        "fesnet.realtime.cli": {"fesnet.calibration.c", "fesnet.realtime.viewers.hub"},
    }
    assert violations(g) == [
        "fesnet.model.a (model) imports fesnet.realtime.b (realtime)",
        "fesnet.realtime.viewers.hub (viewers) imports fesnet.calibration.c (calibration)",
        "fesnet.realtime.viewers.hub (viewers) imports fesnet.realtime.cli (entry)",
    ]
    assert circles(g) == [
        ["fesnet.model.a", "fesnet.realtime.b", "fesnet.model.a"],
        ["fesnet.realtime.cli", "fesnet.realtime.viewers.hub", "fesnet.realtime.cli"],
    ]


def test_defining_the_command_lines_imports_no_heavy_library() -> None:
    """``fesnet-spot --help`` (and defining every subcommand) must start fast: no torch, cv2,
    mediapipe, gradio or aiortc until a command runs."""
    code = (
        "import sys\n"
        "from fesnet.realtime.cli import build_parser\n"
        "from fesnet.calibration.cli import build_parser as calibrate\n"
        "build_parser(); calibrate()\n"
        "heavy = {'torch', 'cv2', 'mediapipe', 'gradio', 'aiortc'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def room(module: str) -> str:
    """What a plan of the house draws as one room: a subpackage below a top package (all of
    ``fesnet.realtime.viewers``, ``fesnet.model.data``, ...) or one module at a package's top."""
    parts = module.split(".")
    return ".".join(parts[:3])


def rooms(g: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for module, targets in g.items():
        own = room(module)
        out.setdefault(own, set()).update(room(t) for t in targets if room(t) != own)
    return out


def test_no_two_rooms_import_each_other() -> None:
    """Modules of one subpackage may import each other; two subpackages (or a subpackage and a
    module beside it) may not, entry points included: ``fesnet-bench`` living in bench/ does not
    make a bench <-> viewers pair acceptable."""
    assert circles(rooms(graph())) == []
