"""Synthetic expression videos: determinism, label rules, identities."""

from __future__ import annotations

import numpy as np
import pytest

from fesnet.model.data.identities import available_identities, person, train_test_identities
from fesnet.model.data.plan import plan_video
from fesnet.model.data.synthetic import (
    MAE,
    ME,
    SyntheticSpec,
    SyntheticStream,
    generate_video,
    iter_frames,
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


def test_set_splits_hold_out_people_and_a_motion_family():
    """Train: every training person and its mirror image, plain and look videos, in the
    training motion families. Val: the same people, new seeds. Test: only held-out people; its
    plain videos are the same as every earlier test split's (seeds and spec), and its holdout
    videos use a warp and profile no training video has. No seed is used twice."""
    cfg = SyntheticSetConfig()
    train_ids, test_ids = train_test_identities()
    jobs = {split: synthetic_jobs(split, cfg) for split in ("train", "val", "test")}
    train_people = {person(i) for i, _, _ in jobs["train"]}
    assert train_people == set(train_ids) == {person(i) for i, _, _ in jobs["val"]}
    assert {i for i, _, _ in jobs["test"]} == set(test_ids)
    assert any(i.endswith("~flip") for i, _, _ in jobs["train"])
    assert len(jobs["train"]) == 2 * len(train_ids) * 2
    for split in ("train", "val"):
        looks = [spec for _, spec, _ in jobs[split] if spec.rest_aus]
        assert len(looks) == len(jobs[split]) // 2
        assert len({spec.digest() for spec in looks}) == len(looks)
        assert all(0.55 <= s.light_gain <= 1.3 and 0.88 <= s.face_aspect <= 1.12 for s in looks)
        assert {s.warp for _, s, _ in jobs[split]} == {"shepard"}
        assert all(s.profiles == cfg.train_profiles for _, s, _ in jobs[split])
    plain = [(i, s, seed) for i, s, seed in jobs["test"] if s.warp == "shepard"]
    holdout = [s for _, s, _ in jobs["test"] if s.warp != "shepard"]
    assert [seed for *_, seed in plain] == [2000, 2001, 2010, 2011, 2020, 2021]
    assert all(s == SyntheticSpec(duration_s=cfg.duration_s) for _, s, _ in plain)
    assert len(holdout) == 6
    assert all(s.warp == cfg.holdout_warp and s.profiles == cfg.holdout_profiles for s in holdout)
    trained = {(s.warp, p) for _, s, _ in jobs["train"] for p in s.profiles}
    assert not trained & {(s.warp, p) for s in holdout for p in s.profiles}
    seeds = [seed for split in jobs.values() for *_, seed in split]
    assert len(seeds) == len(set(seeds))
    with pytest.raises(ValueError, match="unknown split"):
        synthetic_jobs("dev", cfg)


def test_profile_families_and_the_tps_warp_keep_the_label_rules(two_identities):
    """Every family keeps the promise the labels rely on: inside an interval the amplitude is
    non-zero, outside it is zero; a tps video renders and differs from a shepard one."""
    for family in ("smooth", "asym", "linear"):
        spec = SyntheticSpec(duration_s=12.0, fps=30.0, profiles=(family,), min_gap_s=0.6)
        plan = plan_video(spec, seed=3)
        total = sum(plan.au_amplitude.values())
        labels = np.zeros(plan.n_frames, bool)
        for e in plan.events:
            labels[e.onset : e.offset + 1] = True
            assert (total[e.onset : e.offset + 1] > 0).all(), family
        assert (total[~labels] == 0).all(), family
    spec = dict(duration_s=5.0, fps=30.0, n_me=1, n_mae=1, frame_size=(96, 96), min_gap_s=0.6,
                mae_duration_s=(0.6, 1.5), mae_amplitude_px=(8.0, 8.0))
    a = SyntheticStream(two_identities[0], SyntheticSpec(**spec), seed=1)
    b = SyntheticStream(two_identities[0], SyntheticSpec(**spec, warp="tps"), seed=1)
    mae = next(e for e in a.events if e.label == MAE)
    apex = (mae.onset + mae.offset) // 2
    assert a.intervals == b.intervals
    assert not np.array_equal(a.frame(apex), b.frame(apex))
    np.testing.assert_array_equal(a.frame(0), b.frame(0))  # no expression: same bytes


def test_a_flipped_identity_is_the_mirror_image():
    from fesnet.model.data.identities import load_identities

    plain, flipped = load_identities(["door-man", "door-man~flip"])
    np.testing.assert_array_equal(plain.image[:, ::-1], flipped.image)
    assert person(flipped.name) == "door-man"
    assert abs(plain.iod_px - flipped.iod_px) < 0.05 * plain.iod_px


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
