"""Streams on the model tier (realtime/tier_engine.py, model/tier_serve.py): several streams
sharing one tier's steps give each stream exactly the events it gives alone through the
per-stream Engine and offline spot_video; the in-process combiner serves every waiting stream in
one step; a lost ring is rebuilt and reported, never a wrong or repeated expression event;
post-processing of the network's probabilities composes with the tier; and the loader's rule
for which streams use the tier."""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Callable

import numpy as np
import pytest
import torch
from test_streaming_equivalence import (
    assert_same_events,
    offline_tuples,
    same_events,
    streaming_tuples,
)

from fesnet.model.backends import TorchBackend, split_post
from fesnet.model.data.resample import resample_indices
from fesnet.model.geometry import geometry_features
from fesnet.model.inference import predict_windows, spot_video
from fesnet.model.merger import MergerConfig
from fesnet.model.runtime import LoadError, RuntimeConfig, load_checkpoint, serving_of
from fesnet.model.tier import ModelTier
from fesnet.model.tier_run import TorchFunctions
from fesnet.model.tier_serve import TierReply, TierRequest, TierService
from fesnet.realtime.bench.tier_load import synthetic_streams
from fesnet.realtime.engine import Engine
from fesnet.realtime.session import StreamModel, open_spotter
from fesnet.realtime.spotter import Spotter
from fesnet.realtime.tier_engine import SharedTier, TierEngine
from fesnet.realtime.tracking import Feed
from fesnet.realtime.types import Frame, SpotEvent

T, STRIDE = 32, 4
IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
WAIT_S = 60.0  # a bound on every wait of these tests (they never wait on a clock otherwise)


@pytest.fixture(scope="module")
def ckpt():
    torch.set_num_threads(1)
    return load_checkpoint()


@pytest.fixture(scope="module")
def backend(ckpt) -> TorchBackend:
    return TorchBackend(ckpt.net.eval(), geometry=ckpt.geometry)


@dataclasses.dataclass(frozen=True)
class Clip:
    """Source frames of one stream: crops, landmarks (crop pixels), timestamps; ``breaks``:
    frame indices where the source clock jumps (a new segment)."""

    crops: np.ndarray
    landmarks: np.ndarray
    pts_s: np.ndarray
    breaks: tuple[int, ...] = ()

    def segments(self) -> list[range]:
        edges = [0, *self.breaks, len(self.crops)]
        return [range(a, b) for a, b in itertools.pairwise(edges)]


def make_clip(face: np.ndarray, seed: int, fps: float, n: int, bumps, breaks=()) -> Clip:
    """``n`` frames at ``fps`` of a moving real face with its own look, the mouth moving over
    the ``bumps`` (seconds), the source clock jumping by 1 s at the frames in ``breaks``."""
    look = synthetic_streams(1, n, geometry=False, seed=seed, fps=(60,))[0]
    rng = np.random.default_rng(seed)
    lm = face[None] + rng.normal(0, 0.15, (n, *face.shape))
    for a, b in bumps:
        lm[int(a * fps) : int(b * fps), 48:68] += (0.0, -2.5)
    pts = np.arange(n) / fps
    for k in breaks:
        pts[k:] += 1.0  # longer than the spotter's max_gap_s: the segment ends
    return Clip(look.frames[:n], lm.astype(np.float32), pts, tuple(breaks))


def make_clips(two_identities) -> list[Clip]:
    """Three different streams: 60 FPS, 30 FPS, and 60 FPS with a clock jump (two segments),
    each with its own crops and its own expression times in the landmarks."""
    face = two_identities[0].landmarks * (112 / 256)
    return [make_clip(face, 10, 60.0, 240, [(1.0, 2.2)]),
            make_clip(face, 11, 30.0, 120, [(1.5, 1.8), (2.5, 3.5)]),
            make_clip(face, 12, 60.0, 200, [(0.6, 1.0), (2.2, 3.0)], (90,))]


