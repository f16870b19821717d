"""What one benchmark run measures (the command line's settings, as one frozen dataclass)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

ALIGN_MODES = ("before", "every-frame", "periodic", "near-only")
"""How the align thread looks for other faces (realtime/bench/align.py times each)."""


@dataclass(frozen=True)
class BenchConfig:
    checkpoint: str | None = None
    """Weights to load (None: the shipped checkpoint, unless ``model_config`` is set)."""
    model_config: str | None = None
    """Benchmark random weights of this FESNet config ("tiny", "small", "paper") instead."""
    backends: tuple[str, ...] = ("torch",)
    threads: tuple[int, ...] = (1,)
    streams: tuple[int, ...] = (1, 2)
    stride_frames: int | None = None
    """Window stride in slots (None: the checkpoint's, what fesnet-spot runs; 8 for random
    weights)."""
    seconds: float = 2.0
    """Time per measured item (interleaved items share it)."""
    flow: tuple[str, ...] = ("farneback", "tvl1")
    video: str | None = None
    """Clip for the end-to-end pipeline runs (None: skip them)."""
    pace: str = "fast"
    e2e_backends: tuple[str, ...] | None = None
    align_modes: tuple[str, ...] = ("before", "every-frame", "periodic")
    """Aligners to time against each other on ``video`` (the first is the reference; names of
    ``fesnet.realtime.bench.config.ALIGN_MODES``)."""
    e2e_align: str = "periodic"
    """How the pipeline runs look for other faces."""
    profiles: tuple[str, ...] = ("before", "now")
    """Settings the live runs compare (names of ``fesnet.realtime.bench.profiles.PROFILES``)."""
    lag_repeats: int = 0
    """Rounds of live-paced replays per profile for the expression lag (0: skip)."""
    lag_video: str | None = None
    """Clip for the expression lag (None: ``video``)."""
    capacity_levels: tuple[int, ...] = ()
    """Numbers of remote cameras to serve, per profile (empty: skip)."""
    capacity_seconds: float = 10.0
    """Measured time per capacity level (after a warm-up)."""
    capacity_serving: tuple[str, ...] = ()
    """How the capacity run's sessions reach the model, each ``SERVING[:BACKEND]`` (``engine``
    or ``tier``, as the loader's ``--serving``; the backend by default the live runs'), every one
    served at every level, taking turns (empty: the live backend's engine)."""
    device: str = "cpu"
    precision: str = "fp16"
    calibration: str | None = None
    cache_dir: str | None = None
    tier: bool = False
    """Benchmark the model tier only (realtime/bench/tier.py): ``streams`` are the capacity
    levels, ``tier_compare`` the stream counts run against today's per-stream engine."""
    tier_backend: str = "auto"
    tier_precision: str = "auto"
    tier_compare: tuple[int, ...] = (1, 2, 4, 8)
    tier_max_bucket: int | None = None
    tier_compile: bool = False
    tier_slots: int = 240
    """Slots of each synthetic stream the comparison cycles through."""

    def __post_init__(self) -> None:
        from .profiles import PROFILES

        stride = 1 if self.stride_frames is None else self.stride_frames
        if stride < 1 or min(self.streams) < 1 or min(self.threads) < 1:
            raise ValueError("--stride, --streams and --threads must be >= 1")
        for mode in (*self.align_modes, self.e2e_align):
            if mode not in ALIGN_MODES:
                raise ValueError(f"unknown align mode {mode!r}; choose from {list(ALIGN_MODES)}")
        for name in self.profiles:
            if name not in PROFILES:
                raise ValueError(f"unknown profile {name!r}; choose from {list(PROFILES)}")
        for item in self.capacity_serving:
            if item.partition(":")[0] not in ("engine", "tier"):
                raise ValueError(f"--capacity-serving {item!r}: engine or tier, then :BACKEND")
        if self.lag_repeats < 0 or any(n < 1 for n in self.capacity_levels):
            raise ValueError("--lag-repeats must be >= 0 and --capacity levels >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
