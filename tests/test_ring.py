"""Feature ring: pre-allocated, mirrored (zero-copy windows across the wrap), resettable."""

from __future__ import annotations

import numpy as np
import pytest

from fesnet.realtime.ring import FeatureRing, SlotTimeline
from fesnet.realtime.types import SlotMeta


def _fill(ring: FeatureRing, n: int) -> None:
    for s in range(n):
        ring.append(
            SlotMeta(pts_s=s / 60, source_index=s // 2, t_capture_ns=1000 + s),
            np.full((2, 3), s, np.float32),
            np.full((4,), -s, np.float32),
            np.full((112, 112, 3), s % 256, np.uint8),
        )


def test_windows_are_views_and_match_across_the_wrap() -> None:
    ring = FeatureRing(40, (2, 3), (4,))
    buf_id = id(ring.x_prime)
    _fill(ring, 100)
    assert id(ring.x_prime) == buf_id  # nothing re-allocated
    for start in range(100 - 40, 100 - 32 + 1):
        xp, xa = ring.window(start, 32)
        assert xp.shape == (1, 32, 2, 3) and xa.shape == (1, 32, 4)
        assert np.shares_memory(xp, ring.x_prime)
        np.testing.assert_array_equal(xp[0, :, 0, 0], np.arange(start, start + 32))
        np.testing.assert_array_equal(xa[0, :, 0], -np.arange(start, start + 32))
        crops = ring.window_crops(start, 32)
        np.testing.assert_array_equal(crops[:, 0, 0, 0], np.arange(start, start + 32) % 256)
    m = ring.meta(99)
    assert m.source_index == 49 and m.t_capture_ns == 1099


def test_out_of_range_windows_are_refused_and_reset_restarts() -> None:
    ring = FeatureRing(40, (2, 3), (4,))
    _fill(ring, 50)
    with pytest.raises(IndexError):
        ring.window(5, 32)  # overwritten
    with pytest.raises(IndexError):
        ring.window(30, 32)  # not yet there
    with pytest.raises(ValueError):
        ring.window(0, 41)
    ring.reset()
    assert ring.n_slots == 0 and ring.latest_crop() is None
    _fill(ring, 32)
    np.testing.assert_array_equal(ring.window(0, 32)[0][0, :, 0, 0], np.arange(32))


def test_slot_timeline_clamps_to_what_it_holds() -> None:
    tl = SlotTimeline(10)
    for s in range(25):
        tl.append(SlotMeta(s / 60, s, s))
    assert tl.meta(24).source_index == 24
    assert tl.meta(3).source_index == 15  # older than held -> oldest held
    assert tl.meta(99).source_index == 24