def push_clip(spotter: Spotter, clip: Clip) -> list[SpotEvent]:
    events: list[SpotEvent] = []
    for i, (crop, lm) in enumerate(zip(clip.crops, clip.landmarks, strict=True)):
        frame = Frame(np.zeros((1, 1, 3), np.uint8), i, float(clip.pts_s[i]), 0, spotter.stream)
        events += spotter.push(Feed(frame, crop, i, lm, IDENTITY))
    return events + spotter.finish()


def offline_events(backend, clip: Clip, merger: MergerConfig) -> list[tuple]:
    """Each segment spotted offline by ``spot_video``, in source frame numbers."""
    out = []
    for seg in clip.segments():
        idx = seg.start + np.asarray(resample_indices(list(clip.pts_s[seg] - clip.pts_s[seg][0]),
                                                      60.0))
        geom = geometry_features(clip.landmarks[idx], backend.geometry)
        out += offline_tuples(spot_video(backend, clip.crops[idx], merger, STRIDE, geom), idx)
    return out


def offline_probs(backend, clips: list[Clip]) -> list[np.ndarray]:
    out = []
    for clip in clips:
        for seg in clip.segments():
            idx = seg.start + np.asarray(resample_indices(
                list(clip.pts_s[seg] - clip.pts_s[seg][0]), 60.0))
            geom = geometry_features(clip.landmarks[idx], backend.geometry)
            out.append(predict_windows(backend, clip.crops[idx], T, STRIDE, geom)[1])
    return out


def gap_merger(probs: list[np.ndarray], q_on: float = 0.5, q_off: float = 0.3) -> MergerConfig:
    """Thresholds near these quantiles of the windows' expression evidence, each in a gap
    between scores (none within 1e-4 of it: float summation order cannot flip a decision), so
    the shipped network's windows on these clips make bounded events."""
    p = np.sort(np.concatenate([x[..., 1:].sum(-1).ravel() for x in probs]))
    gaps = np.flatnonzero(np.diff(p) > 2e-4)
    mids = (p[gaps] + p[gaps + 1]) / 2

    def near(q: float) -> float:
        return float(mids[np.argmin(np.abs(mids - np.quantile(p, q)))])

    return MergerConfig(window_frames=T, on_threshold=near(q_on), off_threshold=near(q_off),
                        min_expression_frames=3)


class Lockstep:
    """A test transport: a step is served once every stream still running has its request in,
    so every shared step holds one request of each (what a loaded tier sees), deterministically.
    """

    name = "lockstep"

    def __init__(self, service: TierService, streams: int) -> None:
        self.service = service
        self.live = streams
        self.sizes: list[int] = []
        self._cond = threading.Condition()
        self._waiting: list[list] = []

    def _serve_if_all_in(self) -> None:
        if self._waiting and len(self._waiting) >= self.live:
            calls, self._waiting = self._waiting, []
            self.sizes.append(len(calls))
            for call, reply in zip(calls, self.service.serve([c[0] for c in calls]), strict=True):
                call[1] = reply
            self._cond.notify_all()

    def step(self, request: TierRequest) -> TierReply:
        call = [request, None]
        with self._cond:
            self._waiting.append(call)
            self._serve_if_all_in()
            if not self._cond.wait_for(lambda: call[1] is not None, timeout=WAIT_S):
                raise TimeoutError("lockstep: the other streams never sent their requests")
        return call[1]

    def done(self) -> None:
        with self._cond:
            self.live -= 1
            self._serve_if_all_in()

    def take_notices(self) -> list[str]:
        return []


def tier_of(ckpt, max_streams: int = 4) -> ModelTier:
    return ModelTier(TorchFunctions(ckpt.net.eval(), "cpu"), window_frames=T,
                     geometry_dims=ckpt.config.geometry_dims, max_streams=max_streams,
                     geometry=ckpt.geometry)


