"""Streams on the model tier: every stream's features live where the model runs, and the streams
of one process (or of one replica) share its calls.

:class:`TierEngine` is what a :class:`~.session.StreamModel` holds instead of an
:class:`~.engine.Engine` when the model tier serves its streams (the loader's ``serving``
setting: model/runtime.py). A stream's spotter then keeps no encoder features: its ring holds
per slot the aligned crop, whether the slot shows a new frame (``fresh``) and the geometry
vector (``TierEngine.slot_arrays``), and its :class:`TierScoring` sends each new slot once, when
a window needs it, as a :class:`~fesnet.model.tier_serve.TierRequest` (crops uint8, repeats
without a crop, vectors) and gets the window's probabilities back. The tier encodes each new
crop into that stream's ring on its own device and scores the window from it.

Where the requests go is a *transport*: :class:`SharedTier` in this process (the in-process
multi-source run, the viewers' hub), or a Ray replica the stream is pinned to
(realtime/cluster/tier.py). :class:`SharedTier` combines the requests of every stream's thread
into one :meth:`~fesnet.model.tier_serve.TierService.serve` call: a thread that finds the tier
idle serves everything waiting (its own request too) in one tier step, with every stream's new
crops in one encode call and every window in one window call; the others wait for their reply.
Nothing waits for a timer, so one stream alone is served at once, and streams that arrive while
a step runs share the next one.

What holds:

- *The same numbers.* The tier runs the network's deployable graphs, as every backend does; a
  stream's window probabilities equal its per-stream Engine's and offline ``spot_video``'s up to
  float summation order (CPU fp32), and its events are the same (tests/test_tier_engine.py).
- *Post-processing composes.* A backend that post-processes the network's probabilities (the
  fused spotter: ``model.backends.split_post``) has the tier compute the network's part and its
  ``post_window`` applied here, to the window's probabilities and the geometry vectors from the
  stream's own ring: the backend's own numbers.
- *Missing, not wrong.* A window the tier does not hold all the slots of (a replica lost or
  restarted, a ring block given to another stream) comes back missing; the stream re-sends that
  window's slots from its own ring (the first with its crop), gets the probabilities the lost
  ring would have given, and says so in a ``status`` event (:meth:`TierScoring.take_notices`).
  No window is skipped or scored twice, so no expression event is lost, wrong or duplicated.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any, Protocol

import numpy as np

from fesnet.model.backends import WindowPost
from fesnet.model.geometry import GEOMETRY_DIMS, GeometryConfig
from fesnet.model.tier import TierError
from fesnet.model.tier_serve import TierReply, TierRequest, TierService

from .engine import CROP_SHAPE, CROPS, FRESH, GEOMETRY
from .ring import FeatureRing, SlotArray

log = logging.getLogger(__name__)

MAX_REBUILDS = 3
"""Rebuilds of one window in a row before the stream fails (the tier keeps losing its ring)."""


class TierTransport(Protocol):
    """Where a stream's tier requests go and come back from."""

    name: str

    def step(self, request: TierRequest) -> TierReply: ...

    def take_notices(self) -> list[str]:
        """The calling thread's messages about the transport itself (calls re-sent)."""
        ...


class SharedTier:
    """The in-process transport: one :class:`~fesnet.model.tier_serve.TierService`, its
    requests from any number of threads combined into shared steps (module docstring).
    Thread-safe."""

    def __init__(self, service: TierService, name: str | None = None) -> None:
        self.service = service
        self.name = name or service.tier.name
        self._cond = threading.Condition()
        self._waiting: list[_Call] = []
        self._busy = False

    def step(self, request: TierRequest) -> TierReply:
        call = _Call(request)
        with self._cond:
            self._waiting.append(call)
            while self._busy and not call.done:
                self._cond.wait()
            if call.done:
                return call.result()
            self._busy = True
            calls, self._waiting = self._waiting, []
        replies: list[TierReply] | None = None
        error: BaseException | None = None
        try:
            replies = self.service.serve([c.request for c in calls])
        except BaseException as e:  # every waiting stream gets the error, none waits forever
            error = e
        with self._cond:
            for i, c in enumerate(calls):
                c.finish(None if replies is None else replies[i], error)
            self._busy = False
            self._cond.notify_all()
        return call.result()

    @property
    def waiting(self) -> int:
        """Requests waiting for the step under way."""
        with self._cond:
            return len(self._waiting)

    def take_notices(self) -> list[str]:
        return []


class _Call:
    def __init__(self, request: TierRequest) -> None:
        self.request = request
        self.done = False
        self._reply: TierReply | None = None
        self._error: BaseException | None = None

    def finish(self, reply: TierReply | None, error: BaseException | None) -> None:
        self._reply, self._error, self.done = reply, error, True

    def result(self) -> TierReply:
        if self._error is not None:
            raise self._error
        assert self._reply is not None
        return self._reply


