"""The v2 synthetic set: identity variants, webcam distractors, label rules, determinism, who is
in which split, and that the v1 set and the shared test split did not move."""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace

import numpy as np
import pytest

from fesnet.model.data.codec import CodecSpec
from fesnet.model.data.distractors import BLINK_KINDS
from fesnet.model.data.identities import (
    FACES_DIR,
    RESERVED_PEOPLE,
    TEST_IDENTITIES,
    V2_TRAIN_IDENTITIES,
    V2_VAL_IDENTITIES,
    available_identities,
    is_reserved,
    load_identities,
)
from fesnet.model.data.plan import ME, plan_video
from fesnet.model.data.spec import Distractors, SyntheticSpec
from fesnet.model.data.synthetic import SyntheticStream, synthetic_video_id
from fesnet.model.data.variants import people
from fesnet.model.data.webcam_set import (
    BRIEF_LARGE_ME_AMPLITUDE_PX,
    ME_AMPLITUDE_PX,
    MORPHABLE,
    webcam_spec,
)
from fesnet.model.datasets import SyntheticSetConfig, synthetic_jobs

V1, V2, V3, V4 = (SyntheticSetConfig(), SyntheticSetConfig.preset("v2"),
                  SyntheticSetConfig.preset("v3"), SyntheticSetConfig.preset("v4"))

# The test split every evaluation compares on: ids (= cache keys) and event schedules, pinned.
TEST_IDS = [
    "syn-astronaut-s2000-3e4e5b773e", "syn-astronaut-s2001-3e4e5b773e",
    "syn-astronaut-s2500-d91c95a6d0", "syn-astronaut-s2501-0d625b0f0c",
    "syn-f13-anc-s2010-3e4e5b773e", "syn-f13-anc-s2011-3e4e5b773e",
    "syn-f13-anc-s2510-3e44f4b0e8", "syn-f13-anc-s2511-397fcbbad6",
    "syn-wolfgang-s2020-3e4e5b773e", "syn-wolfgang-s2021-3e4e5b773e",
    "syn-wolfgang-s2520-3b4efc9cab", "syn-wolfgang-s2521-a3bb98e18a",
]
PINNED = {  # split -> (sha1 of the video ids, sha1 of every video's events), v1 set
    "train": ("e564a818e42843f1", "168d04f7459ab3d4"),
    "val": ("68238bbf751a4da0", "8d14fd4573addcb4"),
    "test": ("0b87e73f354b197b", "1172b6a59b5b5d6b"),
}


def _digests(jobs: list) -> tuple[str, str]:
    ids = " ".join(synthetic_video_id(i, s, seed) for i, s, seed in jobs)
    events = repr([[(e.onset, e.offset, e.label, e.aus) for e in plan_video(s, seed).events]
                   for _, s, seed in jobs])
    return (hashlib.sha1(ids.encode()).hexdigest()[:16],
            hashlib.sha1(events.encode()).hexdigest()[:16])


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_v1_set_and_the_shared_test_split_keep_their_ids_and_events(split: str):
    assert _digests(synthetic_jobs(split, V1)) == PINNED[split]
    if split == "test":
        assert [synthetic_video_id(*job) for job in synthetic_jobs("test", V1)] == TEST_IDS
        assert synthetic_jobs("test", V2) == synthetic_jobs("test", V1)


def _short(spec: SyntheticSpec, **fields: object) -> SyntheticSpec:
    """A v2 spec made short and small enough for a unit test (same distractor machinery)."""
    small = {"duration_s": 12.0, "frame_size": (128, 128), "face_size_px": None, "n_me": 3,
             "n_mae": 1, "mae_duration_s": (0.6, 1.5)}
    return replace(spec, **(small | fields))


def _labels(plan) -> np.ndarray:
    out = np.zeros(plan.n_frames, np.int64)
    for e in plan.events:
        out[e.onset : e.offset + 1] = e.label
    return out


