"""Inputs and drivers for the model tier's checks and benchmarks (no mediapipe: synthetic crops).

- :func:`synthetic_streams`: per stream, aligned-crop-like frames (a shipped real face, moving,
  with a per-stream look), 60 FPS or 30 FPS (every frame fills two 60 Hz slots, the second a
  repeat) and, for a network with a geometry channel, geometry vectors with expression-like
  bumps (displacement of a few landmark groups rising and falling over 0.2-3 s).
- :func:`tier_windows`: many streams streamed through one :class:`~fesnet.model.tier.ModelTier`
  at once, one step per tick, windows scheduled by the spotter's own ``WindowScheduler``.
- :func:`engine_windows`: one stream through today's per-stream path (``Engine`` over a
  backend, ``FeatureRing``, encoder once per distinct frame), the reference the tier must equal.
- :class:`TickLoad`: the steady load of N cameras at 60 FPS for capacity runs: every tick each
  stream adds one slot with a new crop and every ``stride``-th tick a window (streams staggered,
  so each tick carries N / stride windows); built with array operations, so the host work of
  making a tick is not what is measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from fesnet.model.geometry import GEOMETRY_DIMS, GROUP_NAMES, REGIONS
from fesnet.model.tier import ModelTier, TierBatch

from ..engine import GEOMETRY, Engine, WindowScheduler
from ..ring import FeatureRing
from ..types import WindowRequest
from .timing import face_crops

MIN_STREAMS_PER_COPY_THREAD = 256  # below this a thread's share is too small to be worth it


@dataclass(frozen=True)
class SyntheticStream:
    """``frames`` (m, H, W, 3) uint8 distinct frames in order; ``has_crop`` (n,) which slots show
    a new frame (the others repeat the previous slot's); ``geom`` (n, G) float32 or None."""

    frames: np.ndarray
    has_crop: np.ndarray
    geom: np.ndarray | None

    @property
    def n_slots(self) -> int:
        return len(self.has_crop)

    def slot_frames(self) -> np.ndarray:
        """(n, H, W, 3): every slot's frame (what offline ``spot_video`` is given)."""
        return self.frames[np.cumsum(self.has_crop) - 1]


def synthetic_geometry(n_slots: int, rng: np.random.Generator) -> np.ndarray:
    """(n, GEOMETRY_DIMS) float32 laid out as ``geometry.GeometryTracker`` returns it: group
    displacements (IOD), region RMS, top-3 mean, region z, overall z. Expressions: bumps of
    0.2-0.5 s (small) and 0.6-3 s (larger), at least 1 s apart, over sensor-like noise."""
    n_groups = len(GROUP_NAMES)
    amp = np.zeros(n_slots)
    disp_dir = np.zeros((n_slots, n_groups, 2))
    t = int(rng.integers(40, 90))
    while True:
        long = rng.random() < 0.5
        length = int(rng.integers(36, 180) if long else rng.integers(12, 30))
        if t + length + 60 > n_slots:
            break
        ramp = np.sin(np.linspace(0, np.pi, length)) ** 2
        amp[t : t + length] = ramp * (rng.uniform(0.05, 0.1) if long else rng.uniform(0.02, 0.04))
        d = np.zeros((n_groups, 2))
        moved = rng.choice(n_groups, size=3, replace=False)
        d[moved] = rng.normal(size=(3, 2))
        disp_dir[t : t + length] = d / np.linalg.norm(d)
        t += length + int(rng.integers(60, 150))
    disp = amp[:, None, None] * disp_dir * np.sqrt(3) + rng.normal(0, 0.003, (n_slots, n_groups, 2))
    sq = (disp**2).sum(axis=2)  # (n, G)
    region = np.zeros((len(REGIONS), n_groups))
    for r, (_, groups) in enumerate(REGIONS):
        region[r, [GROUP_NAMES.index(g) for g in groups]] = 1.0 / len(groups)
    rms = np.sqrt(sq @ region.T)
    top3 = np.sqrt(np.sort(sq, axis=1)[:, -3:]).mean(axis=1, keepdims=True)
    rms = np.concatenate([rms, top3], axis=1)
    z = (rms - 0.004) / 0.003
    out = np.concatenate([disp.reshape(n_slots, -1), rms, z], axis=1).astype(np.float32)
    assert out.shape[1] == GEOMETRY_DIMS
    return out


def synthetic_streams(
    n_streams: int,
    n_slots: int,
    geometry: bool,
    image_size: int = 112,
    seed: int = 0,
    fps: Sequence[int] = (60, 30),
) -> list[SyntheticStream]:
    """``n_streams`` different streams of ``n_slots`` slots; stream i runs at ``fps[i % len]``."""
    rng = np.random.default_rng(seed)
    base = face_crops(n_slots + 7 * n_streams, image_size, seed)
    out = []
    for i in range(n_streams):
        every = 1 if fps[i % len(fps)] >= 60 else 2
        has_crop = np.arange(n_slots) % every == 0
        gain = 0.75 + 0.5 * rng.random()
        frames = base[7 * i : 7 * i + int(has_crop.sum())].astype(np.float32) * gain
        frames = np.clip(frames + rng.normal(0, 3, frames.shape), 0, 255).astype(np.uint8)
        geom = synthetic_geometry(n_slots, rng) if geometry else None
        out.append(SyntheticStream(frames, has_crop, geom))
    return out


def _stream_batch(tier: ModelTier, handle: int, stream: SyntheticStream, first: int, n: int,
                  starts: Sequence[int]) -> TierBatch:
    """Slots ``[first, first + n)`` of ``stream`` and windows at ``starts``."""
    hc = stream.has_crop[first : first + n]
    done = int(stream.has_crop[:first].sum())
    crops = stream.frames[done : done + int(hc.sum())]
    geom = None if stream.geom is None else stream.geom[first : first + n]
    return TierBatch.of_stream(handle, np.arange(first, first + n), crops, has_crop=hc,
                               geom=geom, window_starts=starts,
                               image_size=tier.image_size)


def tier_windows(
    tier: ModelTier,
    streams: Sequence[SyntheticStream],
    stride: int,
    slots_per_tick: int | None = None,
) -> list[tuple[list[int], np.ndarray]]:
    """Every stream through one tier, all in the same steps: each tick, every stream adds its
    next frame's slots (1 at 60 FPS, 2 at 30 FPS; or ``slots_per_tick`` slots, whatever they
    hold) and asks for the windows they made ready (the tail window at its end). Per stream:
    (starts, probs (W, T, 3))."""
    t = tier.window_frames
    handles = [tier.open(i) for i in range(len(streams))]
    scheds = [WindowScheduler(t, stride) for _ in streams]
    pos = [0] * len(streams)
    got: list[tuple[list[int], list[np.ndarray]]] = [([], []) for _ in streams]
    while True:
        parts, owners = [], []
        for i, (s, h) in enumerate(zip(streams, handles, strict=True)):
            if pos[i] > s.n_slots:
                continue
            k = slots_per_tick or (1 if s.has_crop.all() else 2)
            n = min(k, s.n_slots - pos[i])
            end = pos[i] + n
            starts = scheds[i].on_slots(end) if n else scheds[i].on_end(s.n_slots)
            parts.append(_stream_batch(tier, h, s, pos[i], n, starts))
            owners += [i] * len(starts)
            pos[i] = end if n else s.n_slots + 1
        if not parts:
            break
        batch = TierBatch.concat(parts)
        result = tier.step(batch)
        if result.missing.any():
            raise RuntimeError("the tier lost slots of a window it was given in order")
        for i, start, p in zip(owners, batch.window_starts, result.probs, strict=True):
            got[i][0].append(int(start))
            got[i][1].append(p)
    for h in handles:
        tier.close(h)
    return [(st, np.stack(ps) if ps else np.zeros((0, t, 3), np.float32)) for st, ps in got]


def engine_windows(
    engine: Engine, stream: SyntheticStream, stride: int
) -> tuple[list[int], np.ndarray]:
    """One stream through today's per-stream path: encoder once per distinct frame (batch 1),
    the ring, the scheduler, one ``Engine.step`` per window. (starts, probs (W, T, 3))."""
    t = engine.window_frames
    ring = FeatureRing(t + stride + 2, engine.slot_arrays())
    sched = WindowScheduler(t, stride)
    starts, probs = [], []
    runner = EngineStream(engine, ring, sched, stream)
    for slot in range(stream.n_slots):
        for start, p in runner.add(slot):
            starts.append(start)
            probs.append(p)
    for start in sched.on_end(stream.n_slots):
        starts.append(start)
        probs.append(engine.step([WindowRequest("0", start, ring.window(start, t))])[0])
    return starts, np.stack(probs) if probs else np.zeros((0, t, 3), np.float32)


class EngineStream:
    """One stream's per-slot work on today's path (what ``SlotFeatures`` and ``Spotter`` do)."""

    def __init__(self, engine: Engine, ring: FeatureRing, sched: WindowScheduler,
                 stream: SyntheticStream) -> None:
        self.engine, self.ring, self.sched, self.stream = engine, ring, sched, stream
        self._frame_of = np.cumsum(stream.has_crop) - 1  # each slot's frame
        self._last: dict[str, np.ndarray] = {}

    def add(self, slot: int) -> list[tuple[int, np.ndarray]]:
        """Slot ``slot % n_slots`` of the stream appended as the ring's next slot; the windows
        it made ready, scored one at a time."""
        s = self.stream
        i = slot % s.n_slots
        if s.has_crop[i] or not self._last:
            encoded = self.engine.encode(s.frames[self._frame_of[i]][None])
            self._last = {name: out[0] for name, out in encoded.items()}
        values = dict(self._last)
        if s.geom is not None:
            values[GEOMETRY] = s.geom[i]
        self.ring.append(values)
        t = self.engine.window_frames
        out = []
        for start in self.sched.on_slots(self.ring.n_slots):
            req = WindowRequest("0", start, self.ring.window(start, t))
            out.append((start, self.engine.step([req])[0]))
        return out


class TickLoad:
    """N cameras at 60 FPS on one tier (module docstring). ``pool`` crops and ``geom`` vectors
    are cycled; every stream's slot number is the tick number. ``copy_threads``: threads that
    write a tick's crops into the staging buffer, each a share of the streams (as an ingest
    that receives crops on several connections would; numpy releases the GIL while copying)."""

    def __init__(self, tier: ModelTier, n_streams: int, stride: int, pool: np.ndarray,
                 geom: np.ndarray | None, copy_threads: int = 1) -> None:
        self.tier, self.n, self.stride = tier, n_streams, stride
        self.pool, self.geom_pool = pool, geom
        self.handles = np.array([tier.open(("load", i)) for i in range(n_streams)], np.int64)
        self.phase = np.arange(n_streams) % stride
        self.tick = 0
        threads = max(1, min(copy_threads, n_streams // MIN_STREAMS_PER_COPY_THREAD))
        self._bounds = np.linspace(0, n_streams, threads + 1).astype(int)
        self.copy_threads = threads
        self._pool = ThreadPoolExecutor(threads, "tick-copy") if threads > 1 else None

    def batch(self) -> TierBatch:
        """The next tick's batch, its crops written into the tier's staging buffer (as an
        ingest receiving them would: plain copies, no temporary arrays)."""
        k, n, t = self.tick, self.n, self.tier.window_frames
        staging = self.tier.staging(n)
        if self._pool is None:
            copy_cycled(self.pool, k, staging)
        else:

            def part(a: int, b: int) -> None:
                copy_cycled(self.pool, k + a, staging[a:b])

            list(self._pool.map(part, self._bounds[:-1], self._bounds[1:]))
        idx = (np.arange(n) + k) % len(self.pool)
        geom = None if self.geom_pool is None else self.geom_pool[idx % len(self.geom_pool)]
        due = self.handles[(k - self.phase) % self.stride == 0] if k >= t - 1 else self.handles[:0]
        self.tick += 1
        return TierBatch(self.handles, np.full(n, k, np.int64), np.ones(n, bool), staging, geom,
                         due, np.full(len(due), k - t + 1, np.int64))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        for h in self.handles:
            self.tier.close(int(h))


def copy_cycled(pool: np.ndarray, first: int, out: np.ndarray) -> None:
    """``out[i] = pool[(first + i) % len(pool)]`` as a few contiguous block copies (``np.take``
    with ``out`` buffers the whole result in a temporary first: twice the memory traffic, and a
    fresh allocation's page faults, per call)."""
    n, m = len(out), len(pool)
    at, src = 0, first % m
    while at < n:
        cnt = min(n - at, m - src)
        out[at : at + cnt] = pool[src : src + cnt]
        at, src = at + cnt, 0
