"""Compile FESNet's two functions with TensorRT (optional extra ``[tensorrt]``, needs CUDA).

``compile_tensorrt`` runs torch.export + ``torch_tensorrt.dynamo.compile`` on the same two graph
modules the ONNX export uses and saves each with ``torch_tensorrt.save``; ``load_tensorrt``
reloads them. Precision: fp32, fp16 (``model.half()``: torch-tensorrt 2.14 compiles strongly
typed, where ``enabled_precisions`` is ignored), int8/fp8 (nvidia-modelopt fake quantisation
calibrated on windows from ``quantization_windows.read_calibration_windows``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .fesnet import FESNet
from .graphs import (
    DEFAULT_CACHE_DIR,
    EXPORT_VERSION,
    EncoderGraph,
    ExportError,
    WindowGraph,
    deployable,
    ensure_dir,
    example_inputs,
    weights_hash,
    window_inputs,
)
from .quantization_windows import (
    QuantizationDataError,
    read_calibration_geometry,
    read_calibration_windows,
)

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8", "fp8")


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

    def forward(
        self, x_prime: torch.Tensor, x_atten: torch.Tensor, geom: torch.Tensor | None = None
    ) -> torch.Tensor:
        geom = None if geom is None else geom.to(self.dtype)
        return super().forward(x_prime.to(self.dtype), x_atten.to(self.dtype), geom)


def precision_net(net: FESNet, precision: str) -> tuple[FESNet, torch.dtype]:
    """An eval copy of ``net`` in the compute dtype of ``precision`` (fp16 via ``.half()``:
    torch-tensorrt >= 2.14 builds strongly typed engines, taking dtypes from the graph)."""
    dep = deployable(net)
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
    net: FESNet,
    precision: str,
    calib_windows: np.ndarray,
    device: str,
    calib_geom: np.ndarray | None = None,
    batch: int = 4,
) -> FESNet:
    """Insert modelopt Q/DQ nodes into ``net`` (in place) calibrated on real windows (and their
    geometry vectors, for a network that reads them)."""
    import modelopt.torch.quantization as mtq

    if net.cfg.geometry_dims and calib_geom is None:
        raise QuantizationDataError("this network reads the geometry channel: its calibration file "
                               "needs 'geom' (fesnet-calibrate int8 writes it)")
    cfg = mtq.INT8_DEFAULT_CFG if precision == "int8" else mtq.FP8_DEFAULT_CFG

    def forward_loop(model: nn.Module) -> None:
        for i in range(0, len(calib_windows), batch):
            x = torch.from_numpy(calib_windows[i : i + batch]).to(device)
            g = None
            if net.cfg.geometry_dims:
                assert calib_geom is not None
                g = torch.from_numpy(calib_geom[i : i + batch]).to(device)
            model(x, g)  # FESNet.forward = encode_frames + forward_window: calibrates both

    with torch.no_grad():
        mtq.quantize(net, cfg, forward_loop=forward_loop)
    return net


def _input_specs(
    cfg: Any,
    names: tuple[str, ...],
    window: tuple[torch.Tensor, ...],
    max_frames: int,
    max_batch: int,
) -> tuple[list[Any], list[Any]]:
    """TensorRT's input ranges: the encoder's frames (1 to ``max_frames``, optimised for 1) and
    each window input (1 to ``max_batch`` windows of the model's T slots, optimised for 1)."""
    import torch_tensorrt

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
        for nm, x in zip(names, window, strict=True)
    ]
    return enc_in, win_in


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
            raise QuantizationDataError(
                f"{precision} needs calibration windows (.npz, see quantization_windows.py)"
            )
        windows = read_calibration_windows(calibration, net.cfg.window_frames)
        _quantize(dep, precision, windows, device, read_calibration_geometry(calibration))
    frames, window = example_inputs(dep, n_frames=2, batch=2)
    frames, window = frames.to(device), tuple(x.to(device) for x in window)
    names = window_inputs(dep)
    cfg = net.cfg
    n = torch.export.Dim("n_frames", min=1, max=max_frames)
    b = torch.export.Dim("batch", min=1, max=max_batch)
    enc_dyn = {"frames_u8": {0: n}}
    win_dyn = {name: {0: b} for name in names}
    enc_in, win_in = _input_specs(cfg, names, window, max_frames, max_batch)
    extra = {}
    if precision == "int8":
        extra["enabled_precisions"] = {torch.int8}
    elif precision == "fp8":
        extra["enabled_precisions"] = {torch.float8_e4m3fn}
    out_dir = ensure_dir(Path(out_dir))
    files = TensorRTFiles(out_dir / "encoder.ep", out_dir / "window.ep")
    graphs = (
        (TypedEncoderGraph(dep), (frames,), enc_dyn, enc_in, files.encoder),
        (TypedWindowGraph(dep, dtype), window, win_dyn, win_in, files.window),
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
