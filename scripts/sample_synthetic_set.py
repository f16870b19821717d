"""Look at a synthetic set and time it: contact sheets of chosen frames (expression apexes and
every kind of distractor, cropped around the face) and the rendering cost per frame, per frame
size, beside the same videos rendered without the v2 features (no distractors, combo AUs, one
profile: the v1 machinery), interleaved in one run so machine load hits both alike.

Usage:
    python scripts/sample_synthetic_set.py --set v2 --videos 6 --out /tmp/v2-sample
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from fesnet.model.data.identities import load_identities
from fesnet.model.data.synthetic import SyntheticStream
from fesnet.model.datasets import SYNTHETIC_SETS, SyntheticSetConfig, synthetic_jobs


def picks(stream: SyntheticStream) -> list[tuple[str, int]]:
    """(caption, frame) of an ME and a MaE apex and the peak of each distractor kind."""
    out = []
    for label, name in ((1, "ME"), (2, "MaE")):
        event = next((e for e in stream.events if e.label == label), None)
        if event is not None:
            out.append((f"{name} {'+'.join(a.split('_')[0] for a in event.aus)}",
                        (event.onset + event.offset) // 2))
    extra = stream.plan.extra
    seen = set()
    for kind, first, last in extra.spans if extra is not None else []:
        if kind in seen:
            continue
        seen.add(kind)
        window = slice(first, last + 1)
        track = {"talk": extra.talk, "turn": np.abs(extra.yaw_deg) + np.abs(extra.pitch_deg),
                 "noise": extra.noise_sigma}.get(kind, stream.plan.blink)
        peak = first + int(np.argmax(track[window])) if kind != "twitch" else (first + last) // 2
        if kind == "turn":
            kind = f"turn y{extra.yaw_deg[peak]:.0f} p{extra.pitch_deg[peak]:.0f}"
        out.append((kind, peak))
    return out


def sheet(stream: SyntheticStream, path: Path) -> None:
    tiles = []
    for caption, i in picks(stream)[:16]:
        frame = stream.frame(i)
        h, w = frame.shape[:2]
        side = min(round(1.3 * (stream.spec.face_size_px or min(w, h))), w, h)
        x0, y0 = (w - side) // 2, (h - side) // 2
        tile = cv2.resize(frame[y0 : y0 + side, x0 : x0 + side], (256, 256),
                          interpolation=cv2.INTER_AREA if side > 256 else cv2.INTER_LINEAR)
        cv2.putText(tile, f"{i}: {caption}"[:34], (3, 250), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                    (0, 255, 255), 1)
        tiles.append(tile)
    while len(tiles) % 4:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[k : k + 4]) for k in range(0, len(tiles), 4)]
    cv2.imwrite(str(path), np.vstack(rows))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", dest="synthetic_set", default="v2", choices=SYNTHETIC_SETS)
    p.add_argument("--split", default="train", choices=["train", "val", "test"])
    p.add_argument("--videos", type=int, default=6)
    p.add_argument("--timed-frames", type=int, default=120, help="frames timed per video")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    jobs = synthetic_jobs(a.split, SyntheticSetConfig.preset(a.synthetic_set))[: a.videos]
    costs: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for identity_name, spec, seed in jobs:
        identity = load_identities([identity_name])[0]
        stream = SyntheticStream(identity, spec, seed)
        sheet(stream, a.out / f"{stream.video_id}.png")
        plain = replace(spec, distractors=None, region_mix="combos", au_spread=(1.0, 1.0),
                        profiles=("smooth",), blink_rate_hz=0.25)
        streams = {"this set": stream, "v1 machinery": SyntheticStream(identity, plain, seed)}
        frames = np.linspace(0, stream.n_frames - 1, a.timed_frames).astype(int)
        size = "x".join(map(str, spec.frame_size))
        for k, chunk in enumerate(np.array_split(frames, 6)):
            for name in sorted(streams, reverse=bool(k % 2)):
                start = time.perf_counter()
                for i in chunk:
                    streams[name].frame(int(i))
                costs[size][name].append((time.perf_counter() - start) * 1000 / len(chunk))
        print(f"{stream.video_id}: {size} {spec.fps:.0f} FPS")
    summary = {size: {name: round(float(np.mean(v)), 2) for name, v in by.items()}
               for size, by in costs.items()}
    (a.out / "render_ms_per_frame.json").write_text(json.dumps(summary, indent=1))
    print("ms per rendered frame by frame size:", json.dumps(summary))


if __name__ == "__main__":
    main()
