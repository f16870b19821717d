"""60 Hz resampling, the aligned-crop cache, and training windows over aligned videos."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from fesnet.model.data.align import AlignResult, FaceAligner
from fesnet.model.data.common import VideoRecord
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
from fesnet.model.data.windows import WindowDataset, class_counts, class_weights


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


# Training windows (model/data/windows.py) over small hand-made aligned videos.

def make_video(n: int, intervals: list[tuple[int, int, int]], vid: str = "v") -> AlignedVideo:
    crops = np.zeros((n, 112, 112, 3), np.uint8)
    crops[:, :, :, 0] = (np.arange(n) % 256)[:, None, None]  # frame index in the red channel
    crops[:, :, :56, 1] = 200  # left half marked, to see flips
    labels = np.zeros(n, np.int64)
    for a, b, lab in intervals:
        labels[a : b + 1] = lab
    return AlignedVideo(vid, "s", crops, labels, np.arange(n), 60.0)


def test_window_shapes_and_contiguity():
    ds = WindowDataset([make_video(200, [(50, 60, 1)])], window_frames=32, seed=1)
    frames, labels = ds[0]
    assert frames.shape == (32, 112, 112, 3) and frames.dtype == torch.uint8
    assert labels.shape == (32,) and labels.dtype == torch.int64
    red = frames[:, 0, 0, 0].numpy().astype(int)
    assert (np.diff(red) == 1).all()


def test_oversampling_and_reproducibility():
    video = make_video(3000, [(1000, 1020, 1), (2000, 2100, 2)])
    ds = WindowDataset([video], window_frames=32, windows_per_epoch=200, expression_fraction=0.5)
    hits = sum(int((ds[i][1] > 0).any()) for i in range(200))
    assert 80 <= hits <= 140  # about half, far above the 5% a uniform draw gives
    np.testing.assert_array_equal(ds[3][0].numpy(), ds[3][0].numpy())
    before = ds[3][0].numpy().copy()
    ds.set_epoch(1)
    assert not np.array_equal(before, ds[3][0].numpy())


def test_augmentation_consistent_across_window():
    ds = WindowDataset([make_video(100, [])], augment=True, windows_per_epoch=20, seed=3)
    flips = 0
    for i in range(20):
        frames = ds[i][0].numpy()
        left = frames[:, :, :56, 1].mean(axis=(1, 2))
        right = frames[:, :, 56:, 1].mean(axis=(1, 2))
        flipped = left < right
        assert flipped.all() or (~flipped).all()
        flips += int(flipped[0])
    assert 0 < flips < 20


def test_short_videos_skipped_and_errors():
    ds = WindowDataset([make_video(10, []), make_video(40, [])], window_frames=32)
    assert len(ds.videos) == 1
    with pytest.raises(ValueError):
        WindowDataset([make_video(10, [])], window_frames=32)


def test_class_weights_inverse_frequency():
    videos = [make_video(100, [(10, 19, 1), (40, 69, 2)])]
    assert class_counts(videos).tolist() == [60, 10, 30]
    w = class_weights(videos).numpy()
    inv = np.array([1 / 60, 1 / 10, 1 / 30])
    np.testing.assert_allclose(w, inv / inv.mean(), rtol=1e-6)
    w0 = class_weights([make_video(50, [(1, 5, 2)])]).numpy()
    assert w0[1] == 0 and w0[0] > 0 and w0[2] > w0[0]
