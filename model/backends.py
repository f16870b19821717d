"""Inference backends: one interface over torch, ONNX Runtime and TensorRT.

A backend exposes the model's two functions on numpy arrays, batch-shaped so that frames and
windows from several streams can share one call (and so the model tier can later move to an
inference server as just another backend):

    encode(frames_u8 (N,112,112,3) uint8) -> (x_prime (N,...), x_atten (N,...)) float32
    window(x_prime (B,T,...), x_atten (B,T,...), geom (B,T,G) or None) -> probs (B,T,3) float32

``geom`` is the geometry channel (model/geometry.py); a checkpoint whose config has
``geometry_dims > 0`` needs it, others must not get it.

Offline evaluation, training-time validation and the streaming engine all call these, so every
path shares the same model functions.

``make_backend(name, checkpoint, **opts)`` builds one by name: "torch" (eager), "torch-compile",
"onnx" (ONNX Runtime on CPU; the exported graphs are cached, see onnx_export.py), "onnx-int8"
(the same with the encoder's matrix products dynamically quantized to INT8) and "tensorrt"
(optional extra; raises ``BackendUnavailable`` saying what is missing). docs/BENCHMARKS.md has
their measured speeds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from .checkpoint import Checkpoint
from .fesnet import FESNet
from .geometry import GeometryConfig
from .graphs import GEOMETRY_INPUT

log = logging.getLogger(__name__)


class Backend(Protocol):
    name: str
    geometry: GeometryConfig | None  # the geometry channel it reads (None: it reads none)

    def encode(self, frames_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def window(
        self, x_prime: np.ndarray, x_atten: np.ndarray, geom: np.ndarray | None = None
    ) -> np.ndarray: ...


WindowPost = Callable[[np.ndarray, np.ndarray | None], np.ndarray]
"""Post-processing of the network's window probabilities: (probs (B, T, 3), geom (B, T, G) or
None) -> probs (B, T, 3)."""


def split_post(backend: Backend) -> tuple[Backend, WindowPost | None]:
    """A backend that post-processes its network's probabilities (the fused spotter,
    model/fused.py) as (the network's backend, its post-processing): such a backend has ``net``
    (the network's backend) and ``post_window(probs, geom)``, and its ``window(x', X, g)`` is
    ``post_window(net.window(x', X, g), g)``. Whatever computes the network's probabilities
    elsewhere (the model tier, model/tier.py) then applies the same post-processing and gets the
    backend's own numbers. Wrappers of wrappers compose; any other backend is its own network
    (post None)."""
    post = getattr(backend, "post_window", None)
    net = getattr(backend, "net", None)
    if post is None or net is None or not hasattr(net, "window"):
        return backend, None
    inner, inner_post = split_post(net)
    if inner_post is None:
        return inner, post
    return inner, lambda probs, geom: post(inner_post(probs, geom), geom)


class TorchBackend:
    """Eager (or torch.compile'd) PyTorch on CPU or CUDA. ``geometry``: the settings of the
    geometry channel the network reads (None for a pixel-only network; the defaults when the
    network has one and none is given)."""

    def __init__(
        self,
        net: FESNet,
        device: str = "cpu",
        compile: bool = False,
        threads: int | None = None,
        geometry: GeometryConfig | None = None,
    ) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        self.geometry = (geometry or GeometryConfig()) if net.cfg.geometry_dims else None
        self.name = "torch-compile" if compile else "torch"
        self.net = net.to(device).eval()
        self.device = device
        self._encode = self.net.encode_frames
        self._window = self.net.forward_window
        if compile:
            self._encode = torch.compile(self.net.encode_frames)
            self._window = torch.compile(self.net.forward_window)

    @torch.inference_mode()
    def encode(self, frames_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(frames_u8)).to(self.device)
        f = self._encode(x)
        return f.x_prime.float().cpu().numpy(), f.x_atten.float().cpu().numpy()

    @torch.inference_mode()
    def window(
        self, x_prime: np.ndarray, x_atten: np.ndarray, geom: np.ndarray | None = None
    ) -> np.ndarray:
        xp = torch.from_numpy(np.ascontiguousarray(x_prime)).to(self.device)
        xa = torch.from_numpy(np.ascontiguousarray(x_atten)).to(self.device)
        g = None
        if geom is not None:
            g = torch.from_numpy(np.ascontiguousarray(geom, dtype=np.float32)).to(self.device)
        logits = self._window(xp, xa, g)
        return torch.softmax(logits.float(), dim=-1).cpu().numpy()


class BackendUnavailable(RuntimeError):
    """A backend cannot run on this machine; the message names what is missing."""


class OnnxBackend:
    """ONNX Runtime on CPU, tuned for a small machine shared with decoding and face landmarks.

    One intra-op thread by default: on the 2-core machines the project runs on, a second thread
    does not speed up a single frame or window (docs/BENCHMARKS.md) and would take the core that
    mediapipe and video decoding need. Spinning is off for the same reason: an idle spinning pool
    burns a core between calls. Inputs are the raw uint8 crops (the cast is inside the graph).
    """

    def __init__(
        self,
        encoder_path: str | Path,
        window_path: str | Path,
        threads: int = 1,
        window_frames: int = 32,
        name: str = "onnx",
        geometry: GeometryConfig | None = None,
    ) -> None:
        try:
            import onnxruntime as ort
        except Exception as e:
            raise BackendUnavailable(f"onnx backend needs onnxruntime: {e}") from e
        ort.disable_telemetry_events()  # on by default in ONNX Runtime; a face spotter sends none
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        opts.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        self.name = name
        self.threads = threads
        self.window_frames = window_frames
        self.encoder_path = Path(encoder_path)
        self.window_path = Path(window_path)
        self._enc = ort.InferenceSession(str(encoder_path), opts, providers=providers)
        self._win = ort.InferenceSession(str(window_path), opts, providers=providers)
        self._window_inputs = tuple(i.name for i in self._win.get_inputs())
        reads_geom = GEOMETRY_INPUT in self._window_inputs
        if reads_geom and geometry is None:
            geometry = GeometryConfig()
        self.geometry = geometry if reads_geom else None

    @classmethod
    def from_net(
        cls,
        net: FESNet,
        cache_dir: str | Path | None = None,
        opset: int | None = None,
        threads: int = 1,
        geometry: GeometryConfig | None = None,
        int8: bool = False,
    ) -> OnnxBackend:
        """Export (or reuse the cached export of) ``net`` and open sessions on it; ``int8``:
        the encoder's matrix products dynamically quantized (``onnx_export.int8_encoder``)."""
        from .onnx_export import DEFAULT_OPSET, cached_onnx, int8_encoder

        files = cached_onnx(net, cache_dir, opset if opset is not None else DEFAULT_OPSET)
        encoder = int8_encoder(files) if int8 else files.encoder
        return cls(encoder, files.window, threads, net.cfg.window_frames,
                   name="onnx-int8" if int8 else "onnx", geometry=geometry)

    def encode(self, frames_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if frames_u8.dtype != np.uint8 or frames_u8.ndim != 4 or frames_u8.shape[-1] != 3:
            raise ValueError(
                f"encode expects uint8 (N, H, W, 3) RGB crops, got "
                f"{frames_u8.shape} {frames_u8.dtype}"
            )
        x_prime, x_atten = self._enc.run(None, {"frames_u8": np.ascontiguousarray(frames_u8)})
        return x_prime, x_atten

    def window(
        self, x_prime: np.ndarray, x_atten: np.ndarray, geom: np.ndarray | None = None
    ) -> np.ndarray:
        if x_prime.shape[1] != self.window_frames or x_atten.shape[1] != self.window_frames:
            raise ValueError(
                f"the exported window graph takes T={self.window_frames} frames, got "
                f"x_prime {x_prime.shape}, x_atten {x_atten.shape}"
            )
        given = {"x_prime": x_prime, "x_atten": x_atten}
        if geom is not None:
            given[GEOMETRY_INPUT] = geom
        if set(given) != set(self._window_inputs):
            raise ValueError(f"the exported window graph takes {self._window_inputs}, "
                             f"got {tuple(given)}")
        feed = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in given.items()}
        (probs,) = self._win.run(None, feed)
        return probs


class TensorRTBackend:
    """TensorRT engines (torch-tensorrt, optional extra ``[tensorrt]``) on an NVIDIA GPU.

    Compiled once per (weights, precision, calibration data, GPU, versions) and cached with
    torch_tensorrt.save, so a restart loads the engines instead of recompiling. Raises
    ``BackendUnavailable`` naming what is missing (CUDA, torch_tensorrt, matching torch version,
    nvidia-modelopt for int8/fp8) on machines that cannot run it.
    """

    def __init__(
        self,
        net: FESNet,
        precision: str = "fp16",
        calibration: str | Path | None = None,
        cache_dir: str | Path | None = None,
        device: str = "cuda",
        max_frames: int = 64,
        max_batch: int = 8,
        geometry: GeometryConfig | None = None,
    ) -> None:
        from .tensorrt_export import cached_tensorrt, load_tensorrt, tensorrt_unavailable_reason

        self.geometry = (geometry or GeometryConfig()) if net.cfg.geometry_dims else None

        reason = tensorrt_unavailable_reason(precision)
        if reason is not None:
            raise BackendUnavailable(reason)
        files = cached_tensorrt(
            net,
            cache_dir,
            precision,
            calibration,
            max_frames=max_frames,
            max_batch=max_batch,
            device=device,
        )
        self.name = f"tensorrt-{precision}"
        self.device = device
        self.max_frames = max_frames
        self.max_batch = max_batch
        self._enc, self._win = load_tensorrt(files)

    @torch.inference_mode()
    def encode(self, frames_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outs = [[], []]
        for i in range(0, len(frames_u8), self.max_frames):  # the engine's largest profile
            x = torch.from_numpy(np.ascontiguousarray(frames_u8[i : i + self.max_frames]))
            x_prime, x_atten = self._enc(x.to(self.device))
            outs[0].append(x_prime.cpu().numpy())
            outs[1].append(x_atten.cpu().numpy())
        return np.concatenate(outs[0]), np.concatenate(outs[1])

    @torch.inference_mode()
    def window(
        self, x_prime: np.ndarray, x_atten: np.ndarray, geom: np.ndarray | None = None
    ) -> np.ndarray:
        if (geom is None) != (self.geometry is None):
            raise ValueError("geom is required exactly when the network reads the geometry "
                             f"channel (it does{'' if self.geometry else ' not'})")
        arrays = [x_prime, x_atten] + ([] if geom is None else [geom])
        probs = []
        for i in range(0, len(x_prime), self.max_batch):
            batch = [torch.from_numpy(np.ascontiguousarray(a[i : i + self.max_batch],
                                                          dtype=np.float32)).to(self.device)
                     for a in arrays]
            probs.append(self._win(*batch).float().cpu().numpy())
        return np.concatenate(probs)


BACKENDS = ("torch", "torch-compile", "onnx", "onnx-int8", "tensorrt")


def make_backend(name: str, checkpoint: Checkpoint, **opts: Any) -> Backend:
    """The backend ``name`` over ``checkpoint``'s network.

    name: "torch" (opts: device, threads), "torch-compile" (same), "onnx" (threads=1,
    cache_dir, opset), "onnx-int8" (same; the encoder's MatMuls in INT8), "tensorrt"
    (precision="fp16"|"fp32"|"int8"|"fp8", calibration, cache_dir, device, max_frames,
    max_batch). Unknown names raise ValueError; a backend this
    machine cannot run raises BackendUnavailable saying why.
    """
    net = checkpoint.net
    if name == "torch":
        return TorchBackend(net, geometry=checkpoint.geometry, **opts)
    if name == "torch-compile":
        return TorchBackend(net, compile=True, geometry=checkpoint.geometry, **opts)
    if name in ("onnx", "onnx-int8"):
        return OnnxBackend.from_net(net, geometry=checkpoint.geometry, int8=name == "onnx-int8",
                                    **opts)
    if name == "tensorrt":
        return TensorRTBackend(net, geometry=checkpoint.geometry, **opts)
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def available_backends(include_compile: bool = False) -> list[str]:
    """The backends this machine can run (torch.compile only on request: it needs a C++
    toolchain and compiles for minutes on a small CPU)."""
    from .tensorrt_export import tensorrt_unavailable_reason

    names = ["torch"]
    if include_compile:
        names.append("torch-compile")
    try:
        import onnxruntime  # noqa: F401
    except Exception:
        log.info("onnx backend unavailable: onnxruntime does not import")
    else:
        names += ["onnx", "onnx-int8"]
    reason = tensorrt_unavailable_reason()
    if reason is None:
        names.append("tensorrt")
    else:
        log.info("%s", reason)
    return names