def run_threads(model: StreamModel, clips: list[Clip], done: Callable[[], None] = lambda: None):
    """Every clip in a spotter of ``model`` on a thread of its own; the events of each."""
    results: list[list[SpotEvent] | BaseException] = [[] for _ in clips]

    def run(i: int) -> None:
        try:
            results[i] = push_clip(open_spotter(model, f"s{i}"), clips[i])
        except BaseException as e:
            results[i] = e
        finally:
            done()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(clips))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S * 4)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


def test_streams_sharing_the_tier_give_each_stream_its_own_events(
    ckpt, backend, two_identities
) -> None:
    """Three streams (60 FPS, 30 FPS, one with two segments) in shared steps == each alone
    through the per-stream Engine == offline spot_video, event for event."""
    clips = make_clips(two_identities)
    merger = gap_merger(offline_probs(backend, clips))
    service = TierService(tier_of(ckpt))
    lockstep = Lockstep(service, len(clips))
    engine = TierEngine(lockstep, T, backend.geometry)
    shared = run_threads(StreamModel(engine, merger, STRIDE), clips, lockstep.done)
    assert max(lockstep.sizes) == 3 and service.counts.by_step[3] > 10  # shared steps
    alone_model = StreamModel.over(backend, merger, STRIDE)
    n_final = 0
    for i, clip in enumerate(clips):
        alone = push_clip(open_spotter(alone_model, f"s{i}"), clip)
        want = offline_events(backend, clip, merger)
        assert_same_events(streaming_tuples(shared[i]), streaming_tuples(alone), want)
        n_final += sum(w[0] == "final" for w in want)
    assert n_final >= 3  # the comparison is not vacuous
    assert service.streams == 0  # every key was released at the end of its segment or stream


def test_the_combiner_serves_every_waiting_stream_in_one_step(ckpt) -> None:
    """While one step runs, the other streams' requests wait; the next step takes them all."""
    first_in, go = threading.Event(), threading.Event()

    sizes: list[int] = []

    class Held(TierService):
        def serve(self, requests):
            sizes.append(len(requests))
            if len(sizes) == 1:
                first_in.set()
                assert go.wait(WAIT_S)
            return super().serve(requests)

    service = Held(tier_of(ckpt))
    shared = SharedTier(service)
    s = synthetic_streams(4, T, geometry=True, seed=2, fps=(60,))
    replies: dict[int, TierReply] = {}

    def send(i: int) -> None:
        req = TierRequest(f"k{i}", np.arange(T), np.ones(T, bool), s[i].frames[:T], s[i].geom,
                          np.array([0]))
        replies[i] = shared.step(req)

    threads = [threading.Thread(target=send, args=(0,))]
    threads[0].start()
    assert first_in.wait(WAIT_S)
    threads += [threading.Thread(target=send, args=(i,)) for i in (1, 2, 3)]
    for t in threads[1:]:
        t.start()
    for _ in range(int(WAIT_S * 100)):
        if shared.waiting == 3:
            break
        threading.Event().wait(0.01)
    assert shared.waiting == 3
    go.set()
    for t in threads:
        t.join(WAIT_S)
    assert sizes == [1, 3]
    # the same windows as one step of all four
    alone = TierService(tier_of(ckpt)).serve([
        TierRequest(f"k{i}", np.arange(T), np.ones(T, bool), s[i].frames[:T], s[i].geom,
                    np.array([0])) for i in range(4)])
    for i in range(4):
        assert np.abs(replies[i].probs - alone[i].probs).max() < 1e-5


def test_a_failing_step_reaches_every_waiting_stream(ckpt) -> None:
    class Broken(TierService):
        def serve(self, requests):
            raise RuntimeError("device lost")

    shared = SharedTier(Broken(tier_of(ckpt)))
    req = TierRequest("k", np.zeros(0, np.int64), np.zeros(0, bool),
                      np.zeros((0, 112, 112, 3), np.uint8), None, np.zeros(0, np.int64))
    with pytest.raises(RuntimeError, match="device lost"):
        shared.step(req)
    with pytest.raises(RuntimeError, match="device lost"):  # the next caller is not stuck
        shared.step(req)


