"""Where inside a labelled expression does a checkpoint's score sit?

For each checkpoint, every window of the held-out synthetic test videos is scored once and fused
by the checkpoint's own merger settings (the same ``merge_offline`` the spotter's merger uses).
Then the mean fused p_expr = p_ME + p_MaE is reported over: the first, middle and last third of
every MaE interval, every ME interval, and the neutral frames (more than a window's length away
from any expression: ``calm_p_expr``, the slots the neutral reference is measured on). A MaE
whose middle third sits below the on-threshold is cut into pieces shorter than a MaE, which is
how the model card explains its MaE F1.

    python scripts/score_profile.py model/checkpoints/fesnet_small_synthetic.pt [OTHER.pt ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fesnet.calibration.fit import calm_p_expr, score_videos
from fesnet.model.datasets import synthetic_split
from fesnet.model.merger import MergerConfig
from fesnet.model.runtime import RuntimeConfig, load_runtime

PARTS = ("MaE first third", "MaE middle third", "MaE last third", "ME", "neutral")


def profile(scored: list, cfg: MergerConfig) -> dict[str, float]:
    parts: dict[str, list[float]] = {k: [] for k in PARTS}
    for v in scored:
        p, neutral = calm_p_expr(v, cfg)
        for on, off, label in v.intervals:
            seg = p[on : off + 1]
            if label == 2:
                k = max(1, len(seg) // 3)
                for name, piece in zip(PARTS[:3], (seg[:k], seg[k:-k], seg[-k:]), strict=True):
                    parts[name].append(float(piece.mean()))
            else:
                parts["ME"].append(float(seg.mean()))
        parts["neutral"].append(float(p[neutral].mean()))
    return {k: round(float(np.mean(x)), 3) for k, x in parts.items() if x}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+", type=Path, help="checkpoint .pt files")
    ap.add_argument("--cache-dir", type=Path, default=Path(".cache/aligned"))
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    videos = synthetic_split("test", a.cache_dir)
    for path in a.checkpoints:
        runtime = load_runtime(RuntimeConfig(path, "torch", a.threads))
        cfg = runtime.merger
        scored = score_videos(runtime.backend, videos, runtime.window_frames,
                              runtime.stride_frames)
        result = {"on_threshold": cfg.on_threshold, **profile(scored, cfg)}
        print(json.dumps({"checkpoint": str(path), "mean fused p_expr": result}))


if __name__ == "__main__":
    main()
