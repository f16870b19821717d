"""The fused spotter: the network's evidence checked against the geometry channel, as a backend.

What holds: with the geometry's weight at 0 and no distractor rule it is the network exactly;
the geometry gates evidence the landmarks do not support; a blink takes the ME share of its
slots, speech-like lip motion the evidence of its window; it streams exactly as it scores
offline; its settings and merger come from the checkpoint's JSON through the one loader.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from test_geometry_streaming import face_track, stream
from test_streaming_equivalence import assert_same_events, offline_tuples, streaming_tuples

from fesnet.model.backends import TorchBackend, split_post
from fesnet.model.checkpoint import DEFAULT_CHECKPOINT, sidecar
from fesnet.model.fesnet import FESNet, FESNetConfig
from fesnet.model.fused import (
    FusedBackend,
    FusedConfig,
    blink_slots,
    fuse,
    lip_gap_reversals,
)
from fesnet.model.geometry import DISP, GEOMETRY_DIMS, GROUP_NAMES, Z_ALL, geometry_features
from fesnet.model.head import with_geometry
from fesnet.model.inference import spot_video
from fesnet.model.merger import MergerConfig
from fesnet.model.runtime import LoadError, RuntimeConfig, load_runtime


def dy(name: str) -> int:
    return DISP.start + 2 * GROUP_NAMES.index(name) + 1


def random_probs(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(0, 2, (*shape, 3))
    e = np.exp(logits)
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def test_the_network_alone_is_passed_through_unchanged() -> None:
    probs = random_probs((4, 32))
    geom = np.random.default_rng(1).normal(0, 3, (4, 32, GEOMETRY_DIMS)).astype(np.float32)
    out = fuse(probs, geom, FusedConfig(net_weight=1.0))
    np.testing.assert_allclose(out, probs, atol=1e-6)


@pytest.mark.parametrize("rule", ["geometric", "mean"])
def test_the_geometry_gates_what_the_landmarks_do_not_support(rule: str) -> None:
    probs = np.tile(np.array([0.1, 0.3, 0.6], np.float32), (1, 2, 1))  # (1, 2, 3)
    geom = np.zeros((1, 2, GEOMETRY_DIMS), np.float32)
    geom[0, :, Z_ALL] = (-2.0, 8.0)  # still, then clearly moving
    out = fuse(probs, geom, FusedConfig(rule=rule, net_weight=0.5, geo_k=2.0))
    expr = out[0, :, 1] + out[0, :, 2]
    assert expr[0] < 0.5 < expr[1]
    assert np.allclose(out.sum(-1), 1.0, atol=1e-6)
    # the network's split between ME and MaE is kept
    np.testing.assert_allclose(out[0, :, 1] / expr, 0.3 / 0.9, atol=1e-5)


def test_a_blink_takes_the_me_share_of_its_slots_only_when_both_eyes_close() -> None:
    geom = np.zeros((1, 3, GEOMETRY_DIMS), np.float32)
    for lid in ("upper_lid_l", "upper_lid_r"):
        geom[0, 0, dy(lid)] = 0.04  # both upper lids down: a blink
    geom[0, 1, dy("upper_lid_l")] = 0.04  # one eye: not a blink
    assert blink_slots(geom, 0.02).tolist() == [[True, False, False]]
    probs = np.tile(np.array([0.2, 0.5, 0.3], np.float32), (1, 3, 1))
    out = fuse(probs, geom, FusedConfig(net_weight=1.0, blink_iod=0.02))
    assert out[0, 0, 1] == 0.0 and out[0, 0, 2] == pytest.approx(0.3)
    np.testing.assert_allclose(out[0, 1:], probs[0, 1:], atol=1e-6)


def test_speech_is_told_from_one_opening_and_from_jitter() -> None:
    t = np.arange(32) / 60.0
    rng = np.random.default_rng(0)
    gaps = {
        "speech": 0.02 * np.sin(2 * np.pi * 4.0 * t),
        "one opening": np.minimum(t * 0.2, 0.04),
        "jitter": rng.normal(0, 0.002, 32),
    }
    geom = np.zeros((3, 32, GEOMETRY_DIMS), np.float32)
    for i, gap in enumerate(gaps.values()):
        geom[i, :, dy("lower_lip")] = gap
    rev = lip_gap_reversals(geom, 0.01)
    assert rev[0] >= 3 and rev[1] == 0 and rev[2] == 0
    probs = np.tile(np.array([0.2, 0.2, 0.6], np.float32), (3, 32, 1))
    out = fuse(probs, geom, FusedConfig(net_weight=1.0, talk_iod=0.01, talk_reversals=3))
    assert np.allclose(out[0, :, 0], 1.0) and np.allclose(out[1:], probs[1:], atol=1e-6)


def test_settings_are_validated_and_round_trip() -> None:
    cfg = FusedConfig(rule="mean", net_weight=0.7, blink_iod=0.02, talk_iod=0.01)
    assert FusedConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    for bad in ({"rule": "max"}, {"net_weight": 1.5}, {"blink_iod": 0.0}, {"geo_scale": 0.0}):
        with pytest.raises(ValueError):
            FusedConfig(**bad)
    with pytest.raises(ValueError, match="unknown"):
        FusedConfig.from_dict({"wieght": 1})


@pytest.fixture(scope="module")
def face(two_identities) -> np.ndarray:
    return two_identities[0].landmarks * (112 / 256)


def test_the_fused_spotter_streams_as_it_scores_offline(face) -> None:
    torch.manual_seed(0)
    net = with_geometry(FESNet(FESNetConfig.tiny())).eval()
    with torch.no_grad():
        torch.nn.init.normal_(net.mtam.inp.weight, std=0.5)
        net.mtam.stages[-1]["heads"][-1].weight.mul_(40.0)
    fused = FusedBackend(TorchBackend(net), FusedConfig(net_weight=0.5, geo_k=1.0,
                                                        blink_iod=0.02, talk_iod=0.01))
    with pytest.raises(ValueError, match="geom is required"):
        fused.window(np.zeros((1, 32, 1)), np.zeros((1, 32, 1)))
    n = 480
    landmarks = face_track(face, n, 60.0)
    crops = np.repeat(np.random.default_rng(0).integers(0, 255, (1, 112, 112, 3), np.uint8),
                      n, axis=0)
    merger = MergerConfig(min_expression_frames=3, on_threshold=0.6, off_threshold=0.4)
    offline = spot_video(fused, crops, merger, 8, geometry_features(landmarks))
    want = offline_tuples(offline, np.arange(n))
    assert any(w[0] == "final" for w in want), want  # the comparison is not vacuous
    assert_same_events(streaming_tuples(stream(fused, crops, landmarks, 60.0, merger)), want)
    # the model tier's split: the network's backend, then the fusion on its probabilities
    inner, post = split_post(fused)
    assert inner is fused.net and post == fused.post_window


def copy_of_shipped(folder, **meta) -> object:
    folder.mkdir(parents=True, exist_ok=True)
    pt = folder / "ckpt.pt"
    shutil.copy(DEFAULT_CHECKPOINT, pt)
    doc = json.loads(sidecar(DEFAULT_CHECKPOINT).read_text())
    doc.pop("fused", None)
    doc.update(meta)
    sidecar(pt).write_text(json.dumps(doc))
    return pt


def test_the_loader_reads_the_fused_settings_and_merger_from_the_checkpoint(tmp_path) -> None:
    settings = {"rule": "mean", "net_weight": 0.6, "geo_k": 1.0, "blink_iod": 0.02}
    pt = copy_of_shipped(tmp_path, fused={"settings": settings,
                                          "merger": {"on_threshold": 0.7, "off_threshold": 0.4}})
    rt = load_runtime(RuntimeConfig(checkpoint=pt, backend="torch", method="fused"))
    assert isinstance(rt.backend, FusedBackend)
    assert rt.backend.cfg == FusedConfig(**settings)
    assert (rt.merger.on_threshold, rt.merger.off_threshold) == (0.7, 0.4)
    assert rt.merger.window_frames == rt.window_frames
    plain = copy_of_shipped(tmp_path / "plain")
    rt = load_runtime(RuntimeConfig(checkpoint=plain, backend="torch", method="fused"))
    net = load_runtime(RuntimeConfig(checkpoint=plain, backend="torch"))
    assert rt.backend.cfg == FusedConfig() and rt.merger == net.merger
    bad = copy_of_shipped(tmp_path / "bad", fused={"settings": {"rule": "max"}})
    with pytest.raises(LoadError, match="fused settings"):
        load_runtime(RuntimeConfig(checkpoint=bad, backend="torch", method="fused"))