class NewReplica:
    """A test transport: after ``lose_after`` requests the service is replaced by a fresh one
    (what a restarted replica is: the tier holds nothing of the stream)."""

    name = "replaced"

    def __init__(self, make: Callable[[], TierService], lose_after: int) -> None:
        self.make, self.lose_after = make, lose_after
        self.service = make()
        self.requests = 0

    def step(self, request: TierRequest) -> TierReply:
        self.requests += 1
        if self.requests == self.lose_after:
            self.service = self.make()
        return self.service.serve([request])[0]

    def take_notices(self) -> list[str]:
        return []


@pytest.mark.parametrize(("fps", "lose_after"), [(60.0, 20), (20.0, 22)])
def test_a_lost_ring_is_rebuilt_and_reported(ckpt, backend, two_identities, fps, lose_after):
    """A fresh replica mid-stream: its windows come back missing, the stream re-sends the
    window's slots and says so in one status event; its expression events are exactly those of
    the run without the loss (none lost, wrong or repeated). At 20 FPS (a frame fills 3 slots)
    the request after the loss begins with a repeated slot, no crop, so the tier reports it
    lost, not wrong, and the window re-sent begins with a repeated slot too: it must carry its
    crop."""
    face = two_identities[0].landmarks * (112 / 256)
    clip = make_clip(face, 13, fps, int(4 * fps), [(1.2, 2.6)])
    merger = gap_merger(offline_probs(backend, [clip]))
    reference = push_clip(open_spotter(StreamModel.over(backend, merger, STRIDE), "s"), clip)
    transport = NewReplica(lambda: TierService(tier_of(ckpt)), lose_after)
    engine = TierEngine(transport, T, backend.geometry)
    events = push_clip(open_spotter(StreamModel(engine, merger, STRIDE), "s"), clip)
    status = [e for e in events if e.type == "status"]
    assert len(status) == 1 and "rebuilt" in status[0].message
    assert_same_events(streaming_tuples(events), streaming_tuples(reference))
    assert any(e.state == "final" for e in reference if e.type == "expression")
    assert transport.service.counts.lost == (1 if fps == 20.0 else 0)


class Sharpen:
    """A stand-in for a backend that post-processes its network's probabilities (the fused
    spotter's shape): ``window`` = ``post_window(net.window(...), geom)``."""

    name = "sharpen"

    def __init__(self, net) -> None:
        self.net, self.geometry = net, net.geometry

    def encode(self, frames_u8):
        return self.net.encode(frames_u8)

    def post_window(self, probs, geom):
        z = np.abs(geom[..., -1:]) if geom is not None else 0.0
        p = probs**2 * (1.0 + z * np.array([0.0, 0.5, 0.2]))
        return (p / p.sum(-1, keepdims=True)).astype(np.float32)

    def window(self, x_prime, x_atten, geom=None):
        return self.post_window(self.net.window(x_prime, x_atten, geom), geom)


def test_post_processing_composes_with_the_tier(ckpt, backend, two_identities) -> None:
    """The tier computes the network's part; the post-processing runs on the stream's side over
    the window's geometry: the same events as the wrapper backend streamed alone and offline."""
    clip = make_clips(two_identities)[0]
    post = Sharpen(backend)
    assert split_post(post) == (backend, post.post_window)
    assert split_post(Sharpen(post))[0] is backend  # wrappers of wrappers compose
    merger = gap_merger(offline_probs(post, [clip]))
    tier_model = StreamModel.on_tier(tier_of(ckpt), merger, STRIDE, post=post)
    on_tier = push_clip(open_spotter(tier_model, "s"), clip)
    alone = push_clip(open_spotter(StreamModel.over(post, merger, STRIDE), "s"), clip)
    want = offline_events(post, clip, merger)
    assert_same_events(streaming_tuples(on_tier), streaming_tuples(alone), want)
    assert any(w[0] == "final" for w in want)
    plain = offline_events(backend, clip, merger)
    assert not same_events(plain, want)  # the post-processing changed the events: not vacuous