class TierEngine:
    """The model tier as the engine of a :class:`~.session.StreamModel` (module docstring):
    what a stream's ring stores per slot, and each stream's :class:`TierScoring`. Thread-safe:
    streams on their own threads share it."""

    mode = "cached"
    needs_crops = False

    def __init__(
        self,
        transport: TierTransport,
        window_frames: int,
        geometry: GeometryConfig | None,
        *,
        post: WindowPost | None = None,
    ) -> None:
        self.transport = transport
        self.window_frames = window_frames
        self.geometry = geometry
        self.post = post
        self.name = f"the model tier ({transport.name})" + (" + post-processing" if post else "")
        self._lock = threading.Lock()
        self.encoded_frames = 0  # crops sent to the tier to encode
        self.windows = 0

    def slot_arrays(self) -> dict[str, SlotArray]:
        """Per slot: the crop, whether it is a new frame's, and the geometry vector when the
        network reads it."""
        arrays = {CROPS: SlotArray(CROP_SHAPE, np.uint8), FRESH: SlotArray((), np.bool_)}
        if self.geometry is not None:
            arrays[GEOMETRY] = SlotArray((GEOMETRY_DIMS,))
        return arrays

    def open_stream(self, stream: str) -> TierScoring:
        return TierScoring(self, stream)

    def count(self, encoded: int, windows: int) -> None:
        with self._lock:
            self.encoded_frames += encoded
            self.windows += windows


class TierScoring:
    """One stream's side of the tier: which of its slots the tier has, the key of its current
    segment, and the messages its stream should hear. Used by the stream's infer thread only."""

    def __init__(self, engine: TierEngine, stream: str) -> None:
        self.engine = engine
        self.stream = stream
        self.window_frames = engine.window_frames
        self._id = uuid.uuid4().hex[:12]
        self._segment = 0
        self._sent = 0  # slots [0, _sent) of the segment were sent
        self._release: list[str] = []
        self._notices: list[str] = []
        self.rebuilds = 0

    @property
    def key(self) -> str:
        return f"{self._id}/{self.stream}/{self._segment}"

    def reset(self) -> None:
        """The stream's slot timeline restarted: a new key, the old one released with the next
        request."""
        if self._sent:
            self._release.append(self.key)
        self._segment += 1
        self._sent = 0

    def close(self) -> None:
        """The stream ended: release its keys now (the tier would free them when full anyway)."""
        self.reset()
        if self._release:
            try:
                self._call(self._request([], [], None))
            except Exception as e:
                log.warning("could not release stream %s's tier ring: %r", self.stream, e)

    def take_notices(self) -> list[str]:
        notices = self._notices + self.engine.transport.take_notices()
        self._notices = []
        return notices

    def score(self, start: int, ring: FeatureRing) -> np.ndarray:
        """The window starting at ``start`` -> (T, 3) probabilities; sends the slots it needs
        that were not sent yet (they must still be in ``ring``), or, if the tier lost them,
        every slot of the window again."""
        t = self.window_frames
        end = start + t
        if self._sent > end:
            raise TierError(f"window at slot {start} comes after slot {self._sent - 1} was sent")
        while end - self._sent > t:  # after a long gap: the older slots first, on their own
            self._send(ring, self._sent, self._sent + t, [])
        reply = self._send(ring, self._sent, end, [start])
        tries = 0
        while reply.missing[0]:
            tries += 1
            if tries > MAX_REBUILDS:
                raise TierError(f"the model tier lost stream {self.stream}'s window at slot "
                                f"{start} {MAX_REBUILDS} times in a row")
            self.rebuilds += 1
            reply = self._send(ring, start, end, [start], rebuild=True)
            self._notices.append(f"model tier: this stream's features were not held there (a "
                                 f"replica lost or restarted); the window at slot {start} was "
                                 f"rebuilt from its {t} slots and re-sent")
        probs = reply.probs[:1]
        if self.engine.post is not None:
            geom = ring.window(start, t).get(GEOMETRY)
            probs = self.engine.post(probs, None if geom is None else geom[None])
        return np.asarray(probs[0], np.float32)

    def _send(self, ring: FeatureRing, lo: int, hi: int, starts: list[int],
              rebuild: bool = False) -> TierReply:
        """Slots [lo, hi) from ``ring`` (the first with its crop on a rebuild) and windows."""
        slots = list(range(lo, hi))
        arrays = ring.window(lo, hi - lo) if hi > lo else None
        request = self._request(slots, starts, arrays, rebuild)
        reply = self._call(request)
        self._sent = max(self._sent, hi)
        self.engine.count(len(request.crops), int((~reply.missing).sum()))
        return reply

    def _request(self, slots: list[int], starts: list[int], arrays: dict[str, np.ndarray] | None,
                 rebuild: bool = False) -> TierRequest:
        s = np.asarray(slots, np.int64)
        if arrays is None:
            has_crop = np.zeros(0, bool)
            crops = np.zeros((0, *CROP_SHAPE), np.uint8)
            geom = np.zeros((0, GEOMETRY_DIMS), np.float32) if self.engine.geometry else None
        else:
            has_crop = np.array(arrays[FRESH], bool)
            if rebuild:
                has_crop[0] = True
            crops = arrays[CROPS][has_crop]
            geom = arrays.get(GEOMETRY)
            geom = None if geom is None else np.ascontiguousarray(geom, np.float32)
        release, self._release = tuple(self._release), []
        return TierRequest(self.key, s, has_crop, crops, geom, np.asarray(starts, np.int64),
                           release)

    def _call(self, request: TierRequest) -> TierReply:
        reply = self.engine.transport.step(request)
        if reply.error is not None:
            raise TierError(f"the model tier refused stream {self.stream}'s request: "
                            f"{reply.error}")
        return reply


def describe(engine: Any) -> str:
    """A name for what a stream model's engine runs on (logs, reports)."""
    if isinstance(engine, TierEngine):
        return engine.name
    return str(getattr(engine.backend, "name", "?"))
