"""Write realtime/assets/sample.mp4 and sample_truth.json: the shipped demo/test clip.

A real face of a TEST identity (never used for training) is animated by the synthetic generator
in a 640x480 canvas for 20 s at 30 FPS, so the realtime path exercises 30 -> 60 FPS resampling.
It contains MEs, MaEs and neutral distractors (blinks, head drift and moves, lighting changes,
sensor noise). The script is deterministic: the same generator version and seed give the same
truth file (the mp4 bytes depend on the local OpenCV/FFmpeg build).

Usage:
    python scripts/make_sample_clip.py [--out-dir realtime/assets] [--seed 20260101]

``--duration-s`` makes a longer clip of the same kind (expressions, head moves and the size
budget scale with it): the expression-lag benchmark needs more expressions than 20 s hold.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, replace
from pathlib import Path

import cv2

from fesnet.model.data.align import FaceAligner
from fesnet.model.data.identities import load_identities
from fesnet.model.data.synthetic import SyntheticSpec, SyntheticStream
from fesnet.realtime.sample_clip import ASSETS

logger = logging.getLogger("make_sample_clip")

DEFAULT_OUT = ASSETS
IDENTITY = "wolfgang"
SEED = 20260101
SPEC = SyntheticSpec(
    duration_s=20.0,
    fps=30.0,
    n_me=3,
    n_mae=3,
    frame_size=(640, 480),
    face_size_px=320,
    mae_duration_s=(0.8, 2.5),
    me_amplitude_px=(1.5, 2.5),
    n_head_moves=2,
    jpeg_quality=None,  # the mp4 encoder compresses already
)
CLASS_NAMES = ("neutral", "ME", "MaE")
MAX_BYTES = 3_000_000


def open_writer(path: Path, fps: float, size: tuple[int, int]) -> tuple[cv2.VideoWriter, str]:
    """An mp4 writer: H.264 (avc1) when this OpenCV build has it, else MPEG-4 Part 2 (mp4v)."""
    for fourcc in ("avc1", "mp4v"):
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
        if writer.isOpened():
            return writer, fourcc
        writer.release()
    raise SystemExit("no usable mp4 encoder (avc1 or mp4v) in this OpenCV build")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--duration-s", type=float, default=SPEC.duration_s)
    parser.add_argument("--fps", type=float, default=SPEC.fps,
                        help="frame rate (the shipped clip: 30, to exercise resampling to 60 Hz)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    scale = args.duration_s / SPEC.duration_s
    spec = replace(SPEC, duration_s=args.duration_s, fps=args.fps, n_me=round(SPEC.n_me * scale),
                   n_mae=round(SPEC.n_mae * scale),
                   n_head_moves=round(SPEC.n_head_moves * scale))
    identity = load_identities([IDENTITY])[0]
    stream = SyntheticStream(identity, spec, args.seed)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    video_path = args.out_dir / "sample.mp4"
    writer, fourcc = open_writer(video_path, spec.fps, spec.frame_size)
    try:
        for frame in stream:
            writer.write(frame)
    finally:
        writer.release()

    cap = cv2.VideoCapture(str(video_path))
    n_read, n_faces = 0, 0
    with FaceAligner(static_image_mode=False, max_faces=1) as aligner:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            assert frame.shape == (spec.frame_size[1], spec.frame_size[0], 3)
            n_faces += aligner.align(frame).found
            n_read += 1
    cap.release()
    if n_read != stream.n_frames:
        raise SystemExit(f"{video_path} reads back {n_read} frames, wrote {stream.n_frames}")
    size = video_path.stat().st_size
    if size > MAX_BYTES * scale:
        raise SystemExit(f"{video_path} is {size} bytes, over the {MAX_BYTES * scale:.0f} byte "
                         "budget")

    fps = stream.fps
    truth = {
        "video": video_path.name,
        "fourcc": fourcc,
        "fps": fps,
        "n_frames": stream.n_frames,
        "frame_size": list(spec.frame_size),
        "identity": IDENTITY,
        "identity_split": "test",
        "seed": args.seed,
        "generator": "fesnet.model.data.synthetic",
        "video_id": stream.video_id,
        "class_names": list(CLASS_NAMES),
        "frame_convention": "0-based source frame indices, offset inclusive; "
        "onset_s/offset_s are the capture times index / fps of those frames",
        "intervals": [
            {
                "onset": e.onset,
                "offset": e.offset,
                "label": e.label,
                "label_name": CLASS_NAMES[e.label],
                "onset_s": round(e.onset / fps, 6),
                "offset_s": round(e.offset / fps, 6),
                "duration_s": round((e.offset - e.onset + 1) / fps, 6),
                "aus": list(e.aus),
                "amplitude_px": round(e.amplitude_px, 3),
            }
            for e in stream.events
        ],
        "distractors": {
            "blinks": [[a, b] for a, b in stream.plan.blink_frames],
            "noise_sigma": round(stream.plan.noise_sigma, 3),
        },
        "spec": asdict(spec),
    }
    truth_path = args.out_dir / "sample_truth.json"
    truth_path.write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    face_rate = n_faces / max(n_read, 1)
    print(
        f"wrote {video_path} ({size / 1e6:.2f} MB, {fourcc}, {n_read} frames, "
        f"face found in {100 * face_rate:.1f}%) and {truth_path}: "
        f"{sum(e.label == 1 for e in stream.events)} ME, "
        f"{sum(e.label == 2 for e in stream.events)} MaE"
    )
    if face_rate < 0.95:
        raise SystemExit(f"mediapipe finds the face in only {100 * face_rate:.1f}% of frames")


if __name__ == "__main__":
    main()
