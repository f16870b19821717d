"""Streaming output == offline output: same window starts, same backend functions, same merger.

The offline reference is fesnet.model.inference.spot_video (encode every frame once, window head on
every ``window_starts`` window, merge_offline). The streaming side is the realtime Spotter fed
frame by frame (resampler -> ring with cached features -> scheduler -> engine -> merger).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from spot_helpers import make_pipeline, make_spotter

from fesnet.model.backends import TorchBackend
from fesnet.model.data.resample import resample_indices
from fesnet.model.fesnet import FESNet, FESNetConfig
from fesnet.model.inference import predict_windows, spot_video
from fesnet.model.merger import MergerConfig
from fesnet.realtime.engine import Engine
from fesnet.realtime.observers import ScoreLog
from fesnet.realtime.sinks import ListSink
from fesnet.realtime.sources import FileSource
from fesnet.realtime.types import Frame

FACES = Path(__file__).resolve().parents[1] / "model" / "data" / "faces"


def sharpened_tiny_backend(crops: np.ndarray) -> TorchBackend:
    """A tiny random FESNet whose final head is rescaled so its probabilities swing across the
    merger thresholds (an untrained net's output is nearly constant and would yield no events)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    net = FESNet(FESNetConfig.tiny()).eval()
    backend = TorchBackend(net)
    head = net.mtam.stages[-1]["heads"][-1]
    seen: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
    predict_windows(backend, crops, 32, 8)
    hook.remove()
    x = torch.cat(seen)  # (B, F, T) inputs of the head
    with torch.no_grad():
        logits = torch.einsum("cf,bft->bct", head.weight[:, :, 0], x)
        mu, sd = logits.mean(dim=(0, 2)), logits.std(dim=(0, 2))
        k = 3.0 / sd
        head.weight.mul_(k[:, None, None])
        head.bias.copy_(-k * mu)
    return backend


def make_crops(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)
    crops = np.repeat(base[None], n, 0)
    for s, e in [(40, 60), (120, 200), (240, 250)]:
        e = min(e, n)
        if s < e:
            crops[s:e] = rng.integers(0, 255, (e - s, 112, 112, 3), dtype=np.uint8)
    return crops


def offline_tuples(pred, source_index: np.ndarray) -> list[tuple]:
    return [
        (
            e.state,
            e.label,
            int(source_index[e.onset_slot]),
            int(source_index[e.apex_slot]),
            None if e.offset_slot is None else int(source_index[e.offset_slot]),
            float(e.score),
        )
        for e in pred.events
    ]


def streaming_tuples(events) -> list[tuple]:
    label = {"ME": 1, "MaE": 2}
    return [
        (e.state, label[e.label], e.onset_frame, e.apex_frame, e.offset_frame, float(e.score))
        for e in events
        if e.type == "expression"
    ]


SCORE_ATOL = 1e-4  # the same windows summed in another order (batch of 3 vs 1) differ in the
# last float32 bits; rounding both to 4 places then differs whenever a score lies on a boundary


def same_events(a: list[tuple], b: list[tuple]) -> bool:
    """The same events (state, class, onset, apex, offset: exactly) with the same scores to
    within SCORE_ATOL, for event tuples of :func:`streaming_tuples` / :func:`offline_tuples`."""
    return [t[:-1] for t in a] == [t[:-1] for t in b] and bool(
        np.all(np.abs(np.array([t[-1] for t in a]) - np.array([t[-1] for t in b])) <= SCORE_ATOL)
    )


def assert_same_events(got: list[tuple], *wants: list[tuple]) -> None:
    """:func:`same_events` of ``got`` and each of ``wants``, with a readable difference."""
    for want in wants:
        assert [t[:-1] for t in got] == [t[:-1] for t in want]
        np.testing.assert_allclose([t[-1] for t in got], [t[-1] for t in want], rtol=0,
                                   atol=SCORE_ATOL)


def run_streaming(backend, crops, fps_source: float, cfg: MergerConfig, stride: int):
    engine = Engine(backend, cfg.window_frames)  # its count says how often the encoder ran
    spotter = make_spotter(engine, cfg, stride, stream="s")
    scores = spotter.add_observer(ScoreLog())
    events = []
    for i, crop in enumerate(crops):
        frame = Frame(np.zeros((1, 1, 3), np.uint8), i, i / fps_source, 0, "s")
        events += spotter.push_crop(frame, crop)
    events += spotter.finish()
    return spotter, engine, scores, events


CFG = MergerConfig(min_expression_frames=3, gap_merge_s=0.02, commit_lag_frames=12)


@pytest.fixture(scope="module")
def backend() -> TorchBackend:
    return sharpened_tiny_backend(make_crops(301))


@pytest.mark.parametrize("stride", [8, 32])
def test_streaming_equals_offline_at_60fps(backend: TorchBackend, stride: int) -> None:
    n = 301  # not a multiple of the stride: the tail window is exercised
    crops = make_crops(n)
    offline = spot_video(backend, crops, CFG, stride_frames=stride)
    spotter, engine, score_log, events = run_streaming(backend, crops, 60.0, CFG, stride)

    assert spotter.summary()["windows"] == len(offline.starts)
    assert engine.encoded_frames == n  # the encoder ran once per frame
    want = offline_tuples(offline, np.arange(n))
    assert_same_events(streaming_tuples(events), want)
    if stride == 32:
        assert len([w for w in want if w[0] == "final"]) >= 3  # the comparison is not vacuous
    _, scores, src = score_log.arrays()
    np.testing.assert_array_equal(src, np.arange(n))
    np.testing.assert_allclose(scores, offline.fused_scores, atol=1e-5)
    onsets = {e.event_id for e in events if e.state == "onset"}
    closes = {e.event_id for e in events if e.state in ("final", "cancelled")}
    assert onsets == closes


def test_streaming_equals_offline_for_a_30fps_source(backend: TorchBackend) -> None:
    n_src = 160
    src_crops = make_crops(n_src, seed=1)
    timestamps = [i / 30.0 for i in range(n_src)]
    source_index = np.asarray(resample_indices(timestamps, 60.0))
    slot_crops = src_crops[source_index]
    offline = spot_video(backend, slot_crops, CFG, stride_frames=32)
    spotter, engine, score_log, events = run_streaming(backend, src_crops, 30.0, CFG, 32)

    assert engine.encoded_frames == n_src  # duplicated slots reuse cached features
    assert spotter.summary()["slots"] == len(source_index)
    assert_same_events(streaming_tuples(events), offline_tuples(offline, source_index))
    assert len(events) > 0
    _, scores, src = score_log.arrays()
    np.testing.assert_array_equal(src, source_index)
    np.testing.assert_allclose(scores, offline.fused_scores, atol=1e-5)


def write_face_clip(path: Path, n: int, fps: float) -> Path:
    """A real face (shipped image) drifting slowly, written as a video."""
    face = cv2.imread(str(FACES / "wolfgang.jpg"))
    assert face is not None
    h, w = 360, 480
    scale = 300 / max(face.shape[:2])
    face = cv2.resize(face, None, fx=scale, fy=scale)
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for i in range(n):
        canvas = np.full((h, w, 3), 90, np.uint8)
        dx, dy = 60 + int(20 * np.sin(i / 15)), 30 + int(5 * np.cos(i / 11))
        fh, fw = face.shape[:2]
        canvas[dy : dy + fh, dx : dx + fw] = face[: h - dy, : w - dx]
        out.write(canvas)
    out.release()
    return path


@pytest.mark.slow
def test_pipeline_on_a_real_face_video_equals_offline(tmp_path: Path) -> None:
    """Real decode + real mediapipe + threads against offline alignment of the same file."""
    from fesnet.model.data.align import FaceAligner

    clip = write_face_clip(tmp_path / "face.mp4", n=90, fps=30.0)
    cap = cv2.VideoCapture(str(clip))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    with FaceAligner() as aligner:
        src_crops = np.stack([aligner.align(f).crop for f in frames])
    source_index = np.asarray(resample_indices([i / 30.0 for i in range(len(frames))], 60.0))
    slot_crops = src_crops[source_index]
    backend = sharpened_tiny_backend(slot_crops)
    offline = spot_video(backend, slot_crops, CFG, stride_frames=32)

    sink, score_log = ListSink(), ScoreLog()
    pipe = make_pipeline(FileSource(clip), backend, CFG, 32, [sink], observers=[score_log])
    pipe.run()
    summary = pipe.summary()
    assert summary["frames"] == len(frames) and summary["dropped"] == 0
    assert sink.events[0].type == "face_found"
    want = offline_tuples(offline, source_index)
    assert len([w for w in want if w[0] == "final"]) >= 2  # the comparison is not vacuous
    assert_same_events(streaming_tuples(sink.events), want)
    _, scores, src = score_log.arrays()
    np.testing.assert_array_equal(src, source_index)
    np.testing.assert_allclose(scores, offline.fused_scores, atol=1e-4)
    assert all(e.latency_ms is not None and e.latency_ms >= 0 for e in sink.events)
