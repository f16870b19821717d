"""The model tier: many streams through one engine give exactly each stream's own windows and
events (today's per-stream Engine, offline spot_video); its bookkeeping (runs of slots, repeats,
rebuilds, resets, padding buckets) and the CUDA-graph runner's use of buckets, on the CPU. The
CUDA path itself runs at the end, where a GPU is present."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fesnet.model.backends import BackendUnavailable, TorchBackend
from fesnet.model.checkpoint import Checkpoint
from fesnet.model.fesnet import FESNet, FESNetConfig
from fesnet.model.geometry import GEOMETRY_DIMS
from fesnet.model.inference import predict_windows
from fesnet.model.merger import MergerConfig, merge_offline
from fesnet.model.runtime import load_checkpoint
from fesnet.model.tier import ModelTier, TierBatch, TierError, TierFull
from fesnet.model.tier_plan import bucket_sizes, plan_chunks
from fesnet.model.tier_run import CudaGraphRunner, TorchFunctions, make_tier, strict_fp32
from fesnet.model.tier_video import repeats_previous, tier_video_windows
from fesnet.realtime.bench.tier_load import (
    TickLoad,
    copy_cycled,
    engine_windows,
    synthetic_streams,
    tier_windows,
)
from fesnet.realtime.engine import Engine

T, STRIDE = 32, 4
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def geo_net() -> FESNet:
    """The shipped network (it reads the geometry channel): a random tiny one gives nearly the
    same scores whatever the crops, so it could not tell a wrong slot from a right one."""
    return load_checkpoint().net.eval()


@pytest.fixture(scope="module")
def streams() -> list:
    return synthetic_streams(3, 110, geometry=True, seed=1)  # 60, 30 and 60 FPS


def tier_of(net: FESNet, **kw) -> ModelTier:
    opts = {"max_streams": 4, "buckets": (1, 2, 4)} | kw
    return ModelTier(TorchFunctions(net, "cpu"), window_frames=T,
                     geometry_dims=net.cfg.geometry_dims, **opts)


def loose_merger(probs: list[np.ndarray]) -> MergerConfig:
    """Thresholds inside the random network's score range, so its windows make events, each in
    a gap between scores (no score within 1e-4 of it: float summation order cannot flip it)."""
    p = np.sort(np.concatenate([x[..., 1:].sum(-1).ravel() for x in probs]))
    gaps = np.flatnonzero(np.diff(p) > 2e-4)
    mids = (p[gaps] + p[gaps + 1]) / 2

    def near(q: float) -> float:
        return float(mids[np.argmin(np.abs(mids - np.quantile(p, q)))])

    return MergerConfig(window_frames=T, on_threshold=near(0.8), off_threshold=near(0.6),
                        min_expression_frames=3)


def test_shared_tier_equals_each_stream_alone(geo_net: FESNet, streams: list) -> None:
    """Three streams (one at 30 FPS: repeated slots) in shared, padded steps == each alone
    through the per-stream Engine == offline predict_windows; and the same merger events. Also
    with 3 slots a step, so a step may begin with a repeat of a slot sent before."""
    tier = tier_of(geo_net)
    shared = tier_windows(tier, streams, STRIDE)
    assert tier.counts["copied"] > 0 and tier.counts["encode_padding"] > 0  # both paths taken
    by_three = tier_windows(tier_of(geo_net), streams, STRIDE, slots_per_tick=3)
    for (st, p), (st3, p3) in zip(shared, by_three, strict=True):
        assert st == st3 and np.abs(p - p3).max() < 1e-5
    backend = TorchBackend(geo_net)
    engine = Engine(backend, T)
    alone = [engine_windows(engine, s, STRIDE) for s in streams]
    offline = [predict_windows(backend, s.slot_frames(), T, STRIDE, s.geom) for s in streams]
    merger = loose_merger([p for _, p in offline])
    n_events = 0
    for (st, p), (st_e, p_e), (st_o, p_o) in zip(shared, alone, offline, strict=True):
        assert st == st_e == st_o
        # The Engine encodes one crop a call: its own distance to offline is ~1e-5 (summation
        # order); the tier's is ~3e-7. A wrong slot moves them by more than 1e-2 (below).
        assert np.abs(p - p_e).max() < 5e-5
        assert np.abs(p - p_o).max() < 1e-5
        ev, _ = merge_offline(st, list(p), merger)
        ev_o, _ = merge_offline(st_o, list(p_o), merger)
        assert [dataclasses.replace(e, score=0.0) for e in ev] == [
            dataclasses.replace(e, score=0.0) for e in ev_o]
        n_events += len(ev)
    assert n_events > 0
    frames = streams[0].slot_frames().copy()
    frames[40] = frames[20]  # one wrong slot: the equality above is not vacuous
    wrong = predict_windows(backend, frames, T, STRIDE, streams[0].geom)[1]
    assert np.abs(wrong - offline[0][1]).max() > 1e-2


def test_pixel_only_network_exact_sizes_and_chunks() -> None:
    """No geometry channel, no padding, calls split at max_bucket=2."""
    torch.manual_seed(1)
    net = FESNet(FESNetConfig.tiny()).eval()
    streams = synthetic_streams(3, 50, geometry=False, seed=2, fps=(60,))
    tier = tier_of(net, buckets=None, max_bucket=2)
    shared = tier_windows(tier, streams, 8)
    assert tier.counts["encode_padding"] == 0 and tier.counts["encode_calls"] > tier.counts["steps"]
    backend = TorchBackend(net)
    for (st, p), s in zip(shared, streams, strict=True):
        st_o, p_o = predict_windows(backend, s.slot_frames(), T, 8)
        assert st == st_o and np.abs(p - p_o).max() < 1e-5


def _slots(stream, first: int, n: int, handle: int, starts=()) -> TierBatch:
    done = int(stream.has_crop[:first].sum())
    hc = stream.has_crop[first : first + n]
    return TierBatch.of_stream(handle, np.arange(first, first + n),
                               stream.frames[done : done + int(hc.sum())], has_crop=hc,
                               geom=stream.geom[first : first + n],
                               window_starts=starts)


def test_a_lost_ring_is_rebuilt_from_resent_slots(geo_net: FESNet, streams: list) -> None:
    """A fresh tier (a new replica) reports the window missing; re-sending its 32 slots (the
    first with its crop) gives the very probabilities the original tier gave."""
    s = streams[1]  # 30 FPS: slot 41 repeats slot 40
    first = tier_of(geo_net)
    h = first.open()
    first.step(_slots(s, 0, 30, h))
    want = first.step(_slots(s, 30, 44, h, starts=[41])).probs[0]
    fresh = tier_of(geo_net)
    h2 = fresh.open()
    missing = fresh.step(_slots(s, 0, 0, h2, starts=[41]))
    assert missing.missing.tolist() == [True] and np.isnan(missing.probs).all()
    with pytest.raises(TierError, match="repeats"):  # slot 41 alone has no frame to repeat
        fresh.step(_slots(s, 41, 32, h2))
    assert fresh.held(h2) == (0, 0)  # the refused batch changed nothing
    crop_41 = s.frames[np.cumsum(s.has_crop)[41] - 1][None]
    resend = TierBatch.of_stream(h2, np.arange(41, 73), np.concatenate(
        [crop_41, _slots(s, 42, 31, h2).crops]), has_crop=np.r_[True, s.has_crop[42:73]],
        geom=s.geom[41:73], window_starts=[41])
    got = fresh.step(resend)
    assert not got.missing.any() and np.abs(got.probs[0] - want).max() < 1e-6
    assert fresh.held(h2) == (41, 73)


def test_runs_resets_and_refusals(geo_net: FESNet, streams: list) -> None:
    s = streams[0]
    tier = tier_of(geo_net, max_streams=2, ring_slots=40)
    a, b = tier.open("a"), tier.open("b")
    with pytest.raises(TierFull):
        tier.open("c")
    tier.step(_slots(s, 0, 36, a))
    assert tier.held(a) == (0, 36)
    tier.step(_slots(s, 36, 10, a))
    assert tier.held(a) == (6, 46)  # the newest ring_slots
    r = tier.step(_slots(s, 0, 0, a, starts=[5, 6, 14, 15]))
    assert r.missing.tolist() == [True, False, False, True]
    tier.reset(a)
    assert tier.held(a) == (0, 0)
    assert tier.step(TierBatch.of_stream(a, window_starts=[6])).missing.all()  # no slots, no geom
    bad = [
        (TierBatch.of_stream(a, [0, 2], s.frames[:2], geom=s.geom[:2]), "consecutive"),
        (TierBatch.concat([_slots(s, 0, 1, a), _slots(s, 0, 1, b), _slots(s, 1, 1, a)]),
         "together"),
        (_slots(s, 0, 40, a), "at most 39"),
        (TierBatch.of_stream(3, [0], s.frames[:1], geom=s.geom[:1]), "unknown stream"),
        (TierBatch.concat([_slots(s, 0, 1, a), TierBatch.of_stream(7, window_starts=[0])]),
         "unknown stream"),
        (TierBatch.of_stream(a, [0], s.frames[:1]), "geometry"),
        (TierBatch.of_stream(a, [0], s.frames[:2], geom=s.geom[:1]), "crops must be"),
    ]
    for batch, match in bad:
        with pytest.raises(TierError, match=match):
            tier.step(batch)
    assert tier.held(a) == (0, 0) and tier.held(b) == (0, 0)  # nothing was applied
    tier.close(b)
    assert tier.open("c") == b


def test_overlapping_resend_keeps_the_run(geo_net: FESNet, streams: list) -> None:
    """A re-sent (retried) batch of slots already held does not cut the run short."""
    s = streams[0]
    tier = tier_of(geo_net)
    h = tier.open()
    tier.step(_slots(s, 0, 40, h))
    before = tier.step(_slots(s, 0, 0, h, starts=[4])).probs
    tier.step(_slots(s, 30, 10, h))  # the last 10 again
    assert tier.held(h) == (0, 40)
    assert np.array_equal(tier.step(_slots(s, 0, 0, h, starts=[4])).probs, before)


def _tiny_batches(tier: ModelTier, stream, per_step: int = 3) -> list[TierBatch]:
    """One stream's slots, ``per_step`` a step, each window requested when its last slot is."""
    h = tier.open()
    out = []
    for first in range(0, stream.n_slots, per_step):
        n = min(per_step, stream.n_slots - first)
        starts = [w for w in range(0, stream.n_slots - T + 1, STRIDE) if first < w + T <= first + n]
        out.append(TierBatch.of_stream(h, np.arange(first, first + n),
                                       stream.frames[first : first + n], window_starts=starts))
    return out


