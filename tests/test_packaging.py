"""The wheel: built from this checkout, installed into a fresh venv beside an already-installed
CPU torch (this test environment's), it must not want another torch (pyproject declares the
tested range; ./dev pins the exact CPU wheel), and the installed ``fesnet-spot`` must run: its
help, and a spot of the bundled sample clip with the checkpoint shipped inside the wheel.

The fresh venv sees the packages of the running environment (torch, mediapipe, ...) through a
site directory of links to them, without this project; pip runs with no index and no config, so
anything it would have to download fails the test instead of pulling a multi-GB CUDA torch.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def run(cmd: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, **env}
    full_env.pop("PYTHONPATH", None)
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=900)


def others_without_this_project(site_packages: Path, into: Path) -> Path:
    """A site directory of links to everything installed here except this project."""
    into.mkdir()
    for entry in site_packages.iterdir():
        name = entry.name.lower()
        if "fesnet" in name or name.startswith("__editable__") or name == "__pycache__":
            continue
        (into / entry.name).symlink_to(entry)
    return into


def test_the_wheel_installs_beside_cpu_torch_and_spots(tmp_path: Path) -> None:
    # Built from a copy: a build writes build/ and *.egg-info/ into the tree it builds.
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "*.egg-info", "__pycache__", ".*_cache", ".cache", "runs",
        "out"))
    build = run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps",
                 "--no-build-isolation", "--no-index", "-w", str(tmp_path / "dist")],
                cwd=tmp_path)
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("fesnet_spotter-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ("fesnet/model/checkpoints/fesnet_small_synthetic.pt",
                    "fesnet/realtime/assets/sample.mp4", "fesnet/realtime/bench/cli.py",
                    "fesnet/realtime/viewers/static/client.html"):
        assert shipped in names, shipped
    requires = [line for line in zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("METADATA"))).decode().splitlines()
        if line.startswith("Requires-Dist: torch") and "extra ==" not in line]
    assert requires == ["Requires-Dist: torch<2.14,>=2.13"], requires

    venv = tmp_path / "venv"
    # No pip of its own (it would bring an old setuptools that shadows the installed one): this
    # environment's pip installs into it (pip --python).
    made = run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    fresh_site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], cwd=tmp_path).stdout.strip())
    ours = Path(sysconfig.get_paths()["purelib"])
    assert ours in map(Path, site.getsitepackages())
    others = others_without_this_project(ours, tmp_path / "others")
    (fresh_site / "others.pth").write_text(f"import site; site.addsitedir({str(others)!r})\n")

    install = run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index",
                   str(wheel)], cwd=tmp_path)
    assert install.returncode == 0, install.stdout + install.stderr
    assert "torch" not in install.stdout.split("Successfully installed", 1)[-1]
    where = run([str(python), "-c", "import fesnet.realtime.cli as c, torch; "
                 "print(c.__file__); print(torch.__version__)"], cwd=tmp_path)
    module, torch_version = where.stdout.split()
    assert Path(module).is_relative_to(fresh_site) and torch_version.endswith("+cpu"), where

    spot = str(venv / "bin" / "fesnet-spot")
    help_ = run([spot, "--help"], cwd=tmp_path)
    assert help_.returncode == 0 and "serve" in help_.stdout and "webrtc-server" in help_.stdout
    sample = run([spot, "run", "--backend", "torch", "--quiet"], cwd=tmp_path,
                 HOME=str(tmp_path))
    assert sample.returncode == 0, sample.stdout + sample.stderr
    assert "bundled sample clip" in sample.stdout and "600 processed, 0 dropped" in sample.stdout
    assert "compared with the ground truth" in sample.stdout
    assert sample.stderr == "", sample.stderr  # no start-up noise either
