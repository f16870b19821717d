"""Building a :class:`~.tier.ModelTier`: the model functions it calls and how its bodies run.

Model functions (``TierFunctions``: device tensors in, device tensors out):

- :class:`TorchFunctions`: the deployable graphs of model/graphs.py on CPU or CUDA, fp32 or fp16
  (``torch.autocast``, weights stay fp32; the rings store what the encoder returns, cast to
  float16), optionally ``torch.compile``'d (the batch size marked dynamic from 2 up, so a bucket
  list costs two compiles per function: batch 1, which is specialised anyway, and the rest;
  batch 1 is compiled too because a CUDA graph removes the launch cost but not the device time
  of many small unfused kernels: one camera's step took ~1.3-1.5 ms with eager kernels in
  graphs on an H200 against ~0.5 ms compiled), optionally with channels-last convolution
  weights (NHWC activations, the layout of tensor-core convolutions; inference only: the
  model's own forward keeps NCHW because of a CPU backward bug, model/fesnet.py). fp32 on CUDA
  is strict IEEE fp32: TF32 is switched off for the calls (cuDNN convolutions default to TF32,
  whose 10-bit mantissa is fp16's: it moved window probabilities by up to 8.9e-3 on an H200,
  as far as fp16 autocast does), and restored after them.
- :class:`HostBackendFunctions`: any numpy backend of model/backends.py (ONNX Runtime on CPU)
  over host tensors: the CPU path of the tier, with the backend the CPU runs fastest.
- :class:`TensorRTFunctions`: TensorRT engines (optional extra, where torch-tensorrt installs;
  written against its documentation, not run by the project: docs/GPU.md).

Runners: :class:`~.tier.EagerRunner`, and :class:`CudaGraphRunner`, which captures the tier's
encode and window bodies once per bucket with ``torch.cuda.CUDAGraph`` and replays them. What
makes replay valid: every tensor a body reads or writes is allocated before capture and never
reallocated (the rings, ``crops_in``, ``encode_rows``, ``window_rows``, ``probs_out``), batch
sizes are the captured buckets, and the autocast weight cache is off (a cached cast made during
capture would be freed when the autocast region ends, while the graph still reads it). The warm-
up runs (cuDNN/cuBLAS handles, compilation) and every capture use one side stream and one
memory pool: no tensor allocated during a capture outlives it, and graphs replay one at a time
on one stream, so sharing the pool is safe whatever the replay order.

:func:`make_tier` picks them by name, the way ``make_backend`` picks a backend: ``auto`` is torch
on CUDA in fp16 with CUDA graphs where ``torch.cuda.is_available()``, else ONNX Runtime on the CPU
(torch where ONNX Runtime cannot be built).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from .backends import Backend, BackendUnavailable, make_backend
from .checkpoint import Checkpoint
from .fesnet import FESNet
from .graphs import EncoderGraph, WindowGraph, deployable
from .tier import EagerRunner, ModelTier, Runner, TierError
from .tier_plan import bucket_sizes

log = logging.getLogger(__name__)

TIER_BACKENDS = ("auto", "torch", "onnx", "onnx-int8", "tensorrt")
PRECISIONS = ("auto", "fp32", "fp16")
DEFAULT_MAX_BUCKET = {"cuda": 1024, "cpu": 64}
HOST_MAX_ENCODE = 4  # ONNX Runtime on a CPU: larger crop batches are slower per crop (tier.py)


class TorchFunctions:
    """FESNet's encoder and window head (model/graphs.py) on ``device`` (module docstring)."""

    def __init__(self, net: FESNet, device: str | torch.device = "cpu", precision: str = "fp32",
                 compile: bool = False, channels_last: bool = False) -> None:
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"precision must be fp32 or fp16, got {precision!r}")
        self.device = torch.device(device)
        self.precision = precision
        self.feature_dtype = torch.float16 if precision == "fp16" else torch.float32
        dep = deployable(net).to(self.device)
        if channels_last:  # conv weights NHWC: activations follow them (tensor cores' layout)
            dep = dep.to(memory_format=torch.channels_last)
        self._encoder: Callable[..., Any] = EncoderGraph(dep)
        self._window: Callable[..., Any] = WindowGraph(dep)
        self._compiled: tuple[Callable[..., Any], Callable[..., Any]] | None = None
        if compile:
            self._compiled = (torch.compile(self._encoder), torch.compile(self._window))

    def _numerics(self) -> contextlib.AbstractContextManager:
        """fp16: autocast without its weight cache (CUDA graphs, module docstring of
        model/tier.py); fp32 on CUDA: strict fp32; fp32 on the CPU: as is."""
        if self.precision == "fp16":
            return torch.autocast(self.device.type, dtype=torch.float16, cache_enabled=False)
        if self.device.type == "cuda":
            return strict_fp32()
        return contextlib.nullcontext()

    def _pick(self, i: int, inputs: Sequence[torch.Tensor | None]) -> Callable[..., Any]:
        if self._compiled is None:
            return (self._encoder, self._window)[i]
        if inputs[0] is not None and inputs[0].shape[0] >= 2:
            for x in inputs:
                if x is not None:
                    torch._dynamo.maybe_mark_dynamic(x, 0)
        return self._compiled[i]

    def encode(self, crops_u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self._numerics():
            return self._pick(0, [crops_u8])(crops_u8)

    def window(
        self, x_prime: torch.Tensor, x_atten: torch.Tensor, geom: torch.Tensor | None
    ) -> torch.Tensor:
        with self._numerics():
            return self._pick(1, [x_prime, x_atten, geom])(x_prime, x_atten, geom)


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """TF32 off for cuDNN (convolutions) and cuBLAS (matmuls) inside, restored after. The
    flags are read when a kernel is chosen, so a CUDA graph captured inside keeps IEEE fp32
    kernels. The legacy ``allow_tf32`` flags set cuDNN's convolution and RNN precision together;
    torch refuses a read of them after the newer per-operator settings made the two differ."""
    cudnn, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn
        torch.backends.cuda.matmul.allow_tf32 = matmul


class HostBackendFunctions:
    """A numpy backend (``Backend.encode`` / ``Backend.window``) over host tensors."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.device = torch.device("cpu")
        self.feature_dtype = torch.float32

    def encode(self, crops_u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xp, xa = self.backend.encode(crops_u8.numpy())
        return torch.from_numpy(np.asarray(xp)), torch.from_numpy(np.asarray(xa))

    def window(
        self, x_prime: torch.Tensor, x_atten: torch.Tensor, geom: torch.Tensor | None
    ) -> torch.Tensor:
        g = None if geom is None else geom.numpy()
        probs = self.backend.window(x_prime.numpy(), x_atten.numpy(), g)
        return torch.from_numpy(np.asarray(probs, np.float32))


class TensorRTFunctions:
    """TensorRT engines of the encoder and window head (model/tensorrt_export.py), compiled for
    batches up to the tier's largest bucket. Not run by the project (docs/GPU.md)."""

    def __init__(self, net: FESNet, max_bucket: int, precision: str = "fp16",
                 device: str = "cuda", **opts: Any) -> None:
        from .tensorrt_export import cached_tensorrt, load_tensorrt, tensorrt_unavailable_reason

        reason = tensorrt_unavailable_reason(precision)
        if reason is not None:
            raise BackendUnavailable(reason)
        files = cached_tensorrt(net, opts.pop("cache_dir", None), precision,
                                opts.pop("calibration", None), max_frames=max_bucket,
                                max_batch=max_bucket, device=device)
        self._enc, self._win = load_tensorrt(files)
        self.device = torch.device(device)
        self.feature_dtype = torch.float32  # the typed graphs hand over float32 features

    def encode(self, crops_u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xp, xa = self._enc(crops_u8)
        return xp, xa

    def window(
        self, x_prime: torch.Tensor, x_atten: torch.Tensor, geom: torch.Tensor | None
    ) -> torch.Tensor:
        args = (x_prime, x_atten) if geom is None else (x_prime, x_atten, geom)
        return self._win(*args).float()


class GraphCapture(Protocol):
    """Turns a body call into a replayable one (CUDA graphs; tests substitute a CPU stand-in)."""

    def capture(self, fn: Callable[[], None]) -> Callable[[], None]: ...

    def close(self) -> None: ...


class CudaGraphCapture:
    """``torch.cuda.CUDAGraph`` capture on one side stream and one pool (module docstring)."""

    def __init__(self, device: torch.device, warmup_iters: int = 3) -> None:
        self.device = device
        self.warmup_iters = warmup_iters
        self.stream = torch.cuda.Stream(device)
        self.pool = torch.cuda.graph_pool_handle()
        self.stream.wait_stream(torch.cuda.current_stream(device))  # buffers initialised

    def capture(self, fn: Callable[[], None]) -> Callable[[], None]:
        with torch.cuda.stream(self.stream):
            for _ in range(self.warmup_iters):
                fn()
        self.stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
            fn()
        return graph.replay

    def close(self) -> None:
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        torch.cuda.synchronize(self.device)


class CudaGraphRunner:
    """Replays a CUDA graph of each body per bucket (module docstring). ``capture``: how graphs
    are made (default :class:`CudaGraphCapture`)."""

    name = "cuda-graphs"

    def __init__(self, device: str | torch.device = "cuda", warmup_iters: int = 3,
                 capture: Callable[[], GraphCapture] | None = None) -> None:
        self.device = torch.device(device)
        self._make_capture = capture or (lambda: CudaGraphCapture(self.device, warmup_iters))
        self._graphs: dict[tuple[str, int], Callable[[], None]] = {}
        self.capture_s = 0.0

    @torch.no_grad()
    def prepare(
        self, encode: Callable[[int], None], window: Callable[[int], None], buckets: Sequence[int]
    ) -> None:
        t0 = time.perf_counter()
        cap = self._make_capture()
        try:
            for kind, body in (("encode", encode), ("window", window)):
                for b in buckets:
                    self._graphs[(kind, b)] = cap.capture(lambda body=body, b=b: body(b))
        finally:
            cap.close()
        self.capture_s = time.perf_counter() - t0
        log.info("captured %d CUDA graphs in %.1f s", len(self._graphs), self.capture_s)

    def _replay(self, kind: str, b: int) -> None:
        replay = self._graphs.get((kind, b))
        if replay is None:
            raise TierError(f"no {kind} graph for batch {b}; captured "
                            f"{sorted(k[1] for k in self._graphs if k[0] == kind)}")
        replay()

    def encode(self, b: int) -> None:
        self._replay("encode", b)

    def window(self, b: int) -> None:
        self._replay("window", b)


def resolve(name: str, device: str, precision: str) -> tuple[str, str, str]:
    """``auto`` spelled out: (backend, device, precision) for this machine."""
    if name not in TIER_BACKENDS:
        raise ValueError(f"unknown tier backend {name!r}; choose one of {', '.join(TIER_BACKENDS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    on_cuda = torch.device(device).type == "cuda"
    if name == "auto":
        name = "torch" if on_cuda else _cpu_default()
    if precision == "auto":
        precision = "fp16" if on_cuda else "fp32"
    return name, device, precision


def _cpu_default() -> str:
    try:
        import onnxruntime  # noqa: F401
    except Exception as e:  # a broken install raises more than ImportError
        log.warning("ONNX Runtime unavailable (%s: %s); the tier uses torch", type(e).__name__, e)
        return "torch"
    return "onnx"


def make_tier(
    name: str,
    checkpoint: Checkpoint,
    *,
    device: str = "auto",
    precision: str = "auto",
    graphs: bool | None = None,
    compile: bool = False,
    channels_last: bool = False,
    threads: int | None = None,
    max_streams: int = 64,
    ring_slots: int | None = None,
    max_bucket: int | None = None,
    max_encode: int | None = None,
    buckets: Sequence[int] | None = None,
    runner: Runner | None = None,
    **backend_opts: Any,
) -> ModelTier:
    """A tier over ``checkpoint``'s network. ``graphs`` (default: on CUDA with torch) captures
    CUDA graphs per bucket; ``buckets`` default to powers of two up to ``max_bucket`` where
    graphs need them, else exact batch sizes. ``backend_opts`` go to ``make_backend`` (onnx) or
    the TensorRT compile (cache_dir, calibration)."""
    name, device, precision = resolve(name, device, precision)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable("the tier on CUDA needs a CUDA build of torch and a GPU")
    if threads is not None and dev.type == "cpu":
        torch.set_num_threads(threads)
    graphs = (dev.type == "cuda" and name == "torch") if graphs is None else graphs
    if graphs and dev.type != "cuda" and runner is None:
        raise BackendUnavailable("CUDA graphs need a CUDA device")
    max_bucket = max_bucket or DEFAULT_MAX_BUCKET.get(dev.type, 64)
    if buckets is None and (graphs or dev.type == "cuda"):
        buckets = bucket_sizes(max_bucket)
    functions: Any
    if name == "torch":
        functions = TorchFunctions(checkpoint.net, dev, precision, compile, channels_last)
    elif name in ("onnx", "onnx-int8"):
        if dev.type != "cpu" or precision != "fp32":
            raise ValueError(f"the {name} tier runs on the CPU in fp32")
        opts = dict(backend_opts) | ({"threads": threads} if threads is not None else {})
        functions = HostBackendFunctions(make_backend(name, checkpoint, **opts))
        max_encode = max_encode or HOST_MAX_ENCODE
    else:
        functions = TensorRTFunctions(checkpoint.net, max(buckets or (max_bucket,)), precision,
                                      device, **backend_opts)
    if runner is None:
        runner = CudaGraphRunner(dev) if graphs else EagerRunner()
    cfg = checkpoint.config
    label = "-".join([name, dev.type, precision] + (["compiled"] if compile else [])
                     + (["channels-last"] if channels_last else [])
                     + (["graphs"] if graphs else []))
    return ModelTier(functions, window_frames=cfg.window_frames, image_size=cfg.image_size,
                     geometry_dims=cfg.geometry_dims, max_streams=max_streams,
                     ring_slots=ring_slots, buckets=buckets, max_bucket=max_bucket,
                     max_encode=max_encode, runner=runner, geometry=checkpoint.geometry,
                     name=label)
