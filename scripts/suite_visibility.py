"""How far each labelled expression of the independent suite moves the landmarks the product sees,
against how far they move between neutral frames: is an expression visible to FaceMesh at all?

For every expression of every aligned suite clip, FaceMesh's 468 landmarks in the aligned crop
(where the aligner's similarity transform has taken out head translation, scale and roll) at
the frame before its onset and at its apex, in inter-ocular distances (IOD) of the crop:

- *largest move*: the largest displacement of any landmark (what "peak vertex displacement"
  means for the rendered mesh, whose vertices are FaceMesh's);
- *along the truth*: the mean displacement of the vertices the renderer moved most (at least
  half its largest move), projected on the direction each was moved (an oracle that knows where
  and which way to look: no landmark method can see more), and its *gain*, that over the
  renderer's own mean move of those vertices.

The noise floor of each: the same measure between two neutral frames the same time apart (no
label, blink or talking within 0.2 s of either; the head may still turn, as it does beside an
expression), 20 pairs per expression. Reported per stratum and class: medians, the neutral
95th percentile and the share of expressions above it. Reads the caches that
``fesnet-eval --suite independent`` made.

``--clean CLIP`` asks how much FaceMesh itself reports, without the camera, tracking or the
aligner: for each expression of that clip, the rendered frame at its apex without camera noise
or H.264, and the same frame (the same pose and distractors) without the expression, both
through FaceMesh in static mode on the whole frame; the gain along the truth in frame pixels.

``--stable-fit`` asks whether the aligner's choice of points costs motion: the aligner fits the
crop to the eye contours' means, the nose tip and the mouth corners, which expressions (and
blinks) move. With it, every slot's landmarks are first moved by the similarity that maps
STABLE_POINTS (eye corners, nose bridge, the face's sides) onto their mean over the clip, as an
aligner fitted on those points alone would, and the same measures are taken.

    python scripts/suite_visibility.py
    python scripts/suite_visibility.py --stable-fit
    python scripts/suite_visibility.py --clean clear-obama-60fps-720p-talk
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from fesnet.model.data.align import CANONICAL_TEMPLATE_UNIT
from fesnet.model.data.preprocess import PreprocessSettings
from fesnet.model.suite.clips import ClipRenderer, load_rendered, suite_clips
from fesnet.model.suite_eval import align_records, suite_records

STABLE_POINTS = np.array([33, 133, 362, 263, 168, 6, 197, 195, 5, 234, 454, 127, 356])
"""FaceMesh points no expression template moves much: eye corners, the nose bridge, the face's
sides at the ears (``--stable-fit``)."""

CROP_IOD = float(CANONICAL_TEMPLATE_UNIT[1, 0] - CANONICAL_TEMPLATE_UNIT[0, 0])
"""Inter-ocular distance in a crop, as a fraction of its side (the aligner's template)."""


def largest_move(a: np.ndarray, b: np.ndarray, crop_px: int) -> float:
    """Largest landmark displacement between two (468, 2) crop-pixel sets, in IODs."""
    return float(np.linalg.norm(a - b, axis=1).max() / (CROP_IOD * crop_px))


def along(a: np.ndarray, b: np.ndarray, crop_px: int, idx: np.ndarray, unit: np.ndarray) -> float:
    """Mean displacement b -> a of vertices ``idx`` along ``unit`` (their true directions), IOD."""
    d = (a[idx] - b[idx]) / (CROP_IOD * crop_px)
    return float(np.mean(np.sum(d * unit, axis=1)))


def stable_fit(landmarks: np.ndarray) -> np.ndarray:
    """(n, 468, 2) landmarks moved, slot by slot, by the similarity that maps STABLE_POINTS onto
    their mean over all slots (the crop an aligner fitted on those points would give)."""
    from fesnet.model.data.align import similarity_transform

    ref = landmarks[:, STABLE_POINTS].mean(axis=0)
    out = np.empty_like(landmarks)
    for t, lm in enumerate(landmarks):
        m = similarity_transform(lm[STABLE_POINTS], ref)
        out[t] = lm @ m[:, :2].T + m[:, 2]
    return out


def row(name: str, m: list[float], f: list[float]) -> str:
    m_, f_ = np.array(m), np.array(f)
    p95 = float(np.percentile(f_, 95))
    return (f"{name} | {len(m_)} | {np.median(m_):.3f} | {np.median(f_):.3f} | {p95:.3f} | "
            f"{100 * np.mean(m_ > p95):.0f}% |")


def clean_gains(name: str) -> None:
    """``--clean``: FaceMesh's own gain on camera-free frames of one clip (module docstring)."""
    import cv2
    import mediapipe as mp

    from fesnet.model.data.align import landmarks_to_pixels

    spec = next(s for s in suite_clips() if s.name == name)
    r = ClipRenderer(spec)
    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1)

    def landmarks(field: np.ndarray, pose) -> np.ndarray | None:
        canvas = r.scene.copy()
        r.face.draw(canvas, field, pose)
        rgb = cv2.cvtColor(np.clip(canvas, 0, 255).astype(np.uint8), cv2.COLOR_BGR2RGB)
        found = mesh.process(rgb).multi_face_landmarks
        return None if not found else landmarks_to_pixels(found[0], spec.width, spec.height)

    print("| expression | peak (IOD) | templates | FaceMesh gain along the truth |\n"
          "|---|---:|---|---:|")
    strengths = r.timeline.strengths()
    for k, e in enumerate(r.timeline.expressions):
        apex = e.onset + int(np.argmax(strengths[e.onset : e.offset + 1, k]))
        pose, expr = r.pose(apex), r.expression_field(apex)
        rest, _ = r.face.project(r.face.rest, pose)
        moved, _ = r.face.project(r.face.rest + r.face.bank.frame.to_pixels(expr), pose)
        truth = (moved - rest)[: len(r.face.rest)]
        size = np.linalg.norm(truth, axis=1)
        idx = np.flatnonzero(size >= 0.5 * size.max())
        with_e, without = landmarks(r.field(apex), pose), landmarks(r.field(apex) - expr, pose)
        gain = "no face"
        if with_e is not None and without is not None:
            unit = truth[idx] / size[idx, None]
            seen = np.mean(np.sum((with_e[idx] - without[idx]) * unit, axis=1))
            gain = f"{float(seen / size[idx].mean()):.2f}"
        label = "ME" if e.label == 1 else "MaE"
        print(f"| {label} at {e.onset / spec.fps:.1f} s | {e.peak_iod:.3f} | "
              f"{', '.join(t for t, _ in e.templates)} | {gain} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite-cache", type=Path, default=Path(".cache"))
    p.add_argument("--cache-dir", type=Path, default=Path(".cache/aligned"))
    p.add_argument("--clean", metavar="CLIP", help="FaceMesh's own gain on one clip's frames")
    p.add_argument("--stable-fit", action="store_true",
                   help="measure after refitting every slot on STABLE_POINTS (docstring)")
    a = p.parse_args()
    if a.clean:
        clean_gains(a.clean)
        return
    rng = np.random.default_rng(0)
    crop_px = PreprocessSettings().crop_size
    specs = suite_clips()
    clips = [load_rendered(s, a.suite_cache) for s in specs]
    kept = [(s, c) for s, c in zip(specs, clips, strict=True) if c is not None]
    videos = align_records(suite_records([c for _, c in kept]), a.cache_dir, "align suite")
    measures = ("largest move", "along the truth")
    moves = {k: defaultdict(list) for k in measures}
    floor = {k: defaultdict(list) for k in measures}
    gain: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (spec, _), video in zip(kept, videos, strict=True):
        if video is None or video.landmarks is None:
            continue
        renderer = ClipRenderer(spec)
        tl = renderer.timeline
        slot = {int(f): i for i, f in reversed(list(enumerate(video.source_index)))}
        busy = np.zeros(tl.n_frames, bool)
        pad = int(0.2 * spec.fps)
        for on, off in [(e.onset, e.offset) for e in tl.expressions] + list(tl.blinks) + list(
                tl.talking):
            busy[max(on - pad, 0) : off + pad + 1] = True
        neutral = np.flatnonzero(~busy)
        strengths = tl.strengths()
        lm = video.landmarks.astype(np.float64)
        if a.stable_fit:
            lm = stable_fit(lm)
        for k, e in enumerate(tl.expressions):
            key = (spec.stratum, "ME" if e.label == 1 else "MaE")
            apex = e.onset + int(np.argmax(strengths[e.onset : e.offset + 1, k]))
            truth = renderer.expression_field(apex)[:, :2]
            size = np.linalg.norm(truth, axis=1)
            idx = np.flatnonzero(size >= 0.5 * size.max())
            unit = truth[idx] / size[idx, None]
            pair = (lm[slot[apex]], lm[slot[e.onset - 1]])
            moves["largest move"][key].append(largest_move(*pair, crop_px))
            moves["along the truth"][key].append(along(*pair, crop_px, idx, unit))
            gain[key].append(moves["along the truth"][key][-1] / float(size[idx].mean()))
            gap = apex - (e.onset - 1)
            starts = neutral[np.isin(neutral + gap, neutral)]
            for s0 in rng.choice(starts, min(20, len(starts)), replace=False):
                pair = (lm[slot[s0 + gap]], lm[slot[s0]])
                floor["largest move"][key].append(largest_move(*pair, crop_px))
                floor["along the truth"][key].append(along(*pair, crop_px, idx, unit))
    print("| measure | stratum | class | expressions | median (IOD) | neutral median | "
          "neutral p95 | above neutral p95 |\n|---|---|---|---:|---:|---:|---:|---:|")
    for measure in measures:
        for key in sorted(gain, key=lambda k: (k[0] != "subtle", k[1])):
            print(row(f"| {measure} | {key[0]} | {key[1]}", moves[measure][key],
                      floor[measure][key]))
    print("\n| stratum | class | gain along the truth: median (p25-p75) |\n|---|---|---|")
    for key in sorted(gain, key=lambda k: (k[0] != "subtle", k[1])):
        q = np.percentile(gain[key], [25, 50, 75])
        print(f"| {key[0]} | {key[1]} | {q[1]:.2f} ({q[0]:.2f}-{q[2]:.2f}) |")


if __name__ == "__main__":
    main()
