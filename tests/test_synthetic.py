"""Synthetic expression videos: determinism, label rules, identities."""

from __future__ import annotations

import numpy as np
import pytest

from fesnet.model.data.synthetic import (
    MAE,
    ME,
    SyntheticSpec,
    SyntheticStream,
    available_identities,
    generate_video,
    iter_frames,
    plan_video,
    train_test_identities,
)
from fesnet.model.datasets import SyntheticSetConfig, synthetic_jobs

TINY = SyntheticSpec(
    duration_s=5.0, fps=30.0, n_me=1, n_mae=1, frame_size=(96, 96), min_gap_s=0.6,
    mae_duration_s=(0.6, 1.5),
)
CLEAN = SyntheticSpec(
    duration_s=5.0, fps=30.0, n_me=1, n_mae=1, frame_size=(128, 128), min_gap_s=0.6,
    mae_duration_s=(0.6, 1.5), blink_rate_hz=0.0, head_drift_px=0.0, head_drift_deg=0.0,
    head_drift_scale=0.0, jitter_px=0.0, n_head_moves=0, lighting_drift=0.0, n_light_changes=0,
    noise_sigma=(0.0, 0.0), jpeg_quality=None,
)


def test_same_seed_same_bytes_different_seed_differs(two_identities):
    identity = two_identities[0]
    a = generate_video(identity, TINY, seed=7)
    b = generate_video(identity, TINY, seed=7)
    c = generate_video(identity, TINY, seed=8)
    assert a.frames.shape == (150, 96, 96, 3) and a.frames.dtype == np.uint8
    np.testing.assert_array_equal(a.frames, b.frames)
    assert a.intervals == b.intervals and a.video_id == b.video_id
    assert not np.array_equal(a.frames, c.frames)
    assert a.video_id != c.video_id
    np.testing.assert_allclose(a.timestamps_s, np.arange(150) / 30.0)


def test_stream_equals_batch(two_identities):
    identity = two_identities[1]
    video = generate_video(identity, TINY, seed=3)
    streamed = np.stack(list(iter_frames(identity, TINY, seed=3)))
    np.testing.assert_array_equal(video.frames, streamed)
    stream = SyntheticStream(identity, TINY, seed=3)
    for i in (149, 0, 77):
        np.testing.assert_array_equal(stream.frame(i), video.frames[i])


@pytest.mark.parametrize("fps", [30.0, 60.0, 200.0])
def test_labels_obey_duration_and_gap_rules(fps: float):
    spec = SyntheticSpec(duration_s=40.0, fps=fps, n_me=5, n_mae=4)
    for seed in range(20):
        plan = plan_video(spec, seed)
        events = sorted(plan.events, key=lambda e: e.onset)
        assert sum(e.label == ME for e in events) == 5
        assert sum(e.label == MAE for e in events) == 4
        min_gap = int(np.ceil(spec.min_gap_s * fps))
        prev_end = -1
        for e in events:
            n = e.offset - e.onset + 1
            if e.label == ME:
                assert n / fps <= 0.5 and e.amplitude_px <= spec.me_amplitude_px[1]
            else:
                assert n / fps > 0.5 and e.amplitude_px >= spec.mae_amplitude_px[0]
            assert 1 <= len(e.aus) <= 3
            assert e.onset - prev_end - 1 >= min_gap
            prev_end = e.offset
        assert plan.n_frames - 1 - prev_end >= min_gap
        # Expression motion exactly on the labelled frames.
        moving = np.zeros(plan.n_frames, bool)
        for track in plan.au_amplitude.values():
            moving |= track > 0
        labelled = np.zeros(plan.n_frames, bool)
        for e in events:
            labelled[e.onset : e.offset + 1] = True
        np.testing.assert_array_equal(moving, labelled)
        # Blinks stay out of MEs.
        for start, end in plan.blink_frames:
            for e in events:
                if e.label == ME:
                    assert end < e.onset or start > e.offset


