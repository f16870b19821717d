"""Train FESNet: a straight-line script of plain functions (no Trainer class).

    fesnet-train --data synthetic --out runs/small --minutes 40
    fesnet-train --data synthetic --set v2 --out runs/v2 --minutes 40
    fesnet-train --data casme2 --root /data/CASME2 --fold 0
    fesnet-train --data sammlv --root /data/SAMM-LV --fold 0

Training samples clips of ``clip_frames`` consecutive 60 Hz slots, encodes every frame ONCE with
``encode_frames`` and scores every ``stride``-th 32-frame window inside the clip with
``forward_window`` -- the same two functions, and the same window placement, that offline
evaluation and the streaming spotter use. Validation runs ``inference.spot_video`` (the streaming
merger) and the merger's hysteresis threshold is chosen on the validation videos, then saved in
the checkpoint as the spotter's default.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import checkpoint
from .data.preprocess import AlignedVideo
from .datasets import SYNTHETIC_SETS, SyntheticSetConfig, real_split, synthetic_split
from .fesnet import FESNet, FESNetConfig
from .geometry import GeometryConfig, geometry_features
from .head import choose_merger_on_features, feature_videos, train_head, with_geometry
from .inference import window_starts
from .losses import LossConfig, fesnet_loss
from .merger import MergerConfig
from .metrics import MetricTable
from .runtime import DEFAULT_STRIDE_FRAMES
from .sampling import class_weights, clip_start, lr_at

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    model: str = "small"
    steps: int = 3000
    minutes: float | None = None  # stop early when the time budget is spent
    clips_per_step: int = 4
    clip_frames: int = 64  # 60 Hz slots per sampled clip; windows of 32 every `stride` inside
    stride_frames: int = DEFAULT_STRIDE_FRAMES  # written to the checkpoint: what it runs at
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    expression_clip_fraction: float = 0.6  # share of clips that contain an expression
    eval_every: int = 250
    seed: int = 0
    threads: int = 2
    loss: LossConfig = field(default_factory=LossConfig)


# --------------------------------------------------------------------------- data


def build_dataset(
    data: str, root: Path | None, cache_dir: Path, fold: int, folds: int, seed: int,
    synthetic_set: str = "v1",
) -> tuple[list[AlignedVideo], list[AlignedVideo], dict]:
    """-> (train videos, validation videos, a description of the data for the model card).
    Validation never includes the test identities / test fold: thresholds are chosen on it.
    ``synthetic_set``: which synthetic set (datasets.SYNTHETIC_SETS)."""
    if data == "synthetic":
        cfg = SyntheticSetConfig.preset(synthetic_set, seed)
        desc = {"data": "synthetic", **asdict(cfg)}
        train = synthetic_split("train", cache_dir, cfg)
        return train, synthetic_split("val", cache_dir, cfg), desc
    if root is None:
        raise SystemExit(f"--root is required for --data {data}")
    train, _test = real_split(data, root, cache_dir, fold, folds, seed)
    rng = random.Random(seed)
    rng.shuffle(train)
    n_val = max(1, len(train) // 10)
    desc = {"data": data, "root": str(root), "fold": fold, "folds": folds}
    return train[n_val:], train[:n_val], desc


def sample_clip(
    videos: list[AlignedVideo],
    clip_frames: int,
    expression_fraction: float,
    rng: random.Random,
    geoms: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One random clip (crops (L,112,112,3), labels (L,), geometry (L, G) or None); with
    probability ``expression_fraction`` it is placed so that it overlaps an expression interval.
    ``geoms``: each video's geometry vectors by video id (computed over the whole video, as a
    stream computes them, then sliced)."""
    v = rng.choice([v for v in videos if len(v.labels) >= clip_frames])
    start = clip_start(v.labels, len(v.labels), clip_frames, expression_fraction, rng)
    sl = slice(start, start + clip_frames)
    return v.crops[sl], v.labels[sl], None if geoms is None else geoms[v.video_id][sl]