def test_steps_in_flight_equal_steps_one_at_a_time() -> None:
    """submit() two steps ahead of result(): each step's crops staged in the host buffers the
    step two back used, whose result is collected first, so no result is overwritten."""
    torch.manual_seed(3)
    net = FESNet(FESNetConfig.tiny()).eval()
    s = synthetic_streams(1, 60, geometry=False, seed=4, fps=(60,))[0]
    one = tier_of(net)
    want = [one.step(b) for b in _tiny_batches(one, s)]
    two = tier_of(net)
    pending, pointers = [], []
    for b in _tiny_batches(two, s):
        staged = two.staging(len(b.crops))
        staged[...] = b.crops
        pointers.append(staged.ctypes.data)
        pending.append(two.submit(dataclasses.replace(b, crops=staged)))
    assert pointers[0] == pointers[2] != pointers[1] == pointers[3]  # two sets, in turn
    assert sum(len(w.probs) for w in want) > 5
    for p, w in zip(pending, want, strict=True):
        assert p.ready() and np.array_equal(p.result().probs, w.probs)
        assert p.result() is p.result()


def test_timed_steps_say_where_their_time_went(geo_net: FESNet, streams: list) -> None:
    tier = tier_of(geo_net)
    tier.timed = True
    h = tier.open()
    p = tier.submit(_slots(streams[0], 0, 36, h, starts=[0, 4]))
    phases = p.phases_ms()
    assert set(phases) == {"encode", "window", "device"}  # no copy stream on the CPU
    assert phases["encode"] > 0 and phases["window"] > 0
    assert abs(phases["device"] - phases["encode"] - phases["window"]) < 1e-3
    tier.timed = False
    assert tier.submit(_slots(streams[0], 36, 1, h)).phases_ms() == {}


