"""Evaluate a checkpoint: metric table + per-video predictions as MEGC-style CSV.

    fesnet-eval        # shipped checkpoint on the held-out synthetic identities
    fesnet-eval --data casme2 --root /data/CASME2 --fold 0 --checkpoint runs/x/best.pt

Predictions come from ``inference.spot_video``: the streaming spotter's model functions and
merger, run offline. Metrics are computed on the 60 Hz slot timeline; the CSV maps slots back
to source frame indices.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from pathlib import Path

from tqdm import tqdm

from . import checkpoint
from .backends import Backend, TorchBackend
from .data.preprocess import AlignedVideo
from .datasets import SyntheticSetConfig, real_split, synthetic_split
from .fesnet import CLASS_NAMES, MODEL_FPS
from .inference import spot_video
from .merger import MergerConfig
from .metrics import MetricTable, evaluate_videos, labels_to_intervals

log = logging.getLogger(__name__)


def evaluate(
    backend: Backend,
    videos: list[AlignedVideo],
    merger_cfg: MergerConfig,
    stride_frames: int,
    csv_path: Path | None = None,
) -> MetricTable:
    rows, csv_rows = [], []
    for v in tqdm(videos, desc="evaluate", unit="video"):
        pred = spot_video(backend, v.crops, merger_cfg, stride_frames)
        rows.append((pred.intervals, labels_to_intervals(v.labels), len(v.labels)))
        for ev in pred.events:
            if ev.state not in ("final", "interrupted"):
                continue
            csv_rows.append(
                {
                    "vid": v.video_id,
                    "pred_onset": int(v.source_index[ev.onset_slot]),
                    "pred_offset": int(v.source_index[ev.offset_slot]),
                    "type": CLASS_NAMES[ev.label],
                    "score": round(float(ev.score), 4),
                    "onset_s": round(ev.onset_slot / MODEL_FPS, 3),
                    "offset_s": round(ev.offset_slot / MODEL_FPS, 3),
                }
            )
    if csv_path is not None:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        fields = ["vid", "pred_onset", "pred_offset", "type", "score", "onset_s", "offset_s"]
        with csv_path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(csv_rows)
    return evaluate_videos(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="fesnet-eval",
        description="Evaluate a FESNet checkpoint: interval F1 (IoU >= 0.5, MEGC), Edit, Acc; "
        "writes per-video predictions as CSV (vid, pred_onset, pred_offset, type, ...).",
    )
    p.add_argument("--checkpoint", type=Path, default=checkpoint.DEFAULT_CHECKPOINT)
    p.add_argument("--data", default="synthetic", choices=["synthetic", "casme2", "sammlv"])
    p.add_argument("--root", type=Path, help="dataset folder for casme2 / sammlv")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--folds", type=int, default=5, help="0 = leave-one-subject-out")
    p.add_argument("--cache-dir", type=Path, default=Path(".cache/aligned"))
    p.add_argument("--merger-config", type=Path, help="merger JSON (default: the checkpoint's)")
    p.add_argument("--stride", type=int, help="window stride in 60 Hz frames")
    p.add_argument("--csv", type=Path, default=Path("out/predictions.csv"))
    p.add_argument("--json", type=Path, help="also write the metric table as JSON")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        ck = checkpoint.load(a.checkpoint)
    except checkpoint.CheckpointError as e:
        raise SystemExit(f"error: {e}") from None
    merger_cfg = (
        MergerConfig.from_json(a.merger_config)
        if a.merger_config
        else MergerConfig.from_dict(ck.merger) if ck.merger else MergerConfig()
    )
    stride = a.stride or int(ck.meta.get("stride_frames", 8))
    if a.data == "synthetic":
        seed = int(ck.meta.get("trained_on", {}).get("seed", 0))
        videos = synthetic_split("test", a.cache_dir, SyntheticSetConfig(seed=seed))
    else:
        if a.root is None:
            raise SystemExit(f"error: --root is required for --data {a.data}")
        _train, videos = real_split(a.data, a.root, a.cache_dir, a.fold, a.folds, 0)
    table = evaluate(TorchBackend(ck.net), videos, merger_cfg, stride, a.csv)
    print(table.to_markdown())
    print(f"predictions: {a.csv}")
    if a.json:
        a.json.write_text(json.dumps(table.to_dict(), indent=2))


if __name__ == "__main__":
    main()
