"""One runtime config and one loader: checkpoint -> backend -> merger config -> optional profile.

Every program that runs the model loads it here (``fesnet-spot``, the viewers, ``fesnet-eval``,
``fesnet-calibrate``, ``fesnet-bench``), in this process or with the model tier on a cluster
(``placement``), so they agree on every default and fallback:

- **checkpoint**: the given path, else the shipped one (``checkpoint.DEFAULT_CHECKPOINT``);
- **backend**: by name (``backends.BACKENDS``). ``"auto"`` is ONNX Runtime, and torch (with a
  warning naming why) where ONNX Runtime cannot be built; a backend asked for by name is never
  replaced by another one: if it cannot run here, loading fails and says so;
- **merger config**: the given JSON, else the settings stored in the checkpoint's JSON, else the
  defaults;
- **window length**: ``window_frames`` has one owner, the model config in the checkpoint. The
  merger's copy is set from it; a merger JSON that names another length is refused;
- **stride**: the given one, else the checkpoint's ``stride_frames``, else 8
  (:func:`stride_of`, the one owner of that rule); from 1 slot to a window (a longer stride
  would leave slots unscored), checked before anything is placed anywhere;
- **latency**: ``accurate`` (the default) takes the checkpoint's own merger and stride;
  ``quick`` takes its ``"quick"`` entry, a merger fitted on the same validation videos for
  a shorter stride and commit lag (events decided sooner after an expression, at some cost in
  F1: README, "Model card"). An explicit ``--stride`` or merger JSON still wins;
- **method**: ``fesnet`` (the network), ``landmarks`` (the training-free peer,
  model/peer.py: the geometry channel alone, no weights used; its merger settings are the peer's
  own unless a merger JSON is given) or ``fused`` (model/fused.py: the network's evidence checked
  against the geometry channel; its settings and merger are the checkpoint's ``"fused"`` entry,
  chosen on validation videos, unless a merger JSON is given);
- **profile** (optional): any object with ``apply(MergerConfig) -> MergerConfig`` (a
  :class:`fesnet.calibration.profile.NeutralProfile`) moves the thresholds last. The profile is
  passed in loaded: finding it by name is calibration's business, not the model's;
- **serving**: how streams reach the network (:func:`serving_of`). ``engine``: each stream keeps
  its encoder features in its own ring and calls the backend on its own; ``tier``: the model
  tier (model/tier.py) keeps every stream's features where the model runs and one step serves
  all streams' new crops and windows. ``auto`` is the CUDA tier where a GPU is present
  (``torch.cuda.is_available()``: torch in fp16, compiled, CUDA graphs per batch bucket; TensorRT
  with ``--backend tensorrt``), and on a CPU the engine: there the tier measured no faster, end
  to end, with ONNX Runtime or torch (docs/GPU.md, "Streams on the tier in one process"). The
  backend of offline work on a GPU machine is torch on CUDA under ``auto``; on a CPU nothing
  changes;
- **placement** (optional): where the network runs. None builds the backend here
  (:func:`build_backend`); a :class:`Placement` (the Ray model tier,
  ``fesnet.realtime.cluster.placement.RayPlacement``) turns the same checkpoint and backend name
  into a backend that calls the model elsewhere. Everything else above is resolved here first,
  the same way for both.

Anything that cannot be loaded is a :class:`LoadError` whose message says what to do.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fesnet.argtypes import float_range, int_range

from .merger import ConfigError, MergerConfig

if TYPE_CHECKING:
    from .backends import Backend
    from .checkpoint import Checkpoint
    from .tier import ModelTier

log = logging.getLogger(__name__)

AUTO = "auto"
METHODS = ("fesnet", "landmarks", "fused")
# backends.BACKENDS with "auto" first; spelled out so that defining command-line options does
# not import torch (tests/test_runtime.py checks that the two lists agree).
BACKEND_CHOICES = (AUTO, "torch", "torch-compile", "onnx", "onnx-int8", "tensorrt")
DEFAULT_STRIDE_FRAMES = 8
SERVING = (AUTO, "engine", "tier")
LATENCIES = ("accurate", "quick")
_THREADED = ("torch", "torch-compile", "onnx", "onnx-int8")  # backends that take a thread count


class LoadError(RuntimeError):
    """The model cannot be loaded as configured; the message says what to change."""


class ThresholdProfile(Protocol):
    name: str

    def apply(self, base: MergerConfig) -> MergerConfig: ...


class Placement(Protocol):
    """Where the network runs when not in this process: it is handed the checkpoint and the
    config after every rule of the loader has been applied, and returns the backend to call."""

    def backend(self, ckpt: Checkpoint, config: RuntimeConfig) -> Backend: ...

    # Optional: ``tier_transport() -> transport or None``, the placed model tier that streams
    # send their crops to (realtime/tier_engine.py: ``TierTransport``); without it, or when it
    # returns None, streams call ``backend``.


@dataclass(frozen=True)
class RuntimeConfig:
    """What to load. Every field has the default all programs share (module docstring)."""

    checkpoint: Path | None = None
    backend: str = AUTO
    threads: int | None = None
    """Intra-op threads of the torch and ONNX backends (None: the backend's own default)."""
    merger_config: Path | None = None
    stride_frames: int | None = None
    backend_options: dict[str, Any] = field(default_factory=dict)
    """Further ``make_backend`` options (cache_dir, device, precision, calibration, ...)."""
    method: str = "fesnet"
    """``fesnet``, ``landmarks`` (the training-free peer) or ``fused`` (both, model/fused.py)."""
    peer_k: float | None = None
    """The peer's z threshold (None: ``PeerConfig``'s default)."""
    serving: str = AUTO
    """``engine``, ``tier`` or ``auto`` (module docstring, :func:`serving_of`)."""
    latency: str = "accurate"
    """``accurate`` or ``quick``: which of the checkpoint's mergers (module docstring)."""


@dataclass(frozen=True)
class Runtime:
    """A loaded model: weights, the backend that runs them, and how its windows are merged."""

    checkpoint: Checkpoint
    backend: Backend
    merger: MergerConfig
    stride_frames: int
    base_merger: MergerConfig
    """The merger config before the profile moved its thresholds (``merger`` without one)."""
    profile: ThresholdProfile | None = None
    serving: str = "engine"
    """``engine`` or ``tier``: how this runtime's streams reach the network (resolved)."""
    tier_options: dict[str, Any] = field(default_factory=dict)
    """``tier_run.make_tier``'s options for a tier in this process (``serving == "tier"``)."""
    remote_tier: Any = None
    """The placement's model tier for streams (a ``TierTransport``), or None."""

    @property
    def window_frames(self) -> int:
        return self.checkpoint.config.window_frames

    def make_tier(self, max_streams: int, ring_slots: int | None = None) -> ModelTier:
        """A model tier over this runtime's network, in this process (``tier_options``)."""
        from .tier_run import make_tier

        opts = dict(self.tier_options)
        return make_tier(opts.pop("name", AUTO), self.checkpoint, max_streams=max_streams,
                         ring_slots=ring_slots, **opts)

    @classmethod
    def from_checkpoint(
        cls,
        ckpt: Checkpoint,
        config: RuntimeConfig,
        profile: ThresholdProfile | None = None,
        placement: Placement | None = None,
    ) -> Runtime:
        """The rest of :func:`load_runtime` for weights already in memory (benchmarks of
        random weights)."""
        stride = stride_of(ckpt, config.stride_frames, config.latency)
        if config.method not in METHODS:
            raise LoadError(f"unknown method {config.method!r}; choose one of {METHODS}")
        if config.method == "landmarks":
            if placement is not None:
                raise LoadError("--method landmarks runs in this process only (it has no model "
                                "to place on a cluster): drop --cluster")
            from .peer import LandmarkPeer, PeerConfig

            peer = PeerConfig() if config.peer_k is None else PeerConfig(k=config.peer_k,
                                                                          k_off=config.peer_k - 1.5)
            backend: Backend = LandmarkPeer(peer)
            base = (peer.merger_config(ckpt.config.window_frames) if config.merger_config is None
                    else merger_config(ckpt, config.merger_config))
        else:
            base = merger_config(ckpt, config.merger_config, config.latency)
            if placement is None:
                backend = build_backend(config.backend, ckpt, config.threads,
                                        **config.backend_options)
            else:
                backend = placement.backend(ckpt, config)
            if config.method == "fused":
                if config.latency != "accurate":
                    raise LoadError("--method fused has one merger, chosen at the checkpoint's "
                                    "own stride: drop --latency quick, or use --method fesnet")
                backend, fused_merger = fused_method(ckpt, backend)
                if config.merger_config is None:
                    base = fused_merger
        merger = base if profile is None else profile.apply(base)
        serving, tier_options = serving_of(config)
        remote = None
        if placement is not None:  # placed: the placement's tier unless told otherwise
            transport = getattr(placement, "tier_transport", None)
            wanted = config.serving != "engine" and config.method != "landmarks"
            remote = transport() if transport is not None and wanted else None
            serving = "tier" if remote is not None else "engine"
        return cls(ckpt, backend, merger, stride, base, profile, serving, tier_options, remote)


def serving_of(config: RuntimeConfig, cuda: bool | None = None) -> tuple[str, dict[str, Any]]:
    """(``engine`` or ``tier``, the tier's ``make_tier`` options) for ``config`` on this machine
    (``cuda``: whether a GPU is present; None: ask torch). The landmark peer has no network: its
    streams always use the engine. ``auto``: the tier on CUDA (TensorRT's engines with
    ``--backend tensorrt``, else torch in fp16, compiled, with CUDA graphs: the configuration that
    measured fastest on an H200, docs/GPU.md); on a CPU the engine (the tier measured no faster
    there, end to end: docs/GPU.md, "Streams on the tier in one process"), the tier's options
    given for ``--serving tier``."""
    if config.serving not in SERVING:
        raise LoadError(f"unknown serving {config.serving!r}; choose one of {', '.join(SERVING)}")
    if config.method == "landmarks":
        if config.serving == "tier":
            raise LoadError("--serving tier needs the network: the landmark peer has none")
        return "engine", {}
    if config.serving == "engine":
        return "engine", {}
    name = config.backend
    if cuda is None:
        cuda = _cuda_available()
    if cuda and name in (AUTO, "torch", "torch-compile", "tensorrt"):
        if name == "tensorrt":
            keep = ("cache_dir", "calibration", "precision")
            return "tier", {"name": "tensorrt", "device": "cuda", "precision": "fp16",
                            "graphs": False} | {k: v for k, v in config.backend_options.items()
                                                if k in keep}
        return "tier", {"name": "torch", "device": "cuda", "precision": "fp16", "graphs": True,
                        "compile": name != "torch"}
    cpu_name = {"torch-compile": "torch", "tensorrt": "torch"}.get(name, name)
    options = {"name": cpu_name, "device": "cpu", "precision": "fp32",
               "compile": name == "torch-compile", "threads": config.threads}
    return ("tier" if config.serving == "tier" else "engine"), options


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def fused_method(ckpt: Checkpoint, net: Backend) -> tuple[Backend, MergerConfig]:
    """The fused spotter over the network's backend, with the settings and merger stored in the
    checkpoint's ``"fused"`` entry (``FusedConfig`` defaults and the network's merger where it
    has none)."""
    from .fused import FusedBackend, FusedConfig

    entry = ckpt.meta.get("fused") or {}
    try:
        cfg = FusedConfig.from_dict(entry.get("settings", {}))
        merger = merger_config(ckpt) if "merger" not in entry else MergerConfig.from_dict(
            {**entry["merger"], "window_frames": ckpt.config.window_frames})
        return FusedBackend(net, cfg), merger
    except (ValueError, ConfigError) as e:
        raise LoadError(f"the fused settings in {ckpt.path or 'the checkpoint'}: {e}") from e


def latency_entry(ckpt: Checkpoint, latency: str = "accurate") -> dict[str, Any]:
    """Where the merger and stride of ``latency`` are stored in the checkpoint's JSON: the
    top level for ``accurate``, the ``"quick"`` entry for ``quick`` (LoadError where it has
    none)."""
    if latency not in LATENCIES:
        raise LoadError(f"unknown latency {latency!r}; choose one of {', '.join(LATENCIES)}")
    if latency == "accurate":
        return ckpt.meta
    entry = ckpt.meta.get(latency)
    if not isinstance(entry, dict) or "merger" not in entry:
        raise LoadError(f"{ckpt.path or 'the checkpoint'} has no {latency} merger (fit one with "
                        "scripts/latency_sweep.py --quick 4:4), or drop --latency")
    return entry


def stride_of(ckpt: Checkpoint, requested: int | None = None, latency: str = "accurate") -> int:
    """The window stride in slots: ``requested``, else the checkpoint's ``stride_frames`` for
    ``latency`` (what that merger was fitted at), else ``DEFAULT_STRIDE_FRAMES``; from 1 to a
    window."""
    stride = requested
    if stride is None:
        stride = int(latency_entry(ckpt, latency).get("stride_frames", DEFAULT_STRIDE_FRAMES))
    try:
        check_stride(stride, ckpt.config.window_frames)
    except ValueError as e:
        raise LoadError(str(e)) from e
    return stride


def check_stride(stride_frames: int, window_frames: int) -> None:
    """ValueError unless windows every ``stride_frames`` slots score every slot: 1 to a
    window."""
    if stride_frames < 1:
        raise ValueError(f"the window stride must be >= 1 slot, got {stride_frames}")
    if stride_frames > window_frames:
        raise ValueError(f"--stride {stride_frames} is longer than a window ({window_frames} "
                         "slots): slots between windows would never be scored")


def load_runtime(
    config: RuntimeConfig,
    profile: ThresholdProfile | None = None,
    placement: Placement | None = None,
) -> Runtime:
    """Checkpoint -> backend (here, or where ``placement`` puts it) -> merger config ->
    profile, with the shared defaults."""
    return Runtime.from_checkpoint(load_checkpoint(config.checkpoint), config, profile, placement)


def load_checkpoint(path: Path | str | None = None) -> Checkpoint:
    """The checkpoint at ``path`` (the shipped one if None)."""
    from . import checkpoint as ckpt_mod

    try:
        return ckpt_mod.load(path)
    except ckpt_mod.CheckpointError as e:
        hint = " (pass --checkpoint, or train one with fesnet-train)" if path is None else ""
        raise LoadError(f"{e}{hint}") from e


def build_backend(
    name: str, ckpt: Checkpoint, threads: int | None = None, **options: Any
) -> Backend:
    """The backend ``name`` (or ``"auto"``) over ``ckpt``'s network."""
    from .backends import make_backend

    if name not in BACKEND_CHOICES:
        raise LoadError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    wanted = "onnx" if name == AUTO else name
    opts = dict(options)
    if name == AUTO and _cuda_available():  # a GPU machine: the network on its GPU
        wanted = "torch"
        opts.setdefault("device", "cuda")
    if threads is not None and wanted in _THREADED:
        opts["threads"] = threads
    try:
        return make_backend(wanted, ckpt, **opts)
    except Exception as e:  # a runtime that cannot load raises import/runtime errors of many kinds
        if name != AUTO:
            if isinstance(e, (ValueError, RuntimeError, ImportError)):
                raise LoadError(f"backend {name}: {e} (try --backend torch)") from e
            raise
        log.warning("ONNX Runtime backend unavailable (%s: %s); using torch", type(e).__name__, e)
    fallback = {k: v for k, v in opts.items() if k in ("threads", "device")}
    return make_backend("torch", ckpt, **fallback)


def merger_config(
    ckpt: Checkpoint, path: Path | str | None = None, latency: str = "accurate"
) -> MergerConfig:
    """The merger settings: ``path`` (JSON) if given, else the checkpoint's for ``latency``,
    else the defaults; ``window_frames`` always the model's."""
    t = ckpt.config.window_frames
    if path is None:
        data: Any = ckpt.merger if latency == "accurate" else latency_entry(ckpt, latency)["merger"]
        where = f"the {latency} merger settings in {ckpt.path or 'the checkpoint'}"
    else:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise LoadError(f"cannot read merger config {path}: {e}") from e
        where = f"merger config {path}"
    if isinstance(data, dict) and data.get("window_frames", t) != t:
        raise LoadError(
            f"{where} sets window_frames {data['window_frames']}, but the model's windows are "
            f"{t} frames (the checkpoint owns the window length: remove the key)"
        )
    try:
        return MergerConfig.from_dict({**data, "window_frames": t} if isinstance(data, dict)
                                      else data)
    except ConfigError as e:
        raise LoadError(f"{where}: {e}") from e


def add_runtime_arguments(
    parser: argparse.ArgumentParser,
    *,
    backend: str = AUTO,
    backends: tuple[str, ...] = BACKEND_CHOICES,
    threads: int | None = 1,
    method: bool = True,
) -> None:
    """The command-line spelling of :class:`RuntimeConfig`, the same in every program
    (``method=False``: the program defines ``--method`` itself)."""
    parser.add_argument("--checkpoint", type=Path,
                        help="weights .pt, its .json beside it (default: the shipped checkpoint)")
    parser.add_argument("--backend", choices=backends, default=backend,
                        help="inference backend (auto: ONNX Runtime, or torch where it cannot "
                        "run)")
    parser.add_argument("--threads", type=int_range(1, 256), default=threads,
                        help="intra-op threads of the torch / ONNX Runtime backend")
    parser.add_argument("--merger-config", type=Path,
                        help="merger settings JSON (default: the checkpoint's settings)")
    parser.add_argument("--stride", type=int_range(1), default=None,
                        help="score a window every STRIDE 60 Hz slots, at most a window (default: "
                        f"the checkpoint's, else {DEFAULT_STRIDE_FRAMES})")
    if method:
        parser.add_argument("--method", choices=METHODS, default="fesnet",
                            help="fesnet: the network; landmarks: the training-free landmark "
                            "peer (no weights; a fallback and the bar the network must clear); "
                            "fused: the network's evidence checked against the landmarks")
    parser.add_argument("--latency", choices=LATENCIES, default="accurate",
                        help="accurate: the checkpoint's merger (a final event about 0.3 s after "
                        "an expression ends); quick: its quick merger (about 0.15 s, fewer "
                        "events right; README, Model card)")
    parser.add_argument("--peer-k", type=float_range(0.0, lo_open=True), default=None,
                        help="the landmark peer's robust-z threshold (default 3.5)")
    parser.add_argument("--serving", choices=SERVING, default=AUTO,
                        help="how streams reach the network: engine (each stream's features in "
                        "its own ring), tier (features where the model runs, every stream's "
                        "crops and windows in shared calls), auto (the tier on a GPU or a "
                        "cluster, the engine on a CPU)")


def runtime_config(args: argparse.Namespace, **backend_options: Any) -> RuntimeConfig:
    """The :class:`RuntimeConfig` of arguments added by :func:`add_runtime_arguments`."""
    return RuntimeConfig(
        checkpoint=args.checkpoint,
        backend=args.backend,
        threads=args.threads,
        merger_config=args.merger_config,
        stride_frames=args.stride,
        backend_options=backend_options,
        method=args.method if getattr(args, "method", None) in METHODS else "fesnet",
        peer_k=args.peer_k,
        serving=getattr(args, "serving", AUTO),
        latency=getattr(args, "latency", "accurate"),
    )
