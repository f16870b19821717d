"""ONNX Runtime settings for the encoder, timed against each other in one run (one frame per call).

What issue 16 asked to try on CPU: the graph optimisation level, the intra-op thread count and
dynamic INT8 quantization (only the MatMuls, as the ``onnx-int8`` backend does, and MatMuls plus
convolutions). Every variant runs the shipped checkpoint's exported encoder on the same real-face
crops, interleaved round-robin (fesnet.realtime.bench.timing), so they share the machine's load;
torch eager is timed beside them as the reference of the project's speed tables. Each variant's
largest deviation from the float graph's outputs is printed too.

    python -m fesnet.realtime.bench.ort_settings [--seconds 3] [--out ort_settings.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np


def session(path: Path, level: str = "all", threads: int = 1):
    import onnxruntime as ort

    levels = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = levels[level]
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0, help="per variant")
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from fesnet.model.backends import TorchBackend
    from fesnet.model.onnx_export import cached_onnx, int8_encoder
    from fesnet.model.runtime import load_checkpoint
    from fesnet.model.third_party_logs import quiet_quantize
    from fesnet.realtime.bench.timing import face_crops, load_avg, percentiles_ms, time_interleaved

    torch.set_num_threads(1)
    ck = load_checkpoint(None)
    files = cached_onnx(ck.net)
    tmp = Path(tempfile.mkdtemp(prefix="ort-settings-"))
    with quiet_quantize():
        quantize_dynamic(files.encoder, tmp / "conv_matmul.onnx", weight_type=QuantType.QUInt8,
                         op_types_to_quantize=["MatMul", "Conv"])
    sessions = {
        "fp32, level all, 1 thread (the onnx backend)": session(files.encoder),
        "fp32, level extended": session(files.encoder, "extended"),
        "fp32, level basic": session(files.encoder, "basic"),
        "fp32, level all, 2 threads": session(files.encoder, threads=2),
        "int8 MatMul (the onnx-int8 backend)": session(int8_encoder(files)),
        "int8 MatMul + Conv": session(tmp / "conv_matmul.onnx"),
    }
    crops = face_crops(8, ck.config.image_size)
    one = crops[:1]
    ref = next(iter(sessions.values())).run(None, {"frames_u8": crops})
    torch_backend = TorchBackend(ck.net, geometry=ck.geometry)
    calls = {k: (lambda s=s: s.run(None, {"frames_u8": one})) for k, s in sessions.items()}
    calls["torch eager, 1 thread"] = lambda: torch_backend.encode(one)
    load_start = load_avg()
    samples = time_interleaved(calls, a.seconds * len(calls))
    fp32 = np.median(samples[next(iter(sessions))])
    torch_s = np.median(samples["torch eager, 1 thread"])
    rows = []
    for name, v in samples.items():
        dev = None
        if name in sessions:
            got = sessions[name].run(None, {"frames_u8": crops})
            dev = float(max(np.abs(g - r).max() for g, r in zip(got, ref, strict=True)))
        rows.append({"variant": name, **percentiles_ms(v), "x_fp32": round(fp32 / np.median(v), 3),
                     "x_torch": round(torch_s / np.median(v), 3), "max_abs_dev": dev})
    print("| encoder, 1 frame | p50 ms | p99 ms | x ONNX fp32 | x torch | max abs dev |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        dev = "" if r["max_abs_dev"] is None else f"{r['max_abs_dev']:.3g}"
        print(f"| {r['variant']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['x_fp32']:.2f} | "
              f"{r['x_torch']:.2f} | {dev} |")
    if a.out:
        doc = {"load_avg_1m": [load_start, load_avg()], "rows": rows}
        a.out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
