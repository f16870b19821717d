"""Bad media seen by the real mediapipe tracker (the table of test_reliability_media.py): several
faces, a resolution changing mid-stream, extreme lighting. Tracked on, reported, never a crash
or a non-finite score."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from spot_helpers import make_spotter
from test_reliability_media import BUSY, assert_paired, frame

from fesnet.model.backends import TorchBackend
from fesnet.model.data.align import FaceAligner
from fesnet.model.fesnet import FESNet, FESNetConfig
from fesnet.realtime.engine import Engine
from fesnet.realtime.observers import LiveView
from fesnet.realtime.spotter import Spotter
from fesnet.realtime.tracking import COUNT_FACES_EVERY_FRAMES
from fesnet.realtime.types import SpotEvent

FACES = Path(__file__).resolve().parents[1] / "model" / "data" / "faces"


@pytest.fixture(scope="module")
def engine() -> Engine:
    torch.manual_seed(0)
    return Engine(TorchBackend(FESNet(FESNetConfig.tiny()).eval()), 32)


def _face(name: str, height: int) -> np.ndarray:
    img = cv2.imread(str(FACES / name))
    return cv2.resize(img, None, fx=height / img.shape[0], fy=height / img.shape[0])


def _on_canvas(
    faces: list[tuple[np.ndarray, int]], size: tuple[int, int] = (480, 240)
) -> np.ndarray:
    canvas = np.full((size[1], size[0], 3), 90, np.uint8)
    for face, x in faces:
        h, w = face.shape[:2]
        canvas[10 : 10 + h, x : x + w] = face
    return canvas


@pytest.fixture(scope="module")
def video_aligner() -> Any:
    with FaceAligner(max_faces=2) as aligner:
        yield aligner


def real_spotter(engine: Engine, aligner: FaceAligner) -> tuple[Spotter, LiveView]:
    aligner.reset()
    view = LiveView()
    return make_spotter(engine, BUSY, 8, stream="s", aligner=aligner, observers=[view]), view


@pytest.mark.slow
@pytest.mark.parametrize("count_every", [None, COUNT_FACES_EVERY_FRAMES], ids=["mesh", "count"])
def test_several_faces_are_reported_and_the_same_face_stays_tracked(
    engine: Engine, count_every: int | None
) -> None:
    """Both ways of looking for other faces: FaceMesh on every frame, and the live default
    (FaceMesh follows one face, the detector counts faces every few frames)."""
    left, right = _face("wolfgang.jpg", 200), _face("door-man.jpg", 200)
    with FaceAligner(max_faces=2, count_faces_every_frames=count_every) as aligner:
        sp, view = real_spotter(engine, aligner)
        events, crops = several_faces_run(sp, view, left, right)
    status = [e for e in events if e.type == "status"]
    assert status and status[0].message == "2 faces in view; tracking the same one"
    assert status[0].n_faces == 2
    assert view.view().state == "several_faces"
    assert not [e for e in events if e.type == "face_lost"]
    alone = crops[3].astype(np.float32)
    for crop in crops[8:]:  # still the left face (the one tracked first), not the new one
        assert np.abs(crop.astype(np.float32) - alone).mean() < 25


def several_faces_run(
    sp: Spotter, view: LiveView, left: np.ndarray, right: np.ndarray
) -> tuple[list[SpotEvent], list[np.ndarray]]:
    """Four frames of the left face alone, then a second face beside it for long enough that the
    periodic count sees it and the tracker confirms it (several_after_frames)."""
    events, crops = [], []
    for i in range(4 + COUNT_FACES_EVERY_FRAMES + 4):
        faces = [(left, 20 + i % 2)] + ([(right, 250)] if i >= 4 else [])
        image = _on_canvas(faces)
        events += sp.process(frame(image, i, i / 30))
        crops.append(view.view().latest_crop)
    events += sp.finish()
    return events, crops


@pytest.mark.slow
def test_resolution_changing_mid_stream_keeps_tracking(
    engine: Engine, video_aligner: FaceAligner
) -> None:
    face = _face("wolfgang.jpg", 200)
    base = _on_canvas([(face, 60)], (320, 240))
    sizes = [(320, 240), (640, 480), (160, 120), (1280, 720), (320, 180), (320, 240)]
    sp, view = real_spotter(engine, video_aligner)
    events = []
    i = 0
    for size in sizes:
        for _ in range(4):
            events += sp.process(frame(cv2.resize(base, size), i, i / 30))
            crop = view.view().latest_crop
            assert crop is not None and crop.shape == (112, 112, 3)
            i += 1
    events += sp.finish()
    assert [e.type for e in events if e.type != "expression"] == ["face_found"]
    assert sp.summary()["encoded"] == i


@pytest.mark.slow
def test_extreme_lighting_loses_or_tracks_the_face_but_never_breaks(
    engine: Engine, video_aligner: FaceAligner
) -> None:
    base = _on_canvas([(_face("wolfgang.jpg", 200), 60)], (320, 240)).astype(np.float32)
    looks = {
        "normal": base,
        "near_black": base * 0.03,
        "black": base * 0.0,
        "saturated": base * 4.0 + 60,
        "white": base * 0 + 255,
    }
    sp, _ = real_spotter(engine, video_aligner)
    events: list[SpotEvent] = []
    i = 0
    for name in ["normal", "near_black", "normal", "saturated", "normal", "black", "white"]:
        img = np.clip(looks[name], 0, 255).astype(np.uint8)
        for _ in range(8):
            events += sp.process(frame(img, i, i / 30))
            i += 1
    events += sp.finish()
    assert_paired(events)
    kinds = [e.type for e in events if e.type in ("face_found", "face_lost")]
    assert kinds[0] == "face_found" and kinds[-1] == "face_lost"  # black then white: no face
    assert all(a != b for a, b in itertools.pairwise(kinds))  # strictly alternating
    for e in events:
        if e.type == "expression":
            assert np.isfinite(e.score) and 0 <= e.score <= 1
    _, scores = sp.merger.drain_committed()
    assert np.isfinite(scores).all()
    dark = np.clip(looks["near_black"], 0, 255).astype(np.uint8)
    aligned = video_aligner.align(dark)
    if aligned.crop is not None:  # if FaceMesh still sees it, the model must stay finite on it
        features = engine.encode(aligned.crop[None])
        assert all(np.isfinite(f).all() for f in features.values())