def augment(crops: np.ndarray, rng: random.Random) -> np.ndarray:
    """One photometric change and flip for the whole clip: what FESNet reads, the motion between
    a frame and the clip's others, is kept while the look changes. Room gain 0.6-1.3 and a side
    light (gain slope +-0.3 from the centre to the left/right edge), the ranges of the
    calibration sessions' looks (``synthetic.random_look``), an offset of +-20 and a horizontal
    flip (expressions are not lateralised)."""
    x = crops.astype(np.float32)
    side = 1.0 + rng.uniform(-0.3, 0.3) * np.linspace(-1.0, 1.0, x.shape[2], dtype=np.float32)
    x = x * (rng.uniform(0.6, 1.3) * side)[:, None] + rng.uniform(-20, 20)
    if rng.random() < 0.5:
        x = x[:, :, ::-1]
    return np.clip(x, 0, 255).astype(np.uint8)


def clip_batch(
    videos: list[AlignedVideo],
    cfg: TrainConfig,
    window_frames: int,
    rng: random.Random,
    geoms: dict[str, np.ndarray] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[int], torch.Tensor | None]:
    """(crops (C, L, 112, 112, 3), labels (C, L), window starts, geometry (C, L, G) or None)."""
    crops, labels, gs = zip(
        *[
            sample_clip(videos, cfg.clip_frames, cfg.expression_clip_fraction, rng, geoms)
            for _ in range(cfg.clips_per_step)
        ],
        strict=True,
    )
    starts = window_starts(cfg.clip_frames, window_frames, cfg.stride_frames)
    x = torch.from_numpy(np.stack([augment(c, rng) for c in crops]))  # (C, L, 112, 112, 3)
    y = torch.from_numpy(np.stack(labels).astype(np.int64))  # (C, L)
    g = None if geoms is None else torch.from_numpy(np.stack(gs))  # (C, L, G)
    return x, y, starts, g


# --------------------------------------------------------------------------- steps


