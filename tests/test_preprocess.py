"""60 Hz resampling, the aligned-crop cache, and training windows over aligned videos."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest

from fesnet.model.data.align import AlignResult, FaceAligner
from fesnet.model.data.common import ForwardReader, VideoRecord
from fesnet.model.data.preprocess import (
    AlignedVideo,
    PreprocessError,
    PreprocessSettings,
    cache_path,
    preprocess_record,
    preprocess_synthetic,
)
from fesnet.model.data.resample import Resampler, resample_indices
from fesnet.model.data.synthetic import SyntheticSpec, SyntheticStream, generate_video


def test_resample_30_to_60_duplicates_each_frame():
    assert resample_indices([i / 30 for i in range(50)]) == [i // 2 for i in range(100)]


def test_resample_60_to_60_is_identity():
    assert resample_indices([5.0 + i / 60 for i in range(120)]) == list(range(120))


def test_resample_200_to_60_subsamples_nearest():
    idx = resample_indices([i / 200 for i in range(400)])
    assert idx == [round(k * 200 / 60) for k in range(len(idx))]
    assert len(idx) == 120


def test_resample_jittered_timestamps():
    rng = np.random.default_rng(1)
    n = 300
    ts = np.arange(n) / 30 + rng.uniform(-0.005, 0.005, n)
    idx = resample_indices(list(ts))
    assert all(b - a in (0, 1) for a, b in itertools.pairwise(idx))
    assert set(idx) == set(range(n))
    slot_t = ts[0] + np.arange(len(idx)) / 60
    # Every slot took the frame nearest in time (ties aside).
    err = np.abs(ts[idx] - slot_t)
    best = np.abs(ts[None, :] - slot_t[:, None]).min(axis=1)
    np.testing.assert_allclose(err, best, atol=1e-9)


def test_resampler_streaming_and_drops():
    r: Resampler[str] = Resampler(60.0)
    out = []
    for i, t in enumerate([0.0, 1 / 30, 1 / 30, 0.01, 2 / 30]):
        out += r.push(t, f"f{i}")
    out += r.flush()
    assert [s for s, _ in out] == list(range(6))
    assert [x for _, x in out] == ["f0", "f0", "f1", "f1", "f4", "f4"]
    assert r.n_dropped == 2 and r.n_pushed == 5 and r.n_slots == 6
    r.reset()
    assert r.flush() == [] and r.t0 is None


def test_resampler_emits_each_slot_as_soon_as_its_frame_is_known():
    """A slot at or before the newest frame's time is out with that frame (no later frame can be
    nearer to it), and the slots emitted this way are exactly the offline assignment."""
    r60: Resampler[int] = Resampler(60.0)
    assert [r60.push(5.0 + i / 60, i) for i in range(4)] == [[(i, i)] for i in range(4)]
    rng = np.random.default_rng(2)
    ts = np.arange(120) / 30 + rng.uniform(-0.005, 0.005, 120)
    r: Resampler[int] = Resampler(60.0)
    out: list[tuple[int, int]] = []
    for i, t in enumerate(ts):
        out += r.push(float(t), i)
        assert len(out) == int(np.sum(ts[0] + np.arange(400) / 60 <= t + 1e-9))
    out += r.flush()
    assert [s for s, _ in out] == list(range(len(out)))
    assert [x for _, x in out] == resample_indices(list(ts))


def test_resampler_gap_holds_nearest():
    # A 100 ms gap: slots up to the midpoint (a tie goes to the older frame) hold frame 0; flush
    # gives the last frame half of the last interval (50 ms) after it.
    idx = resample_indices([0.0, 0.1])
    assert idx == [0] * 4 + [1] * 6
    with pytest.raises(ValueError):
        Resampler(0.0)


class CountingAligner(FaceAligner):
    """The real aligner, counting how many frames it was asked to align."""

    calls = 0

    def align(self, frame_bgr: np.ndarray) -> AlignResult:
        self.calls += 1
        return super().align(frame_bgr)


SPEC = SyntheticSpec(
    duration_s=3.0, fps=30.0, n_me=1, n_mae=1, frame_size=(160, 160), min_gap_s=0.4,
    mae_duration_s=(0.6, 0.8),
)


def test_synthetic_preprocess_and_cache_hit(two_identities, tmp_path: Path):
    stream = SyntheticStream(two_identities[0], SPEC, seed=2)
    with CountingAligner(static_image_mode=False) as aligner:
        first = preprocess_synthetic(stream, aligner=aligner, cache_dir=tmp_path)
        assert aligner.calls == 90  # every 30 FPS source frame once, not once per slot
        second = preprocess_synthetic(stream, aligner=aligner, cache_dir=tmp_path)
        assert aligner.calls == 90
    assert len(first) == 180 and first.crops.shape == (180, 112, 112, 3)
    assert first.crops.dtype == np.uint8 and first.labels.dtype == np.int64
    np.testing.assert_array_equal(first.source_index, np.arange(180) // 2)
    np.testing.assert_array_equal(first.labels, stream.labels()[first.source_index])
    np.testing.assert_array_equal(first.crops, second.crops)
    # Landmarks are stored per slot in crop pixels: the least-squares similarity puts the centroid
    # of the five alignment points on the template's centroid.
    from fesnet.model.data.align import canonical_template, keypoints_from_landmarks

    assert first.landmarks is not None and first.landmarks.shape == (180, 468, 2)
    np.testing.assert_array_equal(first.landmarks, second.landmarks)
    centroids = np.stack([keypoints_from_landmarks(lm).mean(0) for lm in first.landmarks])
    assert np.abs(centroids - canonical_template(112).mean(0)).max() < 0.5
    assert second.video_id == stream.video_id and second.subject == two_identities[0].name
    assert first.n_missing == 0 and second.fps_source == 30.0
    # Slot intervals are the source intervals doubled.
    assert first.intervals == [(2 * a, 2 * b + 1, lab) for a, b, lab in stream.intervals]
    # By identity name + spec + seed (the training path): a cache hit renders nothing.
    by_name = preprocess_synthetic(
        two_identities[0].name, SPEC, 2, aligner=aligner, cache_dir=tmp_path
    )
    np.testing.assert_array_equal(by_name.crops, first.crops)
    fresh = preprocess_synthetic(two_identities[0].name, SPEC, 2)  # miss: render and align
    np.testing.assert_array_equal(fresh.crops, first.crops)
    other = PreprocessSettings(crop_size=64)
    assert cache_path(tmp_path, stream.video_id, other) != cache_path(
        tmp_path, stream.video_id, PreprocessSettings()
    )


def test_faceless_frames_hold_last_crop(two_identities):
    video = generate_video(two_identities[1], SPEC, seed=4)
    frames = video.frames.copy()
    frames[10:14] = 128
    frames[:2] = 128
    blanked = dataclasses.replace(video, frames=frames)
    with FaceAligner(static_image_mode=True) as aligner:
        result = preprocess_synthetic(blanked, aligner=aligner)
    assert result.n_missing == 6
    by_source = {int(s): k for k, s in enumerate(result.source_index)}
    np.testing.assert_array_equal(result.crops[by_source[10]], result.crops[by_source[9]])
    np.testing.assert_array_equal(result.crops[by_source[0]], result.crops[by_source[2]])
    np.testing.assert_array_equal(result.landmarks[by_source[10]], result.landmarks[by_source[9]])


def test_no_face_at_all_raises(tmp_path: Path):
    import cv2

    paths = []
    for i in range(4):
        p = tmp_path / f"img{i}.jpg"
        cv2.imwrite(str(p), np.full((64, 64, 3), 100, np.uint8))
        paths.append(p)
    record = VideoRecord("blank", "s0", 30.0, paths, [(1, 2, 1)])
    with pytest.raises(PreprocessError, match="no face"):
        preprocess_record(record, cache_dir=tmp_path / "cache")


def test_record_from_image_files_and_video_file(two_identities, tmp_path: Path):
    import cv2

    video = generate_video(two_identities[0], SPEC, seed=9)
    paths = []
    for i, frame in enumerate(video.frames[:20]):
        p = tmp_path / f"img{i + 1}.jpg"
        cv2.imwrite(str(p), frame)
        paths.append(p)
    record = VideoRecord("imgs", "s1", 200.0, paths, [(3, 9, 1)])
    aligned = preprocess_record(record, cache_dir=tmp_path / "cache")
    assert isinstance(aligned, AlignedVideo)
    np.testing.assert_array_equal(aligned.source_index, [0, 3, 7, 10, 13, 17])
    np.testing.assert_array_equal(aligned.labels, [0, 1, 1, 0, 0, 0])

    mp4 = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(mp4), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (160, 160))
    for frame in video.frames[:15]:
        writer.write(frame)
    writer.release()
    vrec = VideoRecord("vid", "s1", 30.0, mp4, [(5, 6, 2)])
    aligned_v = preprocess_record(vrec)
    assert len(aligned_v) == 30
    assert aligned_v.labels.tolist().count(2) == 4


def test_a_forward_reader_decodes_in_order_repeats_the_last_and_restarts_to_go_back():
    decoded, released = [], []

    def frames():
        try:
            for i in range(5):
                decoded.append(i)
                yield np.full((2, 2, 3), i, np.uint8)
        finally:
            released.append(len(decoded))

    read = ForwardReader(frames)
    assert read(0)[0, 0, 0] == 0 and read(0)[0, 0, 0] == 0 and decoded == [0]
    assert read(3)[0, 0, 0] == 3 and decoded == [0, 1, 2, 3]  # 1 and 2 decoded and dropped
    assert read(3)[0, 0, 0] == 3 and decoded == [0, 1, 2, 3]  # the last one is kept
    assert read(1)[0, 0, 0] == 1 and decoded == [0, 1, 2, 3, 0, 1] and released == [4]
    read.close()  # the source is let go of (a video file released)
    assert released == [4, 6]
    assert read(1)[0, 0, 0] == 1 and len(decoded) == 6  # the kept frame outlives close()
    with pytest.raises(IndexError, match="past the end"):
        read(5)
    with pytest.raises(IndexError):
        read(-1)