def test_v2_labels_match_motion_and_distractors_stay_neutral():
    """Expression amplitude is non-zero on exactly the labelled frames; blinks, talking,
    twitches, turns and noise bursts keep clear of every ME; a dropped frame never shows
    another label's state. Checked over many seeds so every distractor kind occurs."""
    rng = np.random.default_rng(0)
    kinds: set[str] = set()
    dense = Distractors(talks_per_min=(8, 8), turns_per_min=(6, 6), twitches_per_min=(8, 8),
                        noise_bursts_per_min=(6, 6), frame_drop=(0.05, 0.05),
                        blink_rate_hz=(0.6, 0.6))
    for seed in range(12):
        spec = _short(webcam_spec(rng, 30.0), distractors=dense)
        plan = plan_video(spec, seed)
        labels = _labels(plan)
        total = sum(np.abs(track) for track in plan.au_amplitude.values())
        assert (total[labels > 0] > 0).all() and (total[labels == 0] == 0).all()
        me = labels == ME
        extra = plan.extra
        assert extra is not None
        assert not (plan.blink[me] > 0).any() and not (extra.talk[me] > 0).any()
        for kind, first, last in extra.spans:
            kinds.add(kind)
            if kind.split("-")[0] in ("blink", "talk", "twitch", "turn", "noise"):
                assert not me[first : last + 1].any(), (seed, kind)
        np.testing.assert_array_equal(labels[extra.hold], labels)
        assert (extra.hold <= np.arange(plan.n_frames)).all()
    assert {f"blink-{k}" for k in BLINK_KINDS} | {"talk", "twitch", "turn", "noise"} <= kinds


def test_v2_render_is_deterministic_and_a_dropped_frame_repeats(two_identities):
    identity = two_identities[0]
    spec = _short(webcam_spec(np.random.default_rng(3), 30.0),
                  distractors=Distractors(frame_drop=(0.1, 0.1), turns_per_min=(6, 6)))
    a, b = SyntheticStream(identity, spec, 11), SyntheticStream(identity, spec, 11)
    hold = a.plan.extra.hold
    dropped = int(np.flatnonzero(hold != np.arange(len(hold)))[0])
    turned = int(np.argmax(np.abs(a.plan.extra.yaw_deg)))
    for i in (0, dropped, turned, a.n_frames - 1):
        np.testing.assert_array_equal(a.frame(i), b.frame(i))
    np.testing.assert_array_equal(a.frame(dropped), a.frame(int(hold[dropped])))
    other = SyntheticStream(identity, spec, 12)
    assert not np.array_equal(a.frame(turned), other.frame(turned))
    assert synthetic_jobs("train", V2) == synthetic_jobs("train", SyntheticSetConfig.preset("v2"))


def test_defaults_leave_the_digest_alone():
    plain = SyntheticSpec()
    assert plain.digest() == replace(plain, region_mix="combos", au_spread=(1.0, 1.0),
                                     distractors=None, codec=None).digest()
    assert plain.digest() != replace(plain, codec=CodecSpec()).digest()
    assert plain.digest() != replace(plain, distractors=Distractors()).digest()
    with pytest.raises(ValueError, match="region_mix"):
        SyntheticSpec(region_mix="everything")
    with pytest.raises(ValueError, match="low"):
        Distractors(talk_hz=(6.0, 2.0))
    with pytest.raises(ValueError, match="unknown synthetic set"):
        SyntheticSetConfig.preset("v5")


def _noticed_packages() -> dict[str, str]:
    """identity file -> package, from the Files table of NOTICE.md."""
    rows = re.findall(r"^\| ([\w.-]+)\.jpg \| ([\w-]+) \|", (FACES_DIR / "NOTICE.md").read_text(),
                      re.MULTILINE)
    return dict(rows)


def test_no_reserved_person_trains_or_validates_and_validation_people_are_new():
    """Fails if a reserved person (test identities, the outside checks' people) or a morph of
    one enters a training or validation split of any set, or a validation person trains."""
    assert is_reserved("astronaut+door-man@0.30~j1") and is_reserved("obama2")
    assert is_reserved("door-man+einstein@0.25") and not is_reserved("door-man+biden@0.30")
    noticed = _noticed_packages()
    for cfg in (V1, V2, V3, V4):
        train = {p for i, _, _ in synthetic_jobs("train", cfg) for p in people(i)}
        val = {p for i, _, _ in synthetic_jobs("val", cfg) for p in people(i)}
        for name in train | val:
            assert not is_reserved(name), (cfg.version, name)
            assert noticed[name] != "insightface" and name in available_identities()
        if cfg.version != "v1":
            assert not train & val
            assert train == set(V2_TRAIN_IDENTITIES) and val == set(V2_VAL_IDENTITIES)
    test = {p for i, _, _ in synthetic_jobs("test", V2) for p in people(i)}
    assert test == set(TEST_IDENTITIES) <= set(RESERVED_PEOPLE)


