"""Feature ring: pre-allocated, mirrored (zero-copy windows across the wrap), resettable."""

from __future__ import annotations

import numpy as np
import pytest

from fesnet.realtime.ring import FeatureRing, SlotArray, SlotTimeline
from fesnet.realtime.types import SlotMeta

ARRAYS = {
    "x_prime": SlotArray((2, 3)),
    "x_atten": SlotArray((4,)),
    "crops": SlotArray((112, 112, 3), np.uint8),
}


def _fill(ring: FeatureRing, n: int) -> None:
    for s in range(n):
        ring.append({
            "x_prime": np.full((2, 3), s, np.float32),
            "x_atten": np.full((4,), -s, np.float32),
            "crops": np.full((112, 112, 3), s % 256, np.uint8),
        })


def test_windows_are_views_and_match_across_the_wrap() -> None:
    ring = FeatureRing(40, ARRAYS)
    buffers = {name: id(buf) for name, buf in ring.arrays.items()}
    _fill(ring, 100)
    assert {name: id(buf) for name, buf in ring.arrays.items()} == buffers  # never re-allocated
    for start in range(100 - 40, 100 - 32 + 1):
        w = ring.window(start, 32)
        assert w["x_prime"].shape == (32, 2, 3) and w["x_atten"].shape == (32, 4)
        for name, view in w.items():
            assert np.shares_memory(view, ring.arrays[name]), name
        np.testing.assert_array_equal(w["x_prime"][:, 0, 0], np.arange(start, start + 32))
        np.testing.assert_array_equal(w["x_atten"][:, 0], -np.arange(start, start + 32))
        np.testing.assert_array_equal(w["crops"][:, 0, 0, 0], np.arange(start, start + 32) % 256)


def test_a_new_per_slot_array_is_one_more_entry() -> None:
    ring = FeatureRing(40, {**ARRAYS, "geom": SlotArray((5,))})
    for s in range(40):
        ring.append({"x_prime": np.zeros((2, 3)), "x_atten": np.zeros(4),
                     "crops": np.zeros((112, 112, 3)), "geom": np.full(5, s)})
    np.testing.assert_array_equal(ring.window(8, 32)["geom"][:, 0], np.arange(8, 40))
    with pytest.raises(KeyError, match="geom"):
        ring.append({"x_prime": np.zeros((2, 3)), "x_atten": np.zeros(4),
                     "crops": np.zeros((112, 112, 3))})


def test_out_of_range_windows_are_refused_and_reset_restarts() -> None:
    ring = FeatureRing(40, ARRAYS)
    _fill(ring, 50)
    with pytest.raises(IndexError):
        ring.window(5, 32)  # overwritten
    with pytest.raises(IndexError):
        ring.window(30, 32)  # not yet there
    with pytest.raises(ValueError):
        ring.window(0, 41)
    ring.reset()
    assert ring.n_slots == 0
    _fill(ring, 32)
    np.testing.assert_array_equal(ring.window(0, 32)["x_prime"][:, 0, 0], np.arange(32))


def test_slot_timeline_clamps_to_what_it_holds() -> None:
    tl = SlotTimeline(10)
    for s in range(25):
        tl.append(SlotMeta(s / 60, s, s))
    assert tl.meta(24).source_index == 24
    assert tl.meta(3).source_index == 15  # older than held -> oldest held
    assert tl.meta(99).source_index == 24