def test_one_bad_request_fails_alone_and_keys_are_bounded(ckpt) -> None:
    service = TierService(tier_of(ckpt, max_streams=2))
    s = synthetic_streams(3, 40, geometry=True, seed=3, fps=(30,))

    def req(key: str, i: int, lo: int, hi: int, starts=()) -> TierRequest:
        hc = s[i].has_crop[lo:hi]
        done = int(s[i].has_crop[:lo].sum())
        return TierRequest(key, np.arange(lo, hi), hc, s[i].frames[done : done + int(hc.sum())],
                           s[i].geom[lo:hi], np.asarray(starts, np.int64))

    bad = dataclasses.replace(req("b", 1, 0, 4), geom=np.zeros((4, 3), np.float32))
    good, bad_r = service.serve([req("a", 0, 0, 34, [0]), bad])
    assert not good.missing.any() and bad_r.error is not None and "geom" in bad_r.error
    assert service.streams == 1  # the refused key keeps no block
    # a repeated first slot that this tier never held: lost, not wrong, nothing applied
    (lost,) = service.serve([req("c", 2, 33, 36, [4])])
    assert lost.lost and lost.missing.all() and service.streams == 1
    # both blocks taken ("a", "e"): a new key takes the least recently used one's
    service.serve([req("e", 2, 0, 2)])
    service.serve([req("d", 1, 0, 2)])
    assert service.counts.evicted == 1 and service.streams == 2
    (gone,) = service.serve([req("a", 0, 34, 38, [4])])  # "a" was evicted: missing, not wrong
    assert gone.missing.all()
    # a key twice in one call: served in order, one step each
    steps = service.counts.steps
    _, r2 = service.serve([req("d", 1, 2, 34), req("d", 1, 34, 38, [4])])
    assert not r2.missing.any() and service.counts.steps == steps + 2
    service.release(["a", "d", "e"])
    assert service.streams == 0


def test_serving_rules() -> None:
    """auto: the CUDA tier where a GPU is present, the engine on a CPU (measured: the tier was
    no faster there); an explicit choice is kept; the landmark peer has no network to tier."""
    cpu = {"cuda": False}
    for backend in ("auto", "onnx", "torch", "torch-compile"):
        assert serving_of(RuntimeConfig(backend=backend), **cpu)[0] == "engine"
    assert serving_of(RuntimeConfig(backend="torch", serving="tier"), **cpu) == ("tier", {
        "name": "torch", "device": "cpu", "precision": "fp32", "compile": False, "threads": None})
    assert serving_of(RuntimeConfig(backend="onnx", serving="tier"), **cpu)[1]["name"] == "onnx"
    assert serving_of(RuntimeConfig(backend="torch", serving="engine"), cuda=True)[0] == "engine"
    serving, opts = serving_of(RuntimeConfig(), cuda=True)
    assert serving == "tier" and opts == {"name": "torch", "device": "cuda", "precision": "fp16",
                                          "graphs": True, "compile": True}
    serving, opts = serving_of(RuntimeConfig(backend="tensorrt"), cuda=True)
    assert serving == "tier" and opts["name"] == "tensorrt"
    assert serving_of(RuntimeConfig(backend="onnx"), cuda=True)[0] == "engine"
    assert serving_of(RuntimeConfig(method="landmarks"), cuda=True)[0] == "engine"
    with pytest.raises(LoadError, match="landmark"):
        serving_of(RuntimeConfig(method="landmarks", serving="tier"))
    with pytest.raises(LoadError, match="unknown serving"):
        serving_of(RuntimeConfig(serving="gpu"))