def test_v2_composition():
    train, val = synthetic_jobs("train", V2), synthetic_jobs("val", V2)
    assert len(train) == V2.v2_train_videos and len(val) == V2.v2_val_videos
    assert len({i for i, _, _ in train}) >= 48  # dozens of identities
    morphs = [i for i, _, _ in train + val if "+" in i]
    assert morphs and all(set(people(m)) <= set(MORPHABLE) for m in morphs)
    assert any("~j" in i for i, _, _ in train) and any(i.endswith("~flip") for i, _, _ in train)
    specs = [s for _, s, _ in train + val]
    assert {s.fps for s in specs} == {30.0, 60.0}
    assert {s.region_mix for s in specs} == {"combos", "random"}
    assert all(s.distractors is not None and s.warp == "shepard" for s in specs)
    assert not any("linear" in s.profiles for s in specs)  # the test split's held-out family
    seeds = [seed for split in ("train", "val", "test") for *_, seed in synthetic_jobs(split, V2)]
    assert len(seeds) == len(set(seeds))


def test_v3_is_v2_plus_brief_large_micro_expressions():
    """v3 keeps every v2 video (their caches and ids) and adds half as many again, drawn the same
    way, whose MEs reach into the MaE amplitude range: only duration separates the classes."""
    for split in ("train", "val"):
        v2, v3 = synthetic_jobs(split, V2), synthetic_jobs(split, V3)
        assert v3[: len(v2)] == v2 and len(v3) == len(v2) + len(v2) // 2
        added = v3[len(v2):]
        assert all(s.me_amplitude_px == BRIEF_LARGE_ME_AMPLITUDE_PX for _, s, _ in added)
        assert all(s.me_amplitude_px == ME_AMPLITUDE_PX for _, s, _ in v2)
        assert all(s.me_duration_s[1] <= 0.5 < s.mae_duration_s[0] for _, s, _ in v3)
        low, high = BRIEF_LARGE_ME_AMPLITUDE_PX
        assert low < added[0][1].mae_amplitude_px[0] < ME_AMPLITUDE_PX[1] < high
        ids = {synthetic_video_id(i, s, seed) for i, s, seed in v3}
        assert len(ids) == len(v3)
    v3_val = {p for i, _, _ in synthetic_jobs("val", V3) for p in people(i)}
    assert v3_val == set(V2_VAL_IDENTITIES)
    seeds = [seed for split in ("train", "val", "test") for *_, seed in synthetic_jobs(split, V3)]
    assert len(seeds) == len(set(seeds))
    big = []
    added = synthetic_jobs("train", V3)[V3.v2_train_videos :]
    for _, spec, seed in added[:8]:
        big += [e.amplitude_px for e in plan_video(spec, seed).events if e.label == ME]
    assert max(big) > ME_AMPLITUDE_PX[1]


def test_v4_is_v3_plus_videos_delivered_through_h264():
    """v4 keeps every v3 video (ids, caches, codec-free) and adds 24 training and 12 validation
    videos, drawn as v3's added ones from their own seeds, each through H.264."""
    for split in ("train", "val"):
        v3, v4 = synthetic_jobs(split, V3), synthetic_jobs(split, V4)
        n = V4.v4_codec_train_videos if split == "train" else V4.v4_codec_val_videos
        assert v4[: len(v3)] == v3 and len(v4) == len(v3) + n
        assert all(s.codec is None for _, s, _ in v3)
        added = v4[len(v3):]
        assert all(s.codec == CodecSpec() for _, s, _ in added)
        assert all(s.me_amplitude_px == BRIEF_LARGE_ME_AMPLITUDE_PX for _, s, _ in added)
        assert {s.fps for _, s, _ in added} == {30.0, 60.0}
        assert len({synthetic_video_id(i, s, seed) for i, s, seed in v4}) == len(v4)
    seeds = [seed for split in ("train", "val", "test") for *_, seed in synthetic_jobs(split, V4)]
    assert len(seeds) == len(set(seeds))
    assert {p for i, _, _ in synthetic_jobs("val", V4) for p in people(i)} == set(V2_VAL_IDENTITIES)


