"""The independent suite's 1280x720 clips with the person farther from the camera: does the
aligner find faces that fill a small part of the frame, and what do the methods spot on them?

A diagnostic A/B, not a change to the suite (nothing is chosen on it). Each 720p clip of the
suite, frame by frame: the whole frame shrunk by ``--scale`` and set in the middle of the same
frame blurred (the room seen wider), written losslessly (FFV1), so the labels and timing are the
clip's own and only the face's size in the frame changes (at 0.5 a face about 60 px between
the eyes in 1280x720: someone sitting about twice as far from a 720p webcam). Each copy goes
through the product's preprocessing twice, with today's aligner and with ``near-only`` (the
same without the far-face finder, model/data/far_faces.py), and then through every method; the
original clips through today's aligner are the reference. Prints one table: face found (% of
frames) and interval F1 per method and aligner.

    python scripts/suite_far.py --scale 0.5 --json out/suite_far.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from fesnet.model.data.preprocess import PreprocessSettings
from fesnet.model.evaluate import methods_for
from fesnet.model.runtime import METHODS, add_runtime_arguments
from fesnet.model.suite import RENDER_VERSION
from fesnet.model.suite.clips import ensure_rendered, suite_clips
from fesnet.model.suite_eval import (
    align_records,
    face_found,
    score_independent,
    slot_labels,
    suite_records,
)


def farther(frame: np.ndarray, scale: float) -> np.ndarray:
    """``frame`` shrunk by ``scale`` in the middle of itself blurred, at the same size."""
    h, w = frame.shape[:2]
    room = cv2.resize(cv2.resize(frame, (w // 16, h // 16), interpolation=cv2.INTER_AREA),
                      (w, h), interpolation=cv2.INTER_LINEAR)
    sw, sh = round(w * scale), round(h * scale)
    x0, y0 = (w - sw) // 2, (h - sh) // 2
    room[y0 : y0 + sh, x0 : x0 + sw] = cv2.resize(frame, (sw, sh), interpolation=cv2.INTER_AREA)
    return room


def write_farther(src: Path, dst: Path, scale: float) -> None:
    """The clip at ``src`` made farther, frame by frame, into ``dst`` (lossless FFV1)."""
    if dst.exists():
        return
    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS)
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.stem + ".tmp.mkv")
    out = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"FFV1"), fps, (w, h))
    if not out.isOpened():
        raise SystemExit("error: this OpenCV cannot write FFV1 video")
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            out.write(farther(frame, scale))
    finally:
        cap.release()
        out.release()
    tmp.replace(dst)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=0.5, help="how much the frame is shrunk")
    p.add_argument("--method", choices=["all", *METHODS], default="all")
    add_runtime_arguments(p, backend="torch", threads=None, method=False)
    p.add_argument("--cache-dir", type=Path, default=Path(".cache/aligned"))
    p.add_argument("--suite-cache", type=Path, default=Path(".cache"))
    p.add_argument("--json", type=Path, help="also write every number as JSON")
    a = p.parse_args()
    if not 0.1 <= a.scale <= 1.0:
        raise SystemExit("error: --scale must lie in [0.1, 1]")
    methods = methods_for(a)
    clips = [c for c in ensure_rendered(suite_clips(), a.suite_cache) if c.spec.height == 720]
    original = suite_records(clips)
    far_dir = a.suite_cache / "suite-far" / f"v{RENDER_VERSION}"
    far = []
    for r in tqdm(original, desc=f"shrink x{a.scale:g}", unit="clip"):
        dst = far_dir / f"{r.video_id}-x{a.scale:g}.mkv"
        write_farther(Path(r.frames), dst, a.scale)
        far.append(replace(r, video_id=f"{r.video_id}-x{a.scale:g}", frames=dst))
    n_frames = [c.n_frames for c in clips]  # a farther copy has its clip's frames
    runs = {"original, today's aligner": (original, PreprocessSettings()),
            f"x{a.scale:g}, near-only aligner": (far, PreprocessSettings(far_faces=False)),
            f"x{a.scale:g}, today's aligner": (far, PreprocessSettings())}
    doc: dict = {"scale": a.scale, "clips": [r.video_id for r in original], "runs": {}}
    lines = ["| clips (10 at 1280x720) | method | face found (% of frames) | ME F1 | MaE F1 "
             "| overall F1 | TP / FP / FN |", "|---|---|---:|---:|---:|---:|---|"]
    for name, (records, settings) in runs.items():
        videos = align_records(records, a.cache_dir, f"align {name}", settings=settings)
        faceless = {i: (r.video_id, slot_labels(r, n_frames[i]))
                    for i, (r, v) in enumerate(zip(records, videos, strict=True)) if v is None}
        found = float(np.mean([face_found(v) for v in videos]))
        scores = score_independent(methods, videos, {"all": list(range(len(videos)))},
                                   faceless=faceless)
        doc["runs"][name] = {"face_found_pct": found, "methods": {}}
        for m, s in scores.items():
            t = s["groups"]["all"]
            c = t.counts["overall"]
            doc["runs"][name]["methods"][m] = t.to_dict()
            lines.append(f"| {name} | {m} | {found:.1f} | {t.f1['ME']:.1f} | {t.f1['MaE']:.1f} "
                         f"| **{t.f1['overall']:.1f}** | {c.tp} / {c.fp} / {c.fn} |")
    print("\n".join(lines))
    if a.json is not None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