def train_step(
    net: FESNet,
    x: torch.Tensor,
    y: torch.Tensor,
    starts: list[int],
    weights: torch.Tensor,
    loss_cfg: LossConfig,
    geom: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Encode each clip's frames once, score all windows inside the clips, return the loss.
    ``geom`` (C, L, G): the clips' geometry vectors, for a network with a geometry channel."""
    c, L = x.shape[:2]
    t = net.cfg.window_frames
    feats = net.encode_frames(x.flatten(0, 1))  # (C*L, ...)
    xp = feats.x_prime.reshape(c, L, *feats.x_prime.shape[1:])
    xa = feats.x_atten.reshape(c, L, *feats.x_atten.shape[1:])
    idx = torch.tensor(starts)[:, None] + torch.arange(t)[None, :]  # (W, T)
    xp_w = xp[:, idx].flatten(0, 1)  # (C*W, T, ...)
    xa_w = xa[:, idx].flatten(0, 1)
    y_w = y[:, idx].flatten(0, 1)  # (C*W, T)
    g_w = None if geom is None else geom[:, idx].flatten(0, 1)  # (C*W, T, G)
    out = net.forward_window(xp_w, xa_w, g_w, return_all=True)
    return fesnet_loss(out, y_w, weights, loss_cfg)


def choose_merger(
    net: FESNet,
    videos: list[AlignedVideo],
    base: MergerConfig,
    stride_frames: int,
    geometry: GeometryConfig | None = None,
) -> tuple[MergerConfig, MetricTable]:
    """Pick the merger thresholds with the best overall F1 on validation videos: encode them
    with the current weights, then :func:`head.choose_merger_on_features` (windows scored once,
    only the merger re-run per candidate)."""
    fvideos = feature_videos(net, videos, geometry if net.cfg.geometry_dims else None)
    return choose_merger_on_features(net, fvideos, base, stride_frames)


def save_best(
    out: Path,
    net: FESNet,
    cfg: TrainConfig,
    data_desc: dict,
    merger_cfg: MergerConfig,
    table: MetricTable,
    **progress: object,
) -> Path:
    """OUT/best.pt with what the spotter needs beside the weights: the data, the training
    settings, the merger chosen on validation and its scores; ``progress`` says how far
    training had got (step or stages)."""
    return checkpoint.save(
        out / "best.pt",
        net,
        {
            "trained_on": data_desc,
            "train_config": json.loads(json.dumps(asdict(cfg), default=str)),
            **progress,
            "stride_frames": cfg.stride_frames,
            "merger": merger_cfg.to_dict(),
            "validation": table.to_dict(),
            **({"geometry": GeometryConfig().to_dict()} if net.cfg.geometry_dims else {}),
        },
    )


def train(
    cfg: TrainConfig,
    train_videos: list[AlignedVideo],
    val_videos: list[AlignedVideo],
    out: Path,
    data_desc: dict,
    init: Path | None = None,
) -> Path:
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = random.Random(cfg.seed)
    net = checkpoint.load(init).net if init else FESNet(FESNetConfig.named(cfg.model))
    net.train()
    geometry = GeometryConfig() if net.cfg.geometry_dims else None
    geoms = None
    if geometry is not None:
        geoms = {v.video_id: geometry_features(_landmarks(v), geometry) for v in train_videos}
    weights = class_weights(train_videos, clip_frames=cfg.clip_frames,
                            expression_fraction=cfg.expression_clip_fraction, seed=cfg.seed)
    log.info("class weights (neutral, ME, MaE): %s", weights.tolist())
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    merger_base = MergerConfig(window_frames=net.cfg.window_frames)
    history: list[dict] = []
    best_f1, t0, validating_s = -1.0, time.monotonic(), 0.0  # the budget is training time
    from tqdm import tqdm

    bar = tqdm(range(cfg.steps), desc="train", unit="step")
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg, time.monotonic() - t0 - validating_s)
        x, y, starts, g = clip_batch(train_videos, cfg, net.cfg.window_frames, rng, geoms)
        loss, parts = train_step(net, x, y, starts, weights, cfg.loss, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        history.append({"step": step, **parts})
        bar.set_postfix(loss=f"{parts['loss']:.3f}", ce=f"{parts['ce']:.3f}")
        trained_s = time.monotonic() - t0 - validating_s
        out_of_time = cfg.minutes is not None and trained_s > cfg.minutes * 60
        last = step == cfg.steps - 1 or out_of_time
        if val_videos and ((step + 1) % cfg.eval_every == 0 or last):
            v0 = time.monotonic()
            merger_cfg, table = choose_merger(net, val_videos, merger_base, cfg.stride_frames,
                                              geometry)
            net.train()
            log.info("step %d validation:\n%s", step + 1, table.to_markdown())
            history[-1]["val_f1"] = table.f1_overall
            if table.f1_overall > best_f1:
                best_f1 = table.f1_overall
                save_best(out, net, cfg, data_desc, merger_cfg, table, step=step + 1)
            validating_s += time.monotonic() - v0
        if out_of_time:
            log.info("time budget of %.1f min spent at step %d", cfg.minutes, step + 1)
            break
    checkpoint.save(out / "last.pt", net, {"trained_on": data_desc, "step": len(history)})
    (out / "history.json").write_text(json.dumps(history))
    return out / "best.pt"


def _landmarks(v: AlignedVideo) -> np.ndarray:
    if v.landmarks is None:
        raise SystemExit(f"{v.video_id}: no landmarks in the aligned cache; delete the cache "
                         "file so preprocessing runs again")
    return v.landmarks


def run_head_stage(
    net: FESNet,
    cfg: TrainConfig,
    train_videos: list[AlignedVideo],
    val_videos: list[AlignedVideo],
    out: Path,
    data_desc: dict,
    minutes: float,
    geometry: bool,
    feature_cache: Path | None,
    best_f1: float = -1.0,
    evals: int = 4,
    feature_dropout: float = 0.0,
) -> Path:
    """Stage 2 (model/head.py): the window head on cached encoder features, with the geometry
    channel added first when ``geometry`` and the network has none. OUT/best.pt is replaced only
    when the head beats ``best_f1``."""
    torch.set_num_threads(cfg.threads)
    if geometry and not net.cfg.geometry_dims:
        net = with_geometry(net)
    gcfg = GeometryConfig() if net.cfg.geometry_dims else None
    train_f = feature_videos(net, train_videos, gcfg, feature_cache)
    val_f = feature_videos(net, val_videos, gcfg, feature_cache)
    best = {"f1": best_f1}

    def on_best(head_net: FESNet, merger_cfg: MergerConfig, table: MetricTable, step: int):
        if table.f1_overall > best["f1"]:
            best["f1"] = table.f1_overall
            stages = {"head_steps": step, "head_minutes": minutes}
            save_best(out, head_net, cfg, data_desc, merger_cfg, table, stages=stages)

    _net, _merger, _table, history = train_head(
        net, train_f, val_f, minutes=minutes, lr=cfg.lr, weight_decay=cfg.weight_decay,
        expression_fraction=cfg.expression_clip_fraction, stride_frames=cfg.stride_frames,
        seed=cfg.seed, loss_cfg=cfg.loss, on_best=on_best, evals=evals,
        feature_dropout=feature_dropout,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "head_history.json").write_text(json.dumps(history, indent=1))
    return out / "best.pt"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="fesnet-train",
        description="Train FESNet on the synthetic set, CAS(ME)^2 or SAMM-LV. Writes OUT/best.pt "
        "(+ best.json: config, preprocessing, chosen merger thresholds, validation scores).",
    )
    p.add_argument("--data", default="synthetic", choices=["synthetic", "casme2", "sammlv"])
    p.add_argument("--root", type=Path, help="dataset folder (CAS(ME)^2 or SAMM-LV layout)")
    p.add_argument("--set", dest="synthetic_set", default="v1", choices=SYNTHETIC_SETS,
                   help="synthetic set: v1 (10 people), v2 (dozens of identities, webcam "
                   "distractors, validation on held-out people), v3 (v2 plus videos whose MEs "
                   "are as large as MaEs: only duration tells them apart), v4 (v3 plus videos "
                   "delivered through H.264 at a webcam's bitrate); all share the test split")
    p.add_argument("--out", type=Path, default=Path("runs/train"))
    p.add_argument("--cache-dir", type=Path, default=Path(".cache/aligned"),
                   help="aligned-crop cache; a second run does not redo face alignment")
    p.add_argument("--model", default="small", choices=["paper", "small", "tiny"])
    p.add_argument("--steps", type=int, default=TrainConfig.steps)
    p.add_argument("--minutes", type=float, help="stop after this much training time")
    p.add_argument("--head-minutes", type=float, default=0.0,
                   help="stage 2: then train only the window head on cached encoder features")
    p.add_argument("--head-evals", type=int, default=4,
                   help="validations during stage 2, evenly spaced; the best one is kept")
    p.add_argument("--head-feature-dropout", type=float, default=0.0,
                   help="stage 2: dropout on the cached encoder features (against learning "
                   "the training faces)")
    p.add_argument("--no-geometry", dest="geometry", action="store_false",
                   help="stage 2 without the geometry channel (pixels only, as the paper)")
    p.add_argument("--feature-cache", type=Path, default=Path(".cache/features"),
                   help="where stage 2 keeps encoder features (keyed by the encoder weights)")
    p.add_argument("--init", type=Path, help="start from this checkpoint's weights")
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--clips-per-step", type=int, default=TrainConfig.clips_per_step)
    p.add_argument("--eval-every", type=int, default=TrainConfig.eval_every)
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--lsdm-weight", type=float, default=0.0,
        help="weight of L_LSDM (paper: 1). Default 0: at weight 1 it collapsed x''s temporal "
        "deviation (RMS 0.015 by step 300) and every proposal to a constant; docs/PAPER_NOTES.md",
    )
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = TrainConfig(
        model=a.model, steps=a.steps, minutes=a.minutes, lr=a.lr, clips_per_step=a.clips_per_step,
        eval_every=a.eval_every, seed=a.seed, threads=a.threads,
        loss=LossConfig(lsdm_weight=a.lsdm_weight),
    )
    train_v, val_v, desc = build_dataset(a.data, a.root, a.cache_dir, a.fold, a.folds, a.seed,
                                         a.synthetic_set)
    log.info("%d training videos, %d validation videos", len(train_v), len(val_v))
    if a.minutes == 0 and a.init:
        path, last = a.init, a.init  # no end-to-end stage: only the head, from --init
    else:
        path = train(cfg, train_v, val_v, a.out, desc, init=a.init)
        last = a.out / "last.pt"
    if a.head_minutes > 0:
        best_f1 = -1.0
        if (a.out / "best.pt").exists():
            best_f1 = checkpoint.read_meta(a.out / "best.pt")["validation"]["f1"]["overall"]
        path = run_head_stage(checkpoint.load(last).net, cfg, train_v, val_v, a.out, desc,
                              a.head_minutes, a.geometry, a.feature_cache, best_f1=best_f1,
                              evals=a.head_evals, feature_dropout=a.head_feature_dropout)
    print(f"best checkpoint: {path}")


if __name__ == "__main__":
    main()