@pytest.mark.slow
def test_morphs_and_jitters_are_faces_mediapipe_aligns(still_aligner):
    names = ["door-man+group-3@0.35", "biden+luispedro@0.30~j4", "group-2~flip~j9"]
    variants = load_identities(names)
    again = load_identities(names[:1])[0]
    np.testing.assert_array_equal(variants[0].image, again.image)
    parents = {p.name: p for p in load_identities(["door-man", "group-2"])}
    for variant in variants:
        still_aligner.reset()
        assert still_aligner.align(variant.image).crop is not None, variant.name
    assert np.abs(variants[0].image.astype(int) - parents["door-man"].image).mean() > 3
    flipped = parents["group-2"].image[:, ::-1]
    assert np.abs(variants[2].image.astype(int) - flipped).mean() > 3


@pytest.mark.slow
def test_distractor_frames_still_show_a_face(still_aligner, two_identities):
    """Turned, talking, blinking and blurred frames of a v2 video: FaceMesh finds the face."""
    spec = _short(webcam_spec(np.random.default_rng(5), 30.0),
                  frame_size=(320, 240), face_size_px=200,
                  distractors=Distractors(turns_per_min=(6, 6), talks_per_min=(6, 6),
                                          turn_deg=(12, 14)))
    stream = SyntheticStream(two_identities[0], spec, 2)
    extra = stream.plan.extra
    picks = [int(np.argmax(np.abs(extra.yaw_deg) + np.abs(extra.pitch_deg))),
             int(np.argmax(extra.talk)), int(np.argmax(stream.plan.blink))]
    for i in picks:
        still_aligner.reset()
        assert still_aligner.align(stream.frame(i)).crop is not None, i


def test_notice_lists_every_shipped_face():
    noticed = _noticed_packages()
    assert set(noticed) == set(available_identities())
    assert not any(is_reserved(name) and name not in TEST_IDENTITIES for name in noticed)


def test_talking_parts_the_lips_and_shows_the_dark_inside(two_identities):
    """At a talking peak the lips part (a dark gap opens at the lip seam) and the eyes and
    forehead do not move: a mouth, not a stretched smear."""
    identity = two_identities[0]
    quiet = {"blink_rate_hz": (0.0, 0.0), "turns_per_min": (0, 0), "yaw_drift_deg": (0, 0),
             "pitch_drift_deg": (0, 0), "twitches_per_min": (0, 0), "soft_focus": (1, 1),
             "noise_bursts_per_min": (0, 0), "flicker": (0, 0), "frame_drop": (0, 0),
             "exposure_steps_per_min": (0, 0), "talks_per_min": (9, 9), "talk_jaw_px": (6, 6)}
    spec = SyntheticSpec(duration_s=40.0, fps=30.0, n_me=0, n_mae=0, blink_rate_hz=0.0,
                         head_drift_px=0.0, head_drift_deg=0.0, head_drift_scale=0.0,
                         jitter_px=0.0, n_head_moves=0, lighting_drift=0.0, n_light_changes=0,
                         noise_sigma=(0.0, 0.0), jpeg_quality=None,
                         distractors=Distractors(**quiet))
    stream = SyntheticStream(identity, spec, 4)
    talk = stream.plan.extra.talk
    peak, rest = int(np.argmax(talk)), int(np.flatnonzero(talk == 0)[0])
    assert talk[peak] > 4.0
    open_, closed = stream.frame(peak).astype(int), stream.frame(rest).astype(int)
    lm = identity.landmarks
    mouth = np.round(lm[[13, 14]].mean(axis=0)).astype(int)
    box = (slice(mouth[1] - 10, mouth[1] + 12), slice(mouth[0] - 12, mouth[0] + 13))
    dark_open = int((open_[box].sum(axis=-1) < 250).sum())  # the mouth's inside: near black
    dark_closed = int((closed[box].sum(axis=-1) < 250).sum())
    assert dark_open >= dark_closed + 25, (dark_open, dark_closed)
    eyes_y = int(lm[[33, 263]][:, 1].mean())
    np.testing.assert_array_equal(open_[: eyes_y + 5], closed[: eyes_y + 5])