def test_a_video_through_the_tier_equals_offline(geo_net: FESNet, streams: list) -> None:
    """tier_video_windows (what scripts/tier_f1.py scores) == predict_windows; a 30 FPS
    stream's repeated crops are sent as repeats, not encoded again."""
    s = streams[1]
    frames = s.slot_frames()
    assert repeats_previous(frames).sum() == (~s.has_crop).sum()
    tier = tier_of(geo_net, max_streams=1)
    starts, probs = tier_video_windows(tier, frames, STRIDE, s.geom)
    st_o, p_o = predict_windows(TorchBackend(geo_net), frames, T, STRIDE, s.geom)
    assert starts == st_o and np.abs(probs - p_o).max() < 1e-5
    assert tier.counts["copied"] == (~s.has_crop).sum() and tier.counts["missing"] == 0


def test_strict_fp32_switches_tf32_off_and_restores_it() -> None:
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    try:
        with strict_fp32():
            assert not torch.backends.cudnn.allow_tf32
            assert not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_tick_load_copy_threads_stage_the_same_crops() -> None:
    net = FESNet(FESNetConfig.tiny()).eval()
    pool = synthetic_streams(1, 40, geometry=False, seed=5, fps=(60,))[0].frames
    staged = []
    for threads in (1, 3):
        tier = tier_of(net, max_streams=600)
        load = TickLoad(tier, 600, STRIDE, pool, None, copy_threads=threads)
        assert load.copy_threads == min(threads, 600 // 256)
        load.batch()
        staged.append(load.batch().crops.copy())  # tick 1: pool[1], pool[2], ...
        load.close()
    assert np.array_equal(staged[0], staged[1])
    assert np.array_equal(staged[0][:45], pool[(np.arange(45) + 1) % len(pool)])


def test_copy_cycled_is_take_with_wraparound() -> None:
    pool = np.arange(5 * 2, dtype=np.uint8).reshape(5, 2)
    for first, n in [(0, 3), (3, 4), (7, 12), (4, 1)]:
        out = np.empty((n, 2), np.uint8)
        copy_cycled(pool, first, out)
        assert np.array_equal(out, np.take(pool, (np.arange(n) + first) % 5, axis=0))


def test_channels_last_weights_give_the_same_windows(geo_net: FESNet, streams: list) -> None:
    want = tier_windows(tier_of(geo_net), streams[:1], STRIDE)[0][1]
    nhwc = ModelTier(TorchFunctions(geo_net, "cpu", channels_last=True), window_frames=T,
                     geometry_dims=GEOMETRY_DIMS, max_streams=2)
    assert np.abs(tier_windows(nhwc, streams[:1], STRIDE)[0][1] - want).max() < 1e-4


def test_fp16_keeps_fp16_rings_close_to_fp32(geo_net: FESNet, streams: list) -> None:
    fp32 = tier_windows(tier_of(geo_net), streams[:1], STRIDE)[0][1]
    half = ModelTier(TorchFunctions(geo_net, "cpu", "fp16"), window_frames=T,
                     geometry_dims=GEOMETRY_DIMS, max_streams=2)
    assert half.x_prime.dtype == torch.float16 and half.geom.dtype == torch.float32
    got = tier_windows(half, streams[:1], STRIDE)[0][1]
    assert 0 < np.abs(got - fp32).max() < 2e-2


class StandInCapture:
    """CPU stand-in for CUDA graph capture (the only mock: a GPU's): a captured body is called
    again at each replay, with nothing but its batch size, as a graph replays its kernels."""

    def __init__(self) -> None:
        self.captured: list[object] = []
        self.replays = 0

    def capture(self, fn):
        fn()  # the warm-up a real capture does
        self.captured.append(fn)

        def replay() -> None:
            self.replays += 1
            fn()

        return replay

    def close(self) -> None:
        pass


def test_graph_runner_replays_only_captured_buckets(geo_net: FESNet, streams: list) -> None:
    cap = StandInCapture()
    tier = tier_of(geo_net, buckets=(1, 2, 4), runner=CudaGraphRunner("cpu", capture=lambda: cap))
    assert len(cap.captured) == 6  # encode and window, per bucket
    got = tier_windows(tier, streams, STRIDE)
    assert cap.replays == tier.counts["encode_calls"] + tier.counts["window_calls"]
    want = tier_windows(tier_of(geo_net), streams, STRIDE)
    for (st, p), (st_w, p_w) in zip(got, want, strict=True):
        assert st == st_w and np.array_equal(p, p_w)
    exact = tier_of(geo_net, buckets=None, max_bucket=4,
                    runner=CudaGraphRunner("cpu", capture=StandInCapture))
    with pytest.raises(TierError, match="no encode graph for batch 3"):
        exact.step(_slots(streams[0], 0, 3, exact.open()))


def test_buckets_and_chunks() -> None:
    assert bucket_sizes(1) == (1,) and bucket_sizes(12) == (1, 2, 4, 8, 12)
    assert plan_chunks(0, (1, 2, 4), 4) == []
    assert plan_chunks(11, (1, 2, 4), 4) == [(0, 4, 4), (4, 4, 4), (8, 3, 4)]
    assert plan_chunks(5, None, 4) == [(0, 4, 4), (4, 1, 1)]


def test_make_tier_on_this_machine(geo_net: FESNet) -> None:
    ck = Checkpoint(net=geo_net, config=geo_net.cfg, meta={})
    tier = make_tier("torch", ck, device="cpu", max_streams=2)
    assert tier.name == "torch-cpu-fp32" and tier.buckets is None and tier.geometry is not None
    with pytest.raises(BackendUnavailable, match="CUDA graphs"):
        make_tier("torch", ck, device="cpu", graphs=True)
    with pytest.raises(ValueError, match="unknown tier backend"):
        make_tier("jax", ck)
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailable, match="CUDA"):
            make_tier("torch", ck, device="cuda")


