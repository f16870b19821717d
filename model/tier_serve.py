"""The model tier as a service: streams named by key send their own requests, one tier step serves
them all (in this process: realtime/tier_engine.py; on a Ray replica: realtime/cluster/serving.py).

A :class:`TierRequest` is what one stream sends for one step, and what crosses a wire: its key
(the stream and segment, unique per tier), its new slots (numbers, which carry a crop, the crops
as uint8, the geometry vectors) and its windows' first slots; :class:`TierReply` brings the
windows' probabilities back. :meth:`TierService.serve` takes the requests of any number of
streams, maps keys to the tier's stream handles (opening one on first sight), and runs them as
one :meth:`~.tier.ModelTier.step`: every stream's new crops in one encode call, every window in
one window call.

What holds:

- *One bad request fails alone.* Each request is placed against the tier's table on its own
  before the shared step (``StreamTable.plan``, which writes nothing); a request that cannot be
  placed gets its error in its reply and the others are served.
- *Lost, not wrong.* A request whose first slot repeats the slot before it (no crop), while this
  tier does not hold that slot, continues a ring the tier does not have (a replica restarted, or
  the stream was routed elsewhere): it is not applied, its reply says ``lost`` and its windows
  are missing. The caller re-sends a window's slots from its own ring, the first with its crop
  (realtime/tier_engine.py: ``TierScoring``), and gets the probabilities the lost ring would
  have given. A window whose slots are not all held is missing too (``ModelTier``'s rule).
- *Keys are immutable.* A key's slot ``s`` always carries the same crop and vector (a new
  segment is a new key), so a re-sent or repeated request, or slots held from before, can never
  mix two different frames into one window.
- *Bounded.* ``release`` frees a key's ring block; when every block is taken, the block used
  least recently is freed for the newcomer (its stream, if still alive, finds its windows
  missing and rebuilds).

Not thread-safe, as the tier: one thread serves a service (a per-tick batcher).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .tier import ModelTier, TierBatch, TierError, TierFull


@dataclass(frozen=True)
class TierRequest:
    """One stream's new slots and windows for one step (``TierBatch``'s fields for one stream)."""

    key: str
    slots: np.ndarray  # (n,) int64, consecutive
    has_crop: np.ndarray  # (n,) bool
    crops: np.ndarray  # (m, H, W, 3) uint8, one per slot with a crop, in order
    geom: np.ndarray | None  # (n, G) float32, or None for a network without geometry
    window_starts: np.ndarray  # (b,) int64
    release: tuple[str, ...] = ()
    """Keys the sender is done with (ended segments), freed before this request is served."""

    @property
    def nbytes(self) -> int:
        """What the request weighs on a wire (its arrays, raw, and the keys' characters)."""
        arrays = [self.slots, self.has_crop, self.crops, self.window_starts]
        arrays += [] if self.geom is None else [self.geom]
        keys = len(self.key) + sum(len(k) for k in self.release)
        return int(sum(a.nbytes for a in arrays)) + keys

    def batch(self, handle: int, image_size: int) -> TierBatch:
        return TierBatch.of_stream(handle, self.slots, self.crops, has_crop=self.has_crop,
                                   geom=self.geom, window_starts=self.window_starts,
                                   image_size=image_size)


@dataclass(frozen=True)
class TierReply:
    """Probabilities (b, T, 3) float32 of the request's windows (NaN rows where ``missing``);
    ``lost``: the request's slots continued a ring this tier does not hold and were not applied;
    ``error``: why the request could not be placed at all (nothing of it was applied)."""

    probs: np.ndarray
    missing: np.ndarray
    lost: bool = False
    error: str | None = None

    @property
    def nbytes(self) -> int:
        return int(self.probs.nbytes + self.missing.nbytes)


@dataclass
class ServiceCounts:
    """What a service has done (totals)."""

    requests: int = 0
    steps: int = 0
    lost: int = 0
    evicted: int = 0
    errors: int = 0
    by_step: collections.Counter[int] = field(default_factory=collections.Counter)
    """Steps by the number of requests they served."""


class TierService:
    """Keys -> stream handles of one :class:`~.tier.ModelTier`, requests -> shared steps."""

    def __init__(self, tier: ModelTier) -> None:
        self.tier = tier
        self.counts = ServiceCounts()
        self._handles: collections.OrderedDict[str, int] = collections.OrderedDict()

    @property
    def window_frames(self) -> int:
        return self.tier.window_frames

    @property
    def streams(self) -> int:
        """Keys holding a ring block now."""
        return len(self._handles)

    def release(self, keys: Sequence[str]) -> None:
        for key in keys:
            h = self._handles.pop(key, None)
            if h is not None:
                self.tier.close(h)

    def serve(self, requests: Sequence[TierRequest]) -> list[TierReply]:
        """Each request's reply, in order. Requests of one key are served in order, one shared
        step per round (a key may appear once a step)."""
        replies: list[TierReply | None] = [None] * len(requests)
        for r in requests:
            self.release(r.release)
        pending = list(range(len(requests)))
        while pending:
            seen: set[str] = set()
            now, later = [], []
            for i in pending:
                (later if requests[i].key in seen else now).append(i)
                seen.add(requests[i].key)
            for i, reply in zip(now, self._step([requests[i] for i in now]), strict=True):
                replies[i] = reply
            pending = later
        self.counts.requests += len(requests)
        return [r for r in replies if r is not None]

    def _handle(self, key: str, busy: set[str]) -> int:
        """The key's handle; a new key takes a free block, else the least recently used one's
        (never one of ``busy``, the keys of the step being put together: TierFull then)."""
        h = self._handles.get(key)
        if h is not None:
            self._handles.move_to_end(key)
            return h
        try:
            h = self.tier.open(key)
        except TierFull:
            oldest = next(iter(self._handles), None)
            if oldest is None or oldest in busy:
                raise
            self.tier.close(self._handles.pop(oldest))
            self.counts.evicted += 1
            h = self.tier.open(key)
        self._handles[key] = h
        return h

    def _step(self, requests: Sequence[TierRequest]) -> list[TierReply]:
        """Requests of distinct keys as one tier step."""
        t, size = self.tier.window_frames, self.tier.image_size
        replies: list[TierReply | None] = [None] * len(requests)
        batches, placed = [], []
        busy: set[str] = set()
        for i, r in enumerate(requests):
            if len(r.slots) == 0 and len(r.window_starts) == 0:  # releases only
                replies[i] = _missing(0, t)
                continue
            try:
                h = self._handle(r.key, busy)
            except TierFull as e:
                self.counts.errors += 1
                replies[i] = _missing(len(r.window_starts), t, error=str(e))
                continue
            busy.add(r.key)
            if self._continues_lost_ring(h, r):
                self.counts.lost += 1
                replies[i] = _missing(len(r.window_starts), t, lost=True)
                self._free_if_empty(r.key)
                continue
            batch = r.batch(h, size)
            try:
                self.tier.table.plan(batch)  # writes nothing: a bad request fails alone
            except TierError as e:
                self.counts.errors += 1
                replies[i] = _missing(len(r.window_starts), t, error=str(e))
                self._free_if_empty(r.key)
                continue
            batches.append(batch)
            placed.append(i)
        if batches:
            result = self.tier.step(TierBatch.concat(batches))
            self.counts.steps += 1
            self.counts.by_step[len(batches)] += 1
            at = 0
            for i, batch in zip(placed, batches, strict=True):
                b = batch.n_windows
                replies[i] = TierReply(result.probs[at : at + b], result.missing[at : at + b])
                at += b
        return [r for r in replies if r is not None]

    def _free_if_empty(self, key: str) -> None:
        """A key whose request was not applied and which holds nothing keeps no block."""
        first, end = self.tier.held(self._handles[key])
        if first == end:
            self.release([key])

    def _continues_lost_ring(self, handle: int, request: TierRequest) -> bool:
        """The request's first slot repeats the slot before it, which this tier does not hold."""
        if len(request.slots) == 0 or bool(request.has_crop[0]):
            return False
        first, end = self.tier.held(handle)
        prev = int(request.slots[0]) - 1
        return not first <= prev < end


def _missing(b: int, t: int, *, lost: bool = False, error: str | None = None) -> TierReply:
    return TierReply(np.full((b, t, 3), np.nan, np.float32), np.ones(b, bool), lost, error)
