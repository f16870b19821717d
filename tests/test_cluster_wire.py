"""The cluster's wire format (pure numpy, runs without Ray): exact round trips, each distinct
slot sent once, any named per-slot array carried."""

from __future__ import annotations

import numpy as np
import pytest

from fesnet.realtime.cluster.wire import WireStats, pack_windows, unpack_windows


def _windows(rng: np.random.Generator, b: int, t: int, repeat: int) -> dict[str, np.ndarray]:
    """(B, T, ...) arrays where each distinct slot fills ``repeat`` consecutive slots."""
    n = -(-t // repeat)
    xp = np.repeat(rng.normal(size=(b, n, 4, 3, 3)).astype(np.float32), repeat, axis=1)[:, :t]
    xa = np.repeat(rng.normal(size=(b, n, 2, 5, 5)).astype(np.float32), repeat, axis=1)[:, :t]
    return {"x_prime": xp, "x_atten": xa}


def test_round_trip_is_exact_and_sends_each_distinct_slot_once(rng):
    arrays = _windows(rng, 3, 32, repeat=2)  # a 30 FPS camera on the 60 Hz timeline
    wire = pack_windows(arrays)
    assert wire.rows["x_prime"].shape[0] == 3 * 16
    assert wire.index.shape == (3, 32)
    back = unpack_windows(wire)
    for name, a in arrays.items():
        assert back[name].dtype == a.dtype
        assert np.array_equal(back[name], a)
    full = sum(a.nbytes for a in arrays.values())
    assert wire.nbytes < 0.55 * full


def test_distinct_slots_are_all_sent(rng):
    arrays = _windows(rng, 2, 32, repeat=1)  # a 60 FPS camera: nothing repeats
    wire = pack_windows(arrays)
    assert wire.rows["x_atten"].shape[0] == 64
    assert all(np.array_equal(unpack_windows(wire)[k], v) for k, v in arrays.items())


def test_no_row_is_shared_across_windows(rng):
    """Identical neighbours in different windows (window b's last slot, b+1's first) stay two
    rows: every window is rebuilt from its own rows."""
    one = _windows(rng, 1, 8, repeat=8)  # a frozen window: one distinct slot
    arrays = {k: np.concatenate([v, v]) for k, v in one.items()}
    wire = pack_windows(arrays)
    assert wire.rows["x_prime"].shape[0] == 2
    assert np.array_equal(unpack_windows(wire)["x_prime"], arrays["x_prime"])


def test_a_slot_repeats_only_if_every_array_repeats(rng):
    arrays = _windows(rng, 1, 4, repeat=2)
    geom = rng.normal(size=(1, 4, 7)).astype(np.float32)  # differs on every slot
    wire = pack_windows({**arrays, "geom": geom})
    assert wire.names == ("geom", "x_atten", "x_prime")
    assert wire.rows["geom"].shape[0] == 4
    assert np.array_equal(unpack_windows(wire)["geom"], geom)


def test_bad_shapes_are_refused(rng):
    with pytest.raises(ValueError):
        pack_windows({})
    with pytest.raises(ValueError):
        pack_windows({"x_prime": np.zeros((1, 32, 2)), "x_atten": np.zeros((1, 16, 2))})


def test_stats_add_and_merge():
    a, b = WireStats(), WireStats()
    a.add("encode_up", 100)
    b.add("encode_up", 50)
    b.add("window_up", 7)
    a.merge(b.snapshot())
    assert a.snapshot() == {"bytes": {"encode_up": 150, "window_up": 7},
                            "calls": {"encode_up": 2, "window_up": 1}}
    assert a.total_bytes() == 157