def test_the_loader_puts_streams_on_a_tier_when_asked() -> None:
    """``load_runtime`` with ``--serving tier`` on this CPU: StreamModel.of puts the streams on
    a tier in this process, with the runtime's merger and stride; by default, an Engine."""
    from fesnet.model.runtime import load_runtime

    runtime = load_runtime(RuntimeConfig(backend="onnx", threads=1, serving="tier"))
    assert runtime.serving == "tier" and runtime.remote_tier is None
    model = StreamModel.of(runtime, max_streams=2)
    assert isinstance(model.engine, TierEngine) and model.stride_frames == runtime.stride_frames
    tier = model.engine.transport.service.tier
    assert tier.max_streams == 2 and tier.name.startswith("onnx-cpu-fp32")
    assert isinstance(StreamModel.of(runtime, "naive").engine, Engine)  # a baseline's
    plain = load_runtime(RuntimeConfig(backend="onnx", threads=1))
    assert plain.serving == "engine" and isinstance(StreamModel.of(plain).engine, Engine)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_auto_streams_use_the_cuda_tier_on_a_gpu(two_identities) -> None:
    from fesnet.model.runtime import load_runtime

    runtime = load_runtime(RuntimeConfig(backend="torch"))  # not compiled: minutes otherwise
    model = StreamModel.of(runtime, max_streams=4)
    assert isinstance(model.engine, TierEngine)
    assert model.engine.transport.service.tier.device.type == "cuda"
    clip = make_clips(two_identities)[1]
    events = push_clip(open_spotter(model, "s"), clip)
    assert all(e.type != "status" for e in events)


def test_a_request_without_slots_or_windows_only_releases(ckpt) -> None:
    service = TierService(tier_of(ckpt))
    s = synthetic_streams(1, T, geometry=True, seed=4, fps=(60,))[0]
    service.serve([TierRequest("x", np.arange(T), np.ones(T, bool), s.frames[:T], s.geom,
                               np.zeros(0, np.int64))])
    assert service.streams == 1
    (r,) = service.serve([TierRequest("y", np.zeros(0, np.int64), np.zeros(0, bool),
                                      np.zeros((0, 112, 112, 3), np.uint8), None,
                                      np.zeros(0, np.int64), release=("x",))])
    assert service.streams == 0 and r.probs.shape == (0, T, 3)


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", ["onnx", "torch"])
def test_fesnet_spot_run_on_the_tier_gives_the_engines_events(tmp_path, backend_name) -> None:
    """Real parts end to end: two copies of the sample clip through ``fesnet-spot run`` in one
    process (mediapipe, the stream threads, the shared tier's combiner) give exactly the events
    of the per-stream engine, to the last digit written: ONNX Runtime gives a crop the same bits
    alone or in a batch; torch's batched encoder is compared by event, scores to 4 decimals."""
    from cluster_helpers import SAMPLE, events, finish, run_cli, spotting

    runs = {}
    for serving in ("engine", "tier"):
        path = tmp_path / f"{serving}.jsonl"
        code, out, err = finish(run_cli([
            "--source", str(SAMPLE), "--source", str(SAMPLE), "--events", str(path),
            "--backend", backend_name, "--serving", serving]))
        assert code == 0, err[-3000:]
        assert ("model tier" in out) == (serving == "tier"), out[-2000:]
        runs[serving] = events(path)
    assert any(e["type"] == "expression" for e in runs["engine"]), "nothing to compare"
    for stream in ("s0", "s1"):
        engine, tier = spotting(runs["engine"], stream), spotting(runs["tier"], stream)
        if backend_name == "onnx":
            assert tier == engine
        else:
            def rounded(evs):
                return [{k: round(v, 4) if isinstance(v, float) else v for k, v in e.items()}
                        for e in evs]
            assert rounded(tier) == rounded(engine)
