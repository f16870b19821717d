"""The spotter's own cost per frame, with the model and face landmarks taken out.

    python -P realtime/bench/spotter_only.py --reps 5 --out spotter_only.jsonl

Everything a stream does around the model runs for real: the source thread decoding a small
clip, the channel, the tracker's face states, the 60 Hz resampler, the ring, the window
scheduler, the engine's batch-shaped call, the merger, event assembly and the sinks, on the
pipeline's two threads, through a viewer session (``SpotHub.open_file``, paced as fast as it
goes). The aligner treats a frame as its own face crop and the backend reads its scores from the
crops' colour (level crops: a bright red frame is an expression), so events happen as in a real
stream but neither mediapipe nor a network costs anything. What is left is what the streaming
code itself costs: the measure for a change that moves that code around (the redesign of the
house, issue 21, was held to it against a6251b2).

Only public parts that every version since a6251b2 has are used (``load_checkpoint``,
``Runtime.from_checkpoint``, ``SpotHub.from_runtime``, ``open_file``, ``stats``), so the same
file measures another checkout: run it with that checkout's Python, and ``-P`` so that this
folder's modules do not shadow anything. Each repetition prints one JSON line: frames, events
and microseconds per frame, wall time (from opening the session to its end) and the process's
CPU time over the same span.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SIZE = 112
FPS = 60.0


class LevelBackend:
    """Scores read from the crops: red channel mean = p_expr, green = the ME share of it."""

    name = "level"
    geometry = None

    def encode(self, frames_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f = frames_u8[..., :2].reshape(len(frames_u8), -1, 2).mean(axis=1) / 255.0
        x = f.astype(np.float32)[:, :, None, None]  # (N, 2, 1, 1)
        return x, x.copy()

    def window(self, x_prime: np.ndarray, x_atten: np.ndarray, geom: Any = None) -> np.ndarray:
        e = x_prime[:, :, 0, 0, 0].astype(np.float64)  # (B, T)
        me = x_prime[:, :, 1, 0, 0].astype(np.float64)
        return np.stack([1.0 - e, e * me, e * (1.0 - me)], axis=-1).astype(np.float32)


class CropAligner:
    """A frame is its own aligned face."""

    crop_size = SIZE

    def align(self, frame_bgr: np.ndarray) -> Any:
        from fesnet.model.data.align import AlignResult

        crop = np.ascontiguousarray(frame_bgr[:, :, ::-1])
        return AlignResult(crop, 1, np.zeros((468, 2), np.float32), np.eye(2, 3))

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


def write_clip(path: Path, seconds: float) -> Path:
    """A 60 FPS 112x112 clip: rest at p_expr 0.2, an expression (p_expr 1) every 2 s (ME 0.3 s,
    MaE 1 s in turn)."""
    import cv2

    n = int(seconds * FPS)
    level = np.full(n, 0.2)
    share = np.full(n, 0.5)
    for k, start in enumerate(range(int(FPS), n - int(1.2 * FPS), int(2 * FPS))):
        length = int((0.3 if k % 2 == 0 else 1.0) * FPS)
        level[start : start + length] = 1.0  # over the shipped on-threshold (0.98)
        share[start : start + length] = 0.9 if k % 2 == 0 else 0.1
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (SIZE, SIZE))
    for p, m in zip(level, share, strict=True):
        frame = np.full((SIZE, SIZE, 3), 128, np.uint8)
        frame[..., 2], frame[..., 1] = int(p * 255), int(m * 255)  # BGR: red = p_expr
        out.write(frame)
    out.release()
    return path


def one_run(hub: Any, clip: Path, aligner: CropAligner) -> dict[str, Any]:
    """One session over the clip: wall and CPU time (every thread of this process) per frame.
    The CPU time is the steadier measure on a loaded machine: waiting for a core is not in it."""
    c0, t0 = time.process_time(), time.perf_counter()
    session = hub.open_file(str(clip), "fast", "bench", aligner)
    while session.running:
        time.sleep(0.002)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    stats = session.stats()
    session.close()
    frames = int(stats["frames"])
    return {
        "frames": frames,
        "events": stats["events"],
        "us_per_frame": 1e6 * wall / frames,
        "cpu_us_per_frame": 1e6 * cpu / frames,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="sessions over the clip")
    parser.add_argument("--seconds", type=float, default=20.0, help="clip length")
    parser.add_argument("--out", type=Path, default=None, help="append the JSON lines here")
    args = parser.parse_args(argv)

    from fesnet.model.runtime import Runtime, RuntimeConfig, load_checkpoint
    from fesnet.realtime.viewers.hub import SpotHub

    runtime = Runtime.from_checkpoint(load_checkpoint(None), RuntimeConfig(backend="torch"))
    runtime = dataclasses.replace(runtime, backend=LevelBackend())
    hub = SpotHub.from_runtime(runtime)
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_clip(Path(tmp) / "levels.mp4", args.seconds)
        aligner = CropAligner()
        one_run(hub, clip, aligner)  # warm-up: imports, first allocations
        for _ in range(args.reps):
            row = {"pid": os.getpid(), **one_run(hub, clip, aligner)}
            lines.append(json.dumps(row))
    hub.close_all()
    print("\n".join(lines))
    if args.out is not None:
        with args.out.open("a") as fh:
            fh.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
