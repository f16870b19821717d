"""Export FESNet's two functions to ONNX (for ONNX Runtime) and compile them with TensorRT.

Two graphs, mirroring the model's split (docs/ARCHITECTURE.md):

- ``encoder.onnx``: ``frames_u8 (N, 112, 112, 3) uint8 -> x_prime (N, ...), x_atten (N, ...)``
  with a dynamic N (one frame per call when streaming, a chunk when offline).
- ``window.onnx``: ``x_prime (B, T, ...), x_atten (B, T, ...) -> probs (B, T, 3)`` with the window
  length T fixed to ``cfg.window_frames`` and a dynamic batch B (windows of several streams in one
  call). The softmax is inside the graph: every backend returns probabilities.

Exported files are cached under ``cache_dir/<key>/`` where the key hashes the weights, the model
config, the opset, the torch version and ``EXPORT_VERSION``; a restart finds them and does not
export again. Files are written to a temporary name and renamed, so a second process never reads
a half-written graph.

TensorRT (optional extra ``[tensorrt]``, needs CUDA): ``compile_tensorrt`` runs torch.export +
``torch_tensorrt.dynamo.compile`` on the same two graph modules and saves each with
``torch_tensorrt.save``; ``load_tensorrt`` reloads them. Precision: fp32, fp16 (``model.half()``:
torch-tensorrt 2.14 compiles strongly typed, where ``enabled_precisions`` is ignored), int8/fp8
(nvidia-modelopt fake quantisation calibrated on windows from ``read_calibration_windows``).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .fesnet import FESNet

log = logging.getLogger(__name__)

# Bump when the exported graphs change for the same weights, so stale caches are not reused.
EXPORT_VERSION = 1
DEFAULT_OPSET = 18
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "fesnet"
MAX_ONNX_BATCH = 4096
PRECISIONS = ("fp32", "fp16", "int8", "fp8")

ENCODER_INPUTS = ("frames_u8",)
ENCODER_OUTPUTS = ("x_prime", "x_atten")
WINDOW_INPUTS = ("x_prime", "x_atten")
WINDOW_OUTPUTS = ("probs",)


class ExportError(RuntimeError):
    """A graph could not be exported, or an exported graph disagrees with torch."""


def _deployable(net: FESNet) -> FESNet:
    """An fp32 eval-mode copy of ``net`` (the caller's module keeps its mode and dtype)."""
    return copy.deepcopy(net).float().eval()


class EncoderGraph(nn.Module):
    """``encode_frames`` as a module with tensor outputs: what ONNX and TensorRT compile."""

    def __init__(self, net: FESNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, frames_u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.net.encode_frames(frames_u8)
        return f.x_prime, f.x_atten


class WindowGraph(nn.Module):
    """``forward_window`` followed by the softmax over classes: (B, T, ...) -> probs (B, T, 3)."""

    def __init__(self, net: FESNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x_prime: torch.Tensor, x_atten: torch.Tensor) -> torch.Tensor:
        logits = self.net.forward_window(x_prime, x_atten)
        return torch.softmax(logits.float(), dim=-1)


def example_inputs(
    net: FESNet, n_frames: int = 2, batch: int = 2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random frames_u8 (n, 112, 112, 3), x_prime (B, T, ...), x_atten (B, T, ...) inputs."""
    cfg = net.cfg
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (n_frames, cfg.image_size, cfg.image_size, 3), generator=g)
    t = cfg.window_frames
    c_deep, c_att = cfg.deep_channels[-1], cfg.init_channels[-1]
    x_prime = torch.randn(batch, t, c_deep, cfg.deep_hw, cfg.deep_hw, generator=g)
    x_atten = torch.randn(batch, t, c_att, cfg.attn_hw, cfg.attn_hw, generator=g).relu()
    return frames.to(torch.uint8), x_prime, x_atten


def weights_hash(net: FESNet) -> str:
    """sha256 over the model config and every tensor of the state dict (names, shapes, bytes)."""
    h = hashlib.sha256(net.cfg.to_json().encode())
    for name, t in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def cache_key(net: FESNet, opset: int) -> str:
    """Directory name of a cached export: weights + config, opset, torch and export versions."""
    parts = f"{weights_hash(net)}|opset{opset}|torch{torch.__version__}|export{EXPORT_VERSION}"
    digest = hashlib.sha256(parts.encode()).hexdigest()[:16]
    return f"{net.cfg.window_frames}f-opset{opset}-{digest}"


@dataclass(frozen=True)
class OnnxFiles:
    encoder: Path
    window: Path


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    dep = _deployable(net)
    frames, x_prime, x_atten = example_inputs(dep)
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
            (x_prime, x_atten),
            WINDOW_INPUTS,
            WINDOW_OUTPUTS,
            {"x_prime": {0: b}, "x_atten": {0: b}},
            opset,
        )
    _atomic_write(files.encoder, enc)
    _atomic_write(files.window, win)
    return files


def verify_onnx(
    net: FESNet, files: OnnxFiles, frames_u8: np.ndarray | None = None, atol: float = 1e-4
) -> float:
    """Run both graphs in ONNX Runtime next to torch; raise ExportError past ``atol``.

    Returns the largest absolute difference seen over x_prime, x_atten and probs. The window is
    checked on features of ``frames_u8`` (real faces, if given) tiled to a window, plus noise.
    """
    import onnxruntime as ort

    net = _deployable(net)
    frames, x_prime, x_atten = example_inputs(net, n_frames=3, batch=2, seed=1)
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
        probs = torch.softmax(net.forward_window(x_prime, x_atten), dim=-1)
    got_p, got_a = enc.run(None, {"frames_u8": frames.numpy()})
    (got_probs,) = win.run(None, {"x_prime": x_prime.numpy(), "x_atten": x_atten.numpy()})
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
    with tempfile.TemporaryDirectory(dir=_mkdir(root)) as tmp:
        fresh = export_onnx(net, tmp, opset)
        if verify:
            verify_onnx(net, fresh)
        _atomic_write(files.encoder, fresh.encoder.read_bytes())
        _atomic_write(files.window, fresh.window.read_bytes())
    return files


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


# --- INT8/FP8 calibration data -----------------------------------------------------------------
#
# Format (written by calibration/, read here): an .npz file with one array "windows", uint8 of
# shape (N, T, 112, 112, 3): N windows of T = cfg.window_frames aligned RGB face crops, exactly
# what the spotter feeds the model. Optional array "source" (N,) of str names where each window
# came from, for the record only. A few hundred windows from the deployment's own cameras is the
# usual size (modelopt's guide: 128-512 samples).

CALIBRATION_KEY = "windows"


class CalibrationError(ValueError):
    """A calibration file is missing or not of the documented format."""


def write_calibration_windows(
    path: str | Path, windows: np.ndarray, source: list[str] | None = None
) -> Path:
    """Write calibration windows (N, T, 112, 112, 3) uint8 in the format above."""
    path = Path(path)
    _check_calibration(windows, path)
    arrays = {CALIBRATION_KEY: windows}
    if source is not None:
        if len(source) != len(windows):
            raise CalibrationError(f"{len(source)} source names for {len(windows)} windows")
        arrays["source"] = np.asarray(source, dtype=str)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    _atomic_write(path, buf.getvalue())
    return path


def read_calibration_windows(path: str | Path, window_frames: int | None = None) -> np.ndarray:
    """Read calibration windows (N, T, 112, 112, 3) uint8; raise CalibrationError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"calibration file {path} not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            if CALIBRATION_KEY not in z.files:
                raise CalibrationError(
                    f"{path} has arrays {z.files}, expected {CALIBRATION_KEY!r} "
                    f"(uint8 (N, T, 112, 112, 3))"
                )
            windows = z[CALIBRATION_KEY]
    except (OSError, ValueError) as e:
        if isinstance(e, CalibrationError):
            raise
        raise CalibrationError(f"cannot read calibration file {path}: {e}") from e
    _check_calibration(windows, path, window_frames)
    return windows


def _check_calibration(windows: np.ndarray, path: Path, window_frames: int | None = None) -> None:
    ok = windows.dtype == np.uint8 and windows.ndim == 5 and windows.shape[-1] == 3
    ok = ok and len(windows) > 0 and windows.shape[2] == windows.shape[3]
    if ok and window_frames is not None:
        ok = windows.shape[1] == window_frames
    if not ok:
        want = f"(N>0, {window_frames or 'T'}, S, S, 3) uint8"
        raise CalibrationError(f"{path}: windows are {windows.shape} {windows.dtype}, want {want}")


# --- TensorRT ----------------------------------------------------------------------------------


def tensorrt_unavailable_reason(precision: str = "fp16") -> str | None:
    """None if the TensorRT backend can run here, else every missing piece in one sentence."""
    if precision not in PRECISIONS:
        return f"unknown precision {precision!r}; choose one of {PRECISIONS}"
    missing = []
    if not torch.cuda.is_available():
        missing.append(
            f"no CUDA device (torch {torch.__version__} reports torch.cuda.is_available() False; "
            "TensorRT needs an NVIDIA GPU and a CUDA build of torch)"
        )
    try:
        import torch_tensorrt
    except Exception as e:  # torch_tensorrt raises a bare Exception when TensorRT is missing
        missing.append(
            f"torch_tensorrt cannot be imported ({type(e).__name__}: {e}); install the "
            "[tensorrt] extra with NVIDIA's index (docs/GPU.md)"
        )
    else:
        want = ".".join(torch.__version__.split("+")[0].split(".")[:2])
        have = ".".join(str(torch_tensorrt.__version__).split("+")[0].split(".")[:2])
        if want != have:
            missing.append(
                f"torch_tensorrt {torch_tensorrt.__version__} is built for torch {have}, "
                f"this is torch {torch.__version__}"
            )
    if precision in ("int8", "fp8"):
        try:
            import modelopt.torch.quantization  # noqa: F401
        except Exception as e:
            missing.append(
                f"{precision} needs nvidia-modelopt ({type(e).__name__}: {e}); "
                "pip install 'nvidia-modelopt[torch]'"
            )
    if not missing:
        return None
    return "TensorRT backend unavailable: " + "; ".join(missing)


class _CastInput(nn.Module):
    """Casts its input to ``dtype``: put in front of the first conv of an fp16 encoder, whose
    uint8 -> float32 normalisation stays in fp32 (encode_frames casts to float32)."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.dtype)


class TypedEncoderGraph(EncoderGraph):
    """EncoderGraph of a (possibly fp16) network with float32 outputs, so every backend's
    cached features have one dtype."""

    def forward(self, frames_u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_prime, x_atten = super().forward(frames_u8)
        return x_prime.float(), x_atten.float()


class TypedWindowGraph(WindowGraph):
    """WindowGraph of a (possibly fp16) network taking float32 features."""

    def __init__(self, net: FESNet, dtype: torch.dtype) -> None:
        super().__init__(net)
        self.dtype = dtype

    def forward(self, x_prime: torch.Tensor, x_atten: torch.Tensor) -> torch.Tensor:
        return super().forward(x_prime.to(self.dtype), x_atten.to(self.dtype))


def precision_net(net: FESNet, precision: str) -> tuple[FESNet, torch.dtype]:
    """An eval copy of ``net`` in the compute dtype of ``precision`` (fp16 via ``.half()``:
    torch-tensorrt >= 2.14 builds strongly typed engines, taking dtypes from the graph)."""
    dep = _deployable(net)
    if precision != "fp16":
        return dep, torch.float32
    dep = dep.half()
    dep.encoder.stem = nn.Sequential(_CastInput(torch.float16), dep.encoder.stem)
    return dep, torch.float16


@dataclass(frozen=True)
class TensorRTFiles:
    encoder: Path
    window: Path


def tensorrt_cache_dir(
    net: FESNet, root: Path, precision: str, calibration: str | Path | None
) -> Path:
    """Engines are specific to weights, precision, calibration data, GPU and library versions."""
    import torch_tensorrt

    parts = [
        weights_hash(net),
        precision,
        torch.__version__,
        str(torch_tensorrt.__version__),
        torch.cuda.get_device_name(),
        str(EXPORT_VERSION),
    ]
    if calibration is not None and precision in ("int8", "fp8"):
        parts.append(hashlib.sha256(Path(calibration).read_bytes()).hexdigest())
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
    return root / f"{net.cfg.window_frames}f-{precision}-{digest}"


def _quantize(
    net: FESNet, precision: str, calib_windows: np.ndarray, device: str, batch: int = 4
) -> FESNet:
    """Insert modelopt Q/DQ nodes into ``net`` (in place) calibrated on real windows."""
    import modelopt.torch.quantization as mtq

    cfg = mtq.INT8_DEFAULT_CFG if precision == "int8" else mtq.FP8_DEFAULT_CFG

    def forward_loop(model: nn.Module) -> None:
        for i in range(0, len(calib_windows), batch):
            x = torch.from_numpy(calib_windows[i : i + batch]).to(device)
            model(x)  # FESNet.forward = encode_frames + forward_window: calibrates both

    with torch.no_grad():
        mtq.quantize(net, cfg, forward_loop=forward_loop)
    return net


def compile_tensorrt(
    net: FESNet,
    out_dir: str | Path,
    precision: str = "fp16",
    calibration: str | Path | None = None,
    max_frames: int = 64,
    max_batch: int = 8,
    device: str = "cuda",
) -> TensorRTFiles:
    """torch.export + torch_tensorrt.dynamo.compile of both graphs; engines saved with
    torch_tensorrt.save (ExportedProgram with dynamic batch) so ``load_tensorrt`` can reuse them.

    Encoder: N in [1, max_frames] (optimised for 1, the streaming case). Window head: B in
    [1, max_batch] (optimised for 1), T fixed. int8/fp8 need ``calibration`` (see the format
    above); they quantise with nvidia-modelopt before export, as the Torch-TensorRT guide does.
    """
    reason = tensorrt_unavailable_reason(precision)
    if reason is not None:
        raise ExportError(reason)
    import torch_tensorrt

    dep, dtype = precision_net(net, precision)
    dep = dep.to(device)
    if precision in ("int8", "fp8"):
        if calibration is None:
            raise CalibrationError(f"{precision} needs calibration windows (.npz, see export.py)")
        windows = read_calibration_windows(calibration, net.cfg.window_frames)
        _quantize(dep, precision, windows, device)
    frames, x_prime, x_atten = (t.to(device) for t in example_inputs(dep, n_frames=2, batch=2))
    cfg = net.cfg
    n = torch.export.Dim("n_frames", min=1, max=max_frames)
    b = torch.export.Dim("batch", min=1, max=max_batch)
    enc_dyn = {"frames_u8": {0: n}}
    win_dyn = {"x_prime": {0: b}, "x_atten": {0: b}}
    side, t = cfg.image_size, cfg.window_frames
    enc_in = [
        torch_tensorrt.Input(
            min_shape=(1, side, side, 3),
            opt_shape=(1, side, side, 3),
            max_shape=(max_frames, side, side, 3),
            dtype=torch.uint8,
            name="frames_u8",
        )
    ]
    win_in = [
        torch_tensorrt.Input(
            min_shape=(1, t, *x.shape[2:]),
            opt_shape=(1, t, *x.shape[2:]),
            max_shape=(max_batch, t, *x.shape[2:]),
            dtype=torch.float32,
            name=nm,
        )
        for nm, x in zip(WINDOW_INPUTS, (x_prime, x_atten), strict=True)
    ]
    extra = {}
    if precision == "int8":
        extra["enabled_precisions"] = {torch.int8}
    elif precision == "fp8":
        extra["enabled_precisions"] = {torch.float8_e4m3fn}
    out_dir = _mkdir(Path(out_dir))
    files = TensorRTFiles(out_dir / "encoder.ep", out_dir / "window.ep")
    graphs = (
        (TypedEncoderGraph(dep), (frames,), enc_dyn, enc_in, files.encoder),
        (TypedWindowGraph(dep, dtype), (x_prime, x_atten), win_dyn, win_in, files.window),
    )
    with torch.no_grad(), _quant_export_mode(precision):
        for module, args, dyn, inputs, path in graphs:
            ep = torch.export.export(module.eval(), args, dynamic_shapes=dyn, strict=False)
            trt = torch_tensorrt.dynamo.compile(ep, arg_inputs=inputs, **extra)
            tmp = path.with_name(path.name + ".tmp")
            torch_tensorrt.save(
                trt,
                str(tmp),
                output_format="exported_program",
                arg_inputs=list(args),
                dynamic_shapes=dyn,
                retrace=True,
            )
            os.replace(tmp, path)
    return files


def _quant_export_mode(precision: str):
    """modelopt's export_torch_mode for quantised graphs (lowers its Q/DQ ops for export)."""
    if precision in ("int8", "fp8"):
        from modelopt.torch.quantization.utils import export_torch_mode

        return export_torch_mode()
    return contextlib.nullcontext()


def cached_tensorrt(
    net: FESNet,
    cache_dir: str | Path | None = None,
    precision: str = "fp16",
    calibration: str | Path | None = None,
    **compile_opts,
) -> TensorRTFiles:
    """Compiled engines of ``net`` from the cache, compiling them once if absent."""
    reason = tensorrt_unavailable_reason(precision)
    if reason is not None:
        raise ExportError(reason)
    root = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR / "tensorrt"
    out = tensorrt_cache_dir(net, root, precision, calibration)
    files = TensorRTFiles(out / "encoder.ep", out / "window.ep")
    if files.encoder.is_file() and files.window.is_file():
        return files
    log.info("compiling FESNet with TensorRT (%s) into %s; minutes, once", precision, out)
    return compile_tensorrt(net, out, precision, calibration, **compile_opts)


def load_tensorrt(files: TensorRTFiles) -> tuple[nn.Module, nn.Module]:
    """(encoder, window) modules from saved engines, without recompiling."""
    import torch_tensorrt

    return (
        torch_tensorrt.load(str(files.encoder)).module(),
        torch_tensorrt.load(str(files.window)).module(),
    )
