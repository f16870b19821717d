"""Export FESNet's two functions to ONNX (for ONNX Runtime), verified and cached.

Two graphs, mirroring the model's split (docs/ARCHITECTURE.md):

- ``encoder.onnx``: ``frames_u8 (N, 112, 112, 3) uint8 -> x_prime (N, ...), x_atten (N, ...)``
  with a dynamic N (one frame per call when streaming, a chunk when offline).
- ``window.onnx``: ``x_prime (B, T, ...), x_atten (B, T, ...) -> probs (B, T, 3)`` with the window
  length T fixed to ``cfg.window_frames`` and a dynamic batch B (windows of several streams in one
  call). The softmax is inside the graph: every backend returns probabilities.

Exported files are cached under ``cache_dir/<key>/`` where the key hashes the weights, the model
config, the opset, the torch version and ``EXPORT_VERSION``; a restart finds them and does not
export again.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .fesnet import FESNet
from .graphs import (
    DEFAULT_CACHE_DIR,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    EXPORT_VERSION,
    WINDOW_OUTPUTS,
    EncoderGraph,
    ExportError,
    WindowGraph,
    atomic_write,
    deployable,
    ensure_dir,
    example_inputs,
    weights_hash,
    window_inputs,
)
from .third_party_logs import quiet_onnx_export, quiet_quantize

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
MAX_ONNX_BATCH = 4096


def cache_key(net: FESNet, opset: int) -> str:
    """Directory name of a cached export: weights + config, opset, torch and export versions."""
    parts = f"{weights_hash(net)}|opset{opset}|torch{torch.__version__}|export{EXPORT_VERSION}"
    digest = hashlib.sha256(parts.encode()).hexdigest()[:16]
    return f"{net.cfg.window_frames}f-opset{opset}-{digest}"


@dataclass(frozen=True)
class OnnxFiles:
    encoder: Path
    window: Path


def _onnx_bytes(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    input_names: tuple[str, ...],
    output_names: tuple[str, ...],
    dynamic_shapes: dict,
    opset: int,
) -> bytes:
    """torch.onnx.export with the torch.export-based exporter (``dynamo=True``, torch >= 2.9's
    default), which lowers scaled_dot_product_attention to MatMul/Softmax at opset 18."""
    try:
        program = torch.onnx.export(
            module.eval(),
            args,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_shapes=dynamic_shapes,
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    except Exception as e:  # the exporter raises many types; name the graph that failed
        raise ExportError(f"ONNX export of {type(module).__name__} failed: {e}") from e
    buf = io.BytesIO()
    program.save(buf)
    return buf.getvalue()


def export_onnx(net: FESNet, out_dir: str | Path, opset: int = DEFAULT_OPSET) -> OnnxFiles:
    """Export both graphs into ``out_dir`` (overwriting), unchecked. See ``cached_onnx``."""
    out_dir = Path(out_dir)
    dep = deployable(net)
    frames, window = example_inputs(dep)
    names = window_inputs(dep)
    n = torch.export.Dim("n_frames", min=1, max=MAX_ONNX_BATCH)
    b = torch.export.Dim("batch", min=1, max=MAX_ONNX_BATCH)
    files = OnnxFiles(out_dir / "encoder.onnx", out_dir / "window.onnx")
    with torch.no_grad():
        enc = _onnx_bytes(
            EncoderGraph(dep),
            (frames,),
            ENCODER_INPUTS,
            ENCODER_OUTPUTS,
            {"frames_u8": {0: n}},
            opset,
        )
        win = _onnx_bytes(
            WindowGraph(dep),
            window,
            names,
            WINDOW_OUTPUTS,
            {name: {0: b} for name in names},
            opset,
        )
    atomic_write(files.encoder, enc)
    atomic_write(files.window, win)
    return files


def verify_onnx(
    net: FESNet, files: OnnxFiles, frames_u8: np.ndarray | None = None, atol: float = 1e-4
) -> float:
    """Run both graphs in ONNX Runtime next to torch; raise ExportError past ``atol``.

    Returns the largest absolute difference seen over x_prime, x_atten and probs. The window is
    checked on features of ``frames_u8`` (real faces, if given) tiled to a window, plus noise.
    """
    import onnxruntime as ort

    net = deployable(net)
    frames, window = example_inputs(net, n_frames=3, batch=2, seed=1)
    x_prime, x_atten, *geom = window
    if frames_u8 is not None:
        frames = torch.from_numpy(np.ascontiguousarray(frames_u8))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    enc = ort.InferenceSession(str(files.encoder), opts, providers=["CPUExecutionProvider"])
    win = ort.InferenceSession(str(files.window), opts, providers=["CPUExecutionProvider"])
    t = net.cfg.window_frames
    with torch.no_grad():
        ref = net.encode_frames(frames)
        idx = torch.arange(t) % len(frames)
        real_p, real_a = ref.x_prime[idx][None], ref.x_atten[idx][None]  # (1, T, ...)
        x_prime = torch.cat([real_p, x_prime])
        x_atten = torch.cat([real_a, x_atten])
        geom = [torch.cat([torch.zeros_like(g[:1]), g]) for g in geom]
        inputs = (x_prime, x_atten, *geom)
        probs = torch.softmax(net.forward_window(*inputs), dim=-1)
    got_p, got_a = enc.run(None, {"frames_u8": frames.numpy()})
    feed = {name: x.numpy() for name, x in zip(window_inputs(net), inputs, strict=True)}
    (got_probs,) = win.run(None, feed)
    diffs = {
        "x_prime": float(np.abs(got_p - ref.x_prime.numpy()).max()),
        "x_atten": float(np.abs(got_a - ref.x_atten.numpy()).max()),
        "probs": float(np.abs(got_probs - probs.numpy()).max()),
    }
    worst = max(diffs.values())
    if not worst <= atol:
        raise ExportError(f"ONNX graphs disagree with torch beyond {atol}: {diffs}")
    return worst


def cached_onnx(
    net: FESNet,
    cache_dir: str | Path | None = None,
    opset: int = DEFAULT_OPSET,
    verify: bool = True,
) -> OnnxFiles:
    """The exported graphs of ``net``: from the cache if present, else exported, verified
    against torch (max abs diff <= 1e-4) and stored."""
    root = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR / "onnx"
    out = root / cache_key(net, opset)
    files = OnnxFiles(out / "encoder.onnx", out / "window.onnx")
    if files.encoder.is_file() and files.window.is_file():
        log.debug("ONNX graphs from cache %s", out)
        return files
    log.info("exporting FESNet to ONNX (opset %d) into %s", opset, out)
    with tempfile.TemporaryDirectory(dir=ensure_dir(root)) as tmp, quiet_onnx_export():
        fresh = export_onnx(net, tmp, opset)
        if verify:
            verify_onnx(net, fresh)
        atomic_write(files.encoder, fresh.encoder.read_bytes())
        atomic_write(files.window, fresh.window.read_bytes())
    return files


INT8_OPS = ("MatMul",)
"""What the INT8 encoder quantizes: the attention and MLP matrix products. Convolutions stay
float: dynamically quantized (ConvInteger) they ran at 0.8x the float graph on the project's
AVX2 machines (docs/BENCHMARKS.md), and the window graph has no MatMul at all."""


def int8_encoder(files: OnnxFiles) -> Path:
    """The encoder with its MatMul weights quantized to uint8 and its activations quantized on
    the fly (``onnxruntime.quantization.quantize_dynamic``), cached beside the float graph."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = files.encoder.with_name("encoder.int8.onnx")
    if out.is_file():
        return out
    log.info("quantizing %s to INT8 (dynamic, %s)", files.encoder, ", ".join(INT8_OPS))
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp, quiet_quantize():
        staged = Path(tmp) / out.name
        quantize_dynamic(files.encoder, staged, op_types_to_quantize=list(INT8_OPS),
                         weight_type=QuantType.QUInt8)
        atomic_write(out, staged.read_bytes())
    return out
