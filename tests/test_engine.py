"""Engine: the streaming window schedule equals the offline one; batched, cached and naive
scoring agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fesnet.model.backends import TorchBackend
from fesnet.model.fesnet import FESNet, FESNetConfig
from fesnet.model.inference import window_starts
from fesnet.realtime.engine import Engine, WindowScheduler
from fesnet.realtime.ring import FeatureRing
from fesnet.realtime.types import WindowRequest


@pytest.mark.parametrize("stride", [1, 3, 8, 16, 32, 40])
def test_scheduler_matches_offline_window_starts(stride: int) -> None:
    for n in [0, 31, 32, 33, 40, 63, 64, 65, 100, 257]:
        sched = WindowScheduler(32, stride)
        got: list[int] = []
        for k in range(1, n + 1):
            got += sched.on_slots(k)
        got += sched.on_end(n)
        assert got == window_starts(n, 32, stride), (n, stride)


@pytest.fixture(scope="module")
def backend() -> TorchBackend:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    return TorchBackend(FESNet(FESNetConfig.tiny()).eval())


def test_batched_cached_and_naive_agree(backend: TorchBackend) -> None:
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (48, 112, 112, 3), dtype=np.uint8)
    t = FESNetConfig.tiny().window_frames
    cached, naive = Engine(backend, t), Engine(backend, t, mode="naive")
    ring = FeatureRing(40, naive.slot_arrays())  # the naive spec: the features and the crops
    assert set(ring.arrays) == {"x_prime", "x_atten", "crops"}
    assert set(cached.slot_arrays()) == {"x_prime", "x_atten"}
    for s in range(48):
        features = cached.encode(crops[s : s + 1])
        ring.append({"x_prime": features["x_prime"][0], "x_atten": features["x_atten"][0],
                     "crops": crops[s]})
    assert cached.encoded_frames == 48  # once per frame
    reqs = [WindowRequest("a", start, ring.window(start, 32)) for start in (8, 16)]
    one_by_one = [cached.step([r])[0] for r in reqs]
    batched = cached.step(reqs)
    by_naive = naive.step(reqs)
    assert naive.encoded_frames == 64  # re-encodes every window's 32 crops
    for a, b, c in zip(one_by_one, batched, by_naive, strict=True):
        assert a.shape == (32, 3) and a.dtype == np.float32
        np.testing.assert_allclose(a, b, atol=1e-5)
        np.testing.assert_allclose(a, c, atol=1e-5)
        np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-5)


def test_naive_mode_needs_crops(backend: TorchBackend) -> None:
    eng = Engine(backend, 32, mode="naive")
    z = np.zeros((32, 1), np.float32)
    with pytest.raises(ValueError, match="crops"):
        eng.step([WindowRequest("a", 0, {"x_prime": z, "x_atten": z})])
    with pytest.raises(ValueError):
        Engine(backend, 32, mode="fast")