@CUDA
@pytest.mark.parametrize(("precision", "graphs", "tol"),
                         [("fp32", False, 1e-4), ("fp32", True, 1e-4), ("fp16", True, 5e-2)])
def test_cuda_tier_matches_cpu(geo_net: FESNet, streams: list, precision: str, graphs: bool,
                               tol: float) -> None:
    ck = Checkpoint(net=geo_net, config=geo_net.cfg, meta={})
    tier = make_tier("torch", ck, device="cuda", precision=precision, graphs=graphs,
                     max_streams=4, max_bucket=8)
    got = tier_windows(tier, streams, STRIDE)
    want = tier_windows(tier_of(geo_net), streams, STRIDE)
    for (st, p), (st_w, p_w) in zip(got, want, strict=True):
        assert st == st_w and np.abs(p - p_w).max() < tol
    staged = tier.staging(1)  # pinned: a batch of it is uploaded without another copy
    assert tier._sets[0].pinned and staged.shape == (1, 112, 112, 3)


@CUDA
def test_cuda_pipelined_steps_with_the_copy_stream(geo_net: FESNet, streams: list) -> None:
    """Steps of more crops than COPY_STREAM_MIN_CROPS upload them on the copy stream; submitted
    two at a time (staging the next while the device runs the last), they give the windows of
    one step at a time on the CPU."""
    ck = Checkpoint(net=geo_net, config=geo_net.cfg, meta={})
    tier = make_tier("torch", ck, device="cuda", precision="fp32", graphs=True, max_streams=2,
                     ring_slots=128, max_bucket=128)
    cpu = tier_of(geo_net, ring_slots=128)
    s = streams[0]
    batches = [(0, 70, []), (70, 10, [20, 40]), (80, 30, [44, 70, 78])]
    h, hc = tier.open(), cpu.open()
    pending = []
    for first, n, starts in batches:
        batch = _slots(s, first, n, h, starts)
        staged = tier.staging(n)
        staged[: len(batch.crops)] = batch.crops
        pending.append(tier.submit(dataclasses.replace(batch, crops=staged[: len(batch.crops)])))
    want = [cpu.step(_slots(s, first, n, hc, starts)).probs for first, n, starts in batches]
    assert tier.counts["encoded"] == 110 and pending[0].result().probs.shape == (0, T, 3)
    for p, w in zip(pending[1:], want[1:], strict=True):
        assert np.abs(p.result().probs - w).max() < 1e-4
