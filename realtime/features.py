"""What a stream stores per slot: :class:`SlotFeatures` computes it from the crop fed for the slot.

The ring holds one value per slot of every array :meth:`SlotFeatures.arrays` declares; today
those are the encoder's per-frame outputs (``x_prime``, ``x_atten``: the decisive streaming fact
of DESIGN.md), plus the crop itself in the naive engine mode. The encoder runs once per distinct
crop: a 30 FPS frame fills two 60 Hz slots and a bridged missed detection repeats the last crop,
and both reuse the features already computed.

On the model tier (realtime/tier_engine.py) the encoder runs where the model runs: the ring holds
the crop itself and whether the slot shows a new one (``fresh``), and the stream sends each new
crop once.

When the engine's backend reads the geometry channel, each slot also gets its geometry vector
(``geom``): the :class:`~fesnet.realtime.tracking.Feed`'s landmarks (frame pixels) mapped into
the crop by its frame -> crop transform, through a per-stream
:class:`~fesnet.model.geometry.GeometryTracker`. Unlike the encoder's outputs it is computed for
every slot, not once per crop, because the tracker's running neutral and noise baselines count
slots: exactly what offline ``geometry_features`` over the aligned video's per-slot landmarks
does, so streaming and offline vectors are identical. Stateful features are reset with
:meth:`SlotFeatures.reset`, which the spotter calls whenever its slot timeline restarts.
"""

from __future__ import annotations

import collections
import time
from typing import TYPE_CHECKING

import numpy as np

from fesnet.model.data.landmarks import crop_landmarks
from fesnet.model.geometry import GeometryTracker

from .engine import CROPS, FRESH, GEOMETRY, Engine
from .ring import SlotArray

if TYPE_CHECKING:
    from .tier_engine import TierEngine
from .stats import StageStats
from .tracking import Feed


class SlotFeatures:
    """One stream's per-slot features. Not thread-safe: the spotter's infer thread owns it."""

    def __init__(
        self, engine: Engine | TierEngine, stats: StageStats, counters: collections.Counter[str]
    ) -> None:
        self.engine = engine
        self.stats = stats
        self.counters = counters
        self._arrays = engine.slot_arrays()
        self._last_crop_index: int | None = None
        self._last: dict[str, np.ndarray] | None = None
        self.geometry: GeometryTracker | None = None
        if engine.geometry is not None:
            self.geometry = GeometryTracker(engine.geometry)

    def arrays(self) -> dict[str, SlotArray]:
        """The ring's per-slot arrays: name -> shape and dtype."""
        return dict(self._arrays)

    def reset(self) -> None:
        """The slot timeline restarted: nothing computed before may be reused."""
        self._last_crop_index = None
        self._last = None
        if self.geometry is not None:
            self.geometry.reset()

    def _encoded(self, feed: Feed) -> dict[str, np.ndarray]:
        """A new crop's values: its features (encoded here), or the crop for the model tier."""
        if FRESH in self._arrays:
            return {CROPS: feed.crop}
        t0 = time.perf_counter()
        encoded = self.engine.encode(feed.crop[None])
        self.stats.add("encode", time.perf_counter() - t0)
        values = {name: out[0] for name, out in encoded.items()}
        if CROPS in self._arrays:
            values[CROPS] = feed.crop
        return values

    def compute(self, feed: Feed) -> dict[str, np.ndarray]:
        """The values of every array for one slot standing for ``feed``."""
        new = self._last is None or feed.crop_index != self._last_crop_index
        if new:
            self._last_crop_index, self._last = feed.crop_index, self._encoded(feed)
            self.counters["encoded"] += 1
        assert self._last is not None
        if FRESH in self._arrays:
            self._last = {**self._last, FRESH: np.bool_(new)}
        if self.geometry is None:
            return self._last
        if feed.landmarks is None or feed.transform is None:
            raise ValueError("this model reads the geometry channel: every fed crop needs the "
                             "face's landmarks and its frame -> crop transform")
        t0 = time.perf_counter()
        geom = self.geometry.update(crop_landmarks(feed.landmarks, feed.transform))
        self.stats.add("geometry", time.perf_counter() - t0)
        return {**self._last, GEOMETRY: geom}