def test_only_labelled_frames_move_without_distractors(two_identities):
    video = generate_video(two_identities[0], CLEAN, seed=5)
    labels = video.labels()
    neutral = video.frames[labels == 0]
    assert (neutral == neutral[0]).all()
    for onset, offset, _ in video.intervals:
        apex = (onset + offset) // 2
        assert np.abs(video.frames[apex].astype(int) - neutral[0]).max() > 10


def test_events_that_do_not_fit_raise():
    with pytest.raises(ValueError, match="do not fit"):
        plan_video(SyntheticSpec(duration_s=3.0, n_me=3, n_mae=3), seed=0)


def test_spec_rejects_long_me():
    with pytest.raises(ValueError):
        SyntheticSpec(me_duration_s=(0.2, 0.8))


def test_larger_canvas(two_identities):
    spec = SyntheticSpec(
        duration_s=2.0, fps=30.0, n_me=0, n_mae=1, frame_size=(160, 120), face_size_px=80,
        mae_duration_s=(0.6, 0.7), min_gap_s=0.5,
    )
    video = generate_video(two_identities[1], spec, seed=1)
    assert video.frames.shape == (60, 120, 160, 3)


def test_train_test_identities_disjoint_and_shipped():
    train, test = train_test_identities()
    assert train and test and not set(train) & set(test)
    assert set(train) | set(test) <= set(available_identities())
    assert len(set(train) | set(test)) >= 10


def test_set_splits_add_look_videos_to_train_and_val_only():
    """Plain videos keep their seeds (and so their caches); look videos draw a random look each;
    the held-out test split stays plain; no seed is used twice."""
    cfg = SyntheticSetConfig(train_look_videos_per_identity=2, val_look_videos_per_identity=1)
    train_ids, test_ids = train_test_identities()
    seeds = []
    for split, n_look in (("train", 2), ("val", 1), ("test", 0)):
        jobs = synthetic_jobs(split, cfg)
        looks = [spec for _, spec, _ in jobs if spec.rest_aus]
        assert len(looks) == n_look * len(train_ids if split != "test" else test_ids)
        assert len({spec.digest() for spec in looks}) == len(looks)
        assert all(0.55 <= s.light_gain <= 1.3 and 0.88 <= s.face_aspect <= 1.12 for s in looks)
        assert all(s == SyntheticSpec(duration_s=cfg.duration_s) for _, s, _ in jobs
                   if not s.rest_aus)  # fmt: skip
        seeds += [seed for _, _, seed in jobs]
    assert len(seeds) == len(set(seeds))
    assert [seed for _, _, seed in synthetic_jobs("train", cfg)][:2] == [0, 1]
    with pytest.raises(ValueError, match="unknown split"):
        synthetic_jobs("dev", cfg)


def test_identity_landmarks(two_identities):
    for identity in two_identities:
        assert identity.image.shape == (256, 256, 3)
        assert identity.landmarks.shape == (468, 2)
        assert 30 < identity.iod_px < 150


def test_shipped_sample_clip_matches_truth():
    import json
    from pathlib import Path

    import cv2

    assets = Path(__file__).resolve().parents[1] / "realtime" / "assets"
    truth = json.loads((assets / "sample_truth.json").read_text())
    assert truth["identity"] in train_test_identities()[1]
    assert truth["fps"] == 30.0 and truth["frame_size"] == [640, 480]
    cap = cv2.VideoCapture(str(assets / "sample.mp4"))
    assert cap.isOpened()
    n = 0
    while cap.grab():
        n += 1
    cap.release()
    assert n == truth["n_frames"] == 600
    labels = {iv["label"] for iv in truth["intervals"]}
    assert labels == {ME, MAE}
    for iv in truth["intervals"]:
        n_frames = iv["offset"] - iv["onset"] + 1
        assert (n_frames / truth["fps"] <= 0.5) == (iv["label"] == ME)
        assert iv["onset_s"] == pytest.approx(iv["onset"] / truth["fps"])
