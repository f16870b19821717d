"""scripts/gpu_check.py cannot rot: its import closure holds without the packages a bare GPU
machine lacks, and its CPU dry run (the same stages and child processes as on the GPU) writes a
JSON whose parity, latency and capacity are all there."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.py"
ABSENT = "mediapipe,aiortc,aiohttp,gradio,ray,tqdm,onnx,onnxscript,openpyxl,playwright," \
         "torch_tensorrt,modelopt"


def test_closure_imports_without_the_absent_packages() -> None:
    code = (
        "import runpy, sys\n"
        f"g = runpy.run_path({str(SCRIPT)!r}, run_name='gpu_check')\n"
        f"forbid = g['Forbid']({ABSENT!r}.split(','))\n"
        "sys.meta_path.insert(0, forbid)\n"
        "g['project_on_path']()\n"
        "import fesnet.realtime.bench.tier_check, fesnet.model.tier_run, fesnet.model.runtime\n"
        "import fesnet.model.inference, fesnet.model.checkpoint\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in forbid.names))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd="/")
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


@pytest.mark.slow
def test_cpu_dry_run_writes_the_whole_report(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick",
                          "--threads", "1", "--forbid-imports", ABSENT, "--out", str(out)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["schema"] == "fesnet-gpu-check/1" and "errors" not in report
    assert report["reference"]["geometry"] and report["reference"]["stride_frames"] >= 1
    cpu = report["configs"]["cpu-fp32"]
    assert "errors" not in cpu and cpu["returncode"] == 0
    assert cpu["build"]["buckets"] == [1, 2, 4, 8]  # the padded path CUDA graphs take
    assert cpu["parity"]["probs_within_tolerance"] and cpu["parity"]["tolerance"] == 2e-5
    assert cpu["parity"]["events_identical"]
    assert cpu["parity"]["windows"] == sum(report["reference"]["windows"])
    assert cpu["parity"]["windows_over_1e-3"] == 0.0
    assert cpu["latency"]["window_step_ms"]["n"] > 0
    assert cpu["latency"]["device_ms"]["window_step"]["device"]["n"] > 0
    level = cpu["capacity"]["levels"][0]
    assert level["streams"] == 1 and level["mode"] == "pipelined"
    assert {"encode", "window", "device"} <= set(level["device_ms"])
    assert cpu["capacity_serial"]["mode"] == "serial"
    assert isinstance(report["summary"]["configs"]["cpu-fp32"]["cameras_at_60fps"], int)
    assert "parity cpu-fp32: max abs diff" in run.stdout


@pytest.mark.slow
def test_cuda_configs_are_skipped_with_a_reason_without_a_gpu(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the configurations run instead")
    out = tmp_path / "check.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--threads", "1",
                          "--configs", "fp16-graphs", "--out", str(out)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 1
    report = json.loads(out.read_text())
    assert report["configs"]["fp16-graphs"]["errors"] == {"skipped": "CUDA is not available"}
    assert "reference" in report and list(report["configs"]) == ["fp16-graphs"]


def test_done_when_lines_say_met_or_not() -> None:
    g = runpy.run_path(str(SCRIPT), run_name="gpu_check")
    row = {"max_abs_diff": 0.0123, "tolerance": 0.05, "windows_over_1e-3": 0.5,
           "probs_within_tolerance": True, "events_identical": False,
           "events_within_tolerance": True, "errors": []}
    summary = {"configs": {"a": row, "b": {**row, "max_abs_diff": None, "errors": ["build"]}},
               "best_cameras_at_60fps": ["a", 2480], "best_latency_p50_ms": ["a", 1.2]}
    lines = g["done_when_lines"](summary)
    assert "2,480 (a; pipelined, staging included) -> met" in lines[1]
    assert lines[2].endswith("1.200 ms (a) -> NOT met")
    assert "1.23e-02 vs tolerance 5e-02 -> ok; windows > 1e-3: 50.0%; events within 2 slots" \
        in lines[3]
    assert lines[4] == "parity b: not measured ['build']"


def test_default_configs_run_the_candidates_first() -> None:
    from fesnet.realtime.bench.tier_check import CUDA_CONFIGS, TOLERANCE

    default = [c for c in CUDA_CONFIGS if c.default]
    assert default[0].name == "fp16-compiled-graphs" and default[0].compile
    assert all(c.graphs for c in default) and sum(c.share_s for c in default) <= 240
    assert TOLERANCE["fp32"] < TOLERANCE["fp16"]
