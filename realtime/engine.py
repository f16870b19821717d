"""The streaming engine: which windows to score, and scoring them in one batch-shaped call.

:class:`WindowScheduler` yields exactly the window starts of
:func:`fesnet.model.inference.window_starts` as slots arrive: ``0, s, 2s, ...`` as soon as each
window's last slot is in the ring, and at the end of the stream the tail window flush with the end.
That, the same backend functions and the same merger are why streaming equals offline.

:class:`Engine` wraps a backend (``encode`` per frame, ``window`` per batch of windows). ``step``
takes ready windows from any number of streams and scores them in one ``backend.window`` call,
so several cameras can share the model (and the model tier can move to a batching server as
just another backend). ``mode="naive"`` re-encodes all 32 crops of every window, the baseline of
the cached-vs-naive benchmark.

Per-slot arrays are named: the encoder's outputs (``ENCODER_OUTPUTS``) are what the ring caches,
and ``Engine.window_inputs`` lists the ring arrays the window head takes, in ``backend.window``'s
order: ``WINDOW_INPUTS``, plus ``GEOMETRY`` (the geometry channel, model/geometry.py) when the
backend reads one.
Each stream scores its windows through its own :class:`EngineScoring` (``open_stream``): here
the window's arrays are views into the stream's ring, handed to ``step``. A
:class:`~.tier_engine.TierEngine` opens streams the same way, whose features live on the model
tier instead.
The engine keeps counts, not timings: timings are per stream (``Spotter.stats``), and one engine
serves many streams.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fesnet.model.backends import Backend
from fesnet.model.geometry import GEOMETRY_DIMS, GeometryConfig

from .ring import FeatureRing, SlotArray
from .types import WindowRequest

ENGINE_MODES = ("cached", "naive")
ENCODER_OUTPUTS = ("x_prime", "x_atten")
WINDOW_INPUTS = ("x_prime", "x_atten")
GEOMETRY = "geom"
CROPS = "crops"
FRESH = "fresh"  # on the model tier (tier_engine.py): the slot shows a new crop
CROP_SHAPE = (112, 112, 3)


class WindowScheduler:
    """Window starts for a stream whose slots arrive one by one."""

    def __init__(self, window_frames: int, stride_frames: int) -> None:
        if stride_frames < 1:
            raise ValueError(f"stride_frames must be >= 1, got {stride_frames}")
        if window_frames < 1:
            raise ValueError(f"window_frames must be >= 1, got {window_frames}")
        self.window_frames = window_frames
        self.stride_frames = stride_frames
        self.last_start: int | None = None

    def reset(self) -> None:
        self.last_start = None

    def on_slots(self, n_slots: int) -> list[int]:
        """Starts that became ready now that ``n_slots`` slots exist (call after every append)."""
        t, s = self.window_frames, self.stride_frames
        ready: list[int] = []
        nxt = 0 if self.last_start is None else self.last_start + s
        while nxt + t <= n_slots:
            ready.append(nxt)
            self.last_start = nxt
            nxt += s
        return ready

    def on_end(self, n_slots: int) -> list[int]:
        """The tail window flush with the end of the stream, if the regular ones missed it."""
        tail = n_slots - self.window_frames
        if tail < 0 or self.last_start == tail:
            return []
        self.last_start = tail
        return [tail]


class Engine:
    def __init__(self, backend: Backend, window_frames: int, mode: str = "cached") -> None:
        """``window_frames``: the model's (its checkpoint owns it: ``Runtime.window_frames``)."""
        if mode not in ENGINE_MODES:
            raise ValueError(f"engine mode must be one of {ENGINE_MODES}, got {mode!r}")
        self.backend = backend
        self.window_frames = window_frames
        self.mode = mode
        self.geometry: GeometryConfig | None = getattr(backend, "geometry", None)
        self.window_inputs = WINDOW_INPUTS + ((GEOMETRY,) if self.geometry is not None else ())
        self.encoded_frames = 0  # frames through the encoder (naive mode: 32 per window)
        self.windows = 0
        self._encoder_shapes: tuple[tuple[int, ...], ...] | None = None

    @property
    def needs_crops(self) -> bool:
        return self.mode == "naive"

    def encode(self, crops_u8: np.ndarray) -> dict[str, np.ndarray]:
        """(N, 112, 112, 3) uint8 RGB crops -> per-frame features by name, each (N, ...)."""
        outputs = self.backend.encode(crops_u8)
        self.encoded_frames += len(crops_u8)
        return dict(zip(ENCODER_OUTPUTS, outputs, strict=True))

    def slot_arrays(self) -> dict[str, SlotArray]:
        """What the ring stores per slot for this engine: the encoder's per-frame outputs (shapes
        from one encode of a blank crop), the geometry vector when the backend reads one, plus
        the crop itself in naive mode."""
        if self._encoder_shapes is None:
            outputs = self.backend.encode(np.zeros((1, *CROP_SHAPE), np.uint8))
            self._encoder_shapes = tuple(tuple(o.shape[1:]) for o in outputs)
        arrays = {
            name: SlotArray(shape) for name, shape in zip(ENCODER_OUTPUTS, self._encoder_shapes,
                                                          strict=True)
        }
        if self.geometry is not None:
            arrays[GEOMETRY] = SlotArray((GEOMETRY_DIMS,))
        if self.needs_crops:
            arrays[CROPS] = SlotArray(CROP_SHAPE, np.uint8)
        return arrays

    def open_stream(self, stream: str) -> EngineScoring:
        """How one stream scores its windows (the ring holds its features)."""
        return EngineScoring(self, stream)

    def take_notices(self) -> list[str]:
        """Messages the backend has for the calling thread's stream (a remote model tier's
        gaps: realtime/cluster/backend.py); in-process backends have none."""
        take = getattr(self.backend, "take_notices", None)
        return take() if take is not None else []

    def step(self, requests: Sequence[WindowRequest]) -> list[np.ndarray]:
        """Score ready windows from any streams in one backend call -> one (T, 3) per request."""
        if not requests:
            return []
        if self.mode == "naive":
            crops = np.stack([_need_crops(r.features) for r in requests])  # (B, T, 112, 112, 3)
            b, t = crops.shape[:2]
            encoded = self.encode(crops.reshape(b * t, *crops.shape[2:]))
            inputs = [encoded[k].reshape(b, t, *encoded[k].shape[1:]) for k in WINDOW_INPUTS]
            if self.geometry is not None:
                inputs.append(np.stack([r.features[GEOMETRY] for r in requests]))
        elif len(requests) == 1:
            inputs = [requests[0].features[k][None] for k in self.window_inputs]  # (1, T, ...)
        else:
            inputs = [np.stack([r.features[k] for r in requests]) for k in self.window_inputs]
        probs = self.backend.window(*inputs)  # (B, T, 3)
        self.windows += len(requests)
        return [np.asarray(p, np.float32) for p in probs]


class EngineScoring:
    """One stream's windows, scored from its ring by the shared :class:`Engine`."""

    def __init__(self, engine: Engine, stream: str) -> None:
        self.engine = engine
        self.stream = stream

    def score(self, start: int, ring: FeatureRing) -> np.ndarray:
        """The window starting at ``start`` (its arrays: views into ``ring``) -> (T, 3)."""
        t = self.engine.window_frames
        (probs,) = self.engine.step([WindowRequest(self.stream, start, ring.window(start, t))])
        return probs

    def take_notices(self) -> list[str]:
        return self.engine.take_notices()

    def reset(self) -> None:
        """A new segment: nothing is kept here."""

    def close(self) -> None:
        """The stream ended: nothing is kept here."""


def _need_crops(features: Mapping[str, np.ndarray]) -> np.ndarray:
    crops = features.get(CROPS)
    if crops is None:
        raise ValueError("naive engine mode needs the window's crops in the request")
    return crops
