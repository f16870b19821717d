"""Stage 2: train the window head on cached per-frame features (the encoder frozen).

On a 2-core CPU an end-to-end step costs ~13 ms per frame; a head step on cached features costs
~100x less, so the head sees ~40x more windows in the same time. Every video's frames are encoded
ONCE with the same ``encode_frames`` the streaming ring caches (kept on disk, keyed by the
encoder's weights, so later runs with the same encoder skip it), and its geometry vectors are
computed by the same :class:`~fesnet.model.geometry.GeometryTracker` the streaming spotter runs.
Validation scores windows with :func:`~fesnet.model.inference.score_windows` and merges them with
the streaming merger, so the number it reports is the number ``fesnet-eval`` would report (up
to the float16 storage of the cached features).

A head can gain the geometry channel on top of a pixel-only checkpoint (:func:`with_geometry`):
the new MTAM input channels start at zero, so before training it scores exactly as before.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .backends import Backend, TorchBackend
from .data.preprocess import AlignedVideo
from .fesnet import FESNet
from .geometry import GEOMETRY_DIMS, GeometryConfig, geometry_features
from .inference import encode_video, prediction_from_windows, score_windows, window_starts
from .losses import fesnet_loss
from .merger import MergerConfig
from .metrics import MetricTable, evaluate_videos, labels_to_intervals
from .runtime import DEFAULT_STRIDE_FRAMES
from .sampling import class_weights, clip_start, lr_at

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadSchedule:
    """The head stage's learning rate: a short warm-up, then cosine decay over the minutes."""

    lr: float
    minutes: float
    warmup_steps: int = 50
    steps: int = 10**9


@dataclass
class FeatureVideo:
    """One aligned video's cached features: what the window head reads, with the labels."""

    video_id: str
    labels: np.ndarray  # (N,) int64
    x_prime: np.ndarray  # (N, ...) float16
    x_atten: np.ndarray  # (N, ...) float16
    geom: np.ndarray | None  # (N, GEOMETRY_DIMS) float32, or None without landmarks

    def __len__(self) -> int:
        return len(self.labels)


ENCODER_CONFIG = ("image_size", "stem_channels", "init_channels", "init_strides", "attn_depth",
                  "attn_heads", "attn_mlp_ratio", "deep_channels", "deep_strides", "pixel_mean",
                  "pixel_std")


def encoder_digest(net: FESNet) -> str:
    """Hash of the encoder's config and weights: cached features stay valid while it holds,
    whatever the window head (a geometry channel added, other MTAM widths)."""
    cfg = net.cfg.to_dict()
    h = hashlib.sha256(repr({k: cfg[k] for k in ENCODER_CONFIG}).encode())
    for name, t in sorted(net.encoder.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def feature_videos(
    net: FESNet,
    videos: list[AlignedVideo],
    geometry: GeometryConfig | None,
    cache_dir: Path | None = None,
    encoder: Backend | None = None,
) -> list[FeatureVideo]:
    """Encode every frame of every video once (float16, cached under ``cache_dir``) and compute
    its geometry vectors (``geometry=None``: none). ``encoder``: the backend that runs
    ``net``'s encoder (default torch eager; ONNX Runtime is ~2x faster on a CPU and agrees to
    ~1e-5, far below the float16 storage)."""
    from tqdm import tqdm

    backend = encoder or TorchBackend(net)
    digest = encoder_digest(net)
    out = []
    for v in tqdm(videos, desc="encode", unit="video", disable=len(videos) < 2):
        xp, xa = _cached_features(backend, v, digest, cache_dir)
        geom = None
        if geometry is not None:
            if v.landmarks is None:
                raise ValueError(f"{v.video_id}: no landmarks cached; re-run preprocessing")
            geom = geometry_features(v.landmarks, geometry)
        out.append(FeatureVideo(v.video_id, v.labels, xp, xa, geom))
    return out


def _cached_features(
    backend: Backend, v: AlignedVideo, digest: str, cache_dir: Path | None
) -> tuple[np.ndarray, np.ndarray]:
    """A video's float16 encoder features, from ``cache_dir`` if there (memory-mapped: the
    pages are shared by every process reading them and loaded only where windows are drawn),
    else encoded and stored. The file is keyed by the encoder and by the crops' bytes, not by
    the video id alone: the same video aligned otherwise (another aligner setting) has other
    crops and other features."""
    if cache_dir is None:
        return tuple(a.astype(np.float16) for a in encode_video(backend, v.crops))
    crops = hashlib.blake2b(np.ascontiguousarray(v.crops).data, digest_size=6).hexdigest()
    paths = [Path(cache_dir) / f"{v.video_id}-enc{digest}-c{crops}.{name}.npy"
             for name in ("x_prime", "x_atten")]
    if not all(p.exists() for p in paths):
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        for p, a in zip(paths, encode_video(backend, v.crops), strict=True):
            tmp = p.with_name(p.name + ".tmp.npy")
            np.save(tmp, a.astype(np.float16))
            tmp.replace(p)
    xp, xa = (np.load(p, mmap_mode="r") for p in paths)
    return xp, xa


def with_geometry(net: FESNet, hidden: int = 32, reference: str = "both") -> FESNet:
    """A copy of a pixel-only ``net`` with a geometry channel; every shared weight is kept and
    the MTAM's new input channels start at zero, so it scores exactly as ``net`` until trained."""
    if net.cfg.geometry_dims:
        raise ValueError("this network already has a geometry channel")
    cfg = replace(net.cfg, geometry_dims=GEOMETRY_DIMS, geometry_hidden=hidden,
                  geometry_reference=reference)
    new = FESNet(cfg)
    state = net.state_dict()
    own = new.state_dict()
    for k, v in state.items():
        if k == "mtam.inp.weight":  # (F, C_in, 1): C_in grows by `hidden`
            w = torch.zeros_like(own[k])
            w[:, : v.shape[1]] = v
            own[k] = w
        else:
            own[k] = v
    new.load_state_dict(own)
    return new


def sample_windows(
    fvideos: list[FeatureVideo],
    n: int,
    window_frames: int,
    expression_fraction: float,
    rng: random.Random,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """n windows of cached features (B, T, ...), geometry (B, T, G) and labels (B, T);
    expression windows oversampled exactly as training clips are."""
    xp, xa, gs, ys = [], [], [], []
    for _ in range(n):
        f = fvideos[rng.randrange(len(fvideos))]
        start = clip_start(f.labels, len(f), window_frames, expression_fraction, rng)
        sl = slice(start, start + window_frames)
        xp.append(f.x_prime[sl])
        xa.append(f.x_atten[sl])
        ys.append(f.labels[sl])
        if f.geom is not None:
            gs.append(f.geom[sl])
    geom = torch.from_numpy(np.stack(gs)) if gs else None
    return (
        torch.from_numpy(np.stack(xp)).float(),
        torch.from_numpy(np.stack(xa)).float(),
        geom,
        torch.from_numpy(np.stack(ys).astype(np.int64)),
    )


def score_feature_video(
    net: FESNet, f: FeatureVideo, stride_frames: int
) -> tuple[list[int], np.ndarray]:
    """Every stride window of a cached video, scored as offline spotting scores it."""
    t = net.cfg.window_frames
    starts = window_starts(len(f), t, stride_frames)
    geom = f.geom if net.cfg.geometry_dims else None
    probs = score_windows(TorchBackend(net), f.x_prime.astype(np.float32),
                          f.x_atten.astype(np.float32), geom, starts, t)
    return starts, probs


def threshold_grid(base: MergerConfig) -> list[MergerConfig]:
    """The merger settings validation chooses from: on-threshold x hysteresis ratio."""
    grid = []
    for on in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98):
        for ratio in (0.6, 0.8):
            grid.append(replace(base, on_threshold=on, off_threshold=round(on * ratio, 3)))
    return grid


def choose_merger_on_features(
    net: FESNet, fvideos: list[FeatureVideo], base: MergerConfig, stride_frames: int
) -> tuple[MergerConfig, MetricTable]:
    """The merger setting of :func:`threshold_grid` with the best overall F1 on ``fvideos``.
    Windows are scored once; only the merger is re-run per candidate."""
    was_training = net.training
    net.eval()
    scored = [(score_feature_video(net, f, stride_frames), f) for f in fvideos]
    net.train(was_training)
    best: tuple[float, MergerConfig, MetricTable] | None = None
    for cfg in threshold_grid(base):
        rows = []
        for (starts, probs), f in scored:
            pred = prediction_from_windows(starts, probs, cfg)
            rows.append((pred.intervals, labels_to_intervals(f.labels), len(f)))
        table = evaluate_videos(rows)
        if best is None or table.f1_overall > best[0]:
            best = (table.f1_overall, cfg, table)
    assert best is not None
    return best[1], best[2]


def _train_step(
    net: FESNet,
    opt: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor],
    weights: torch.Tensor,
    loss_cfg: Any,
    feature_dropout: float,
) -> dict[str, float]:
    """One optimiser step of the window head on a batch of cached-feature windows; the loss's
    parts."""
    xp, xa, geom, y = batch
    if feature_dropout > 0:
        xp = torch.nn.functional.dropout(xp, feature_dropout)
        xa = torch.nn.functional.dropout(xa, feature_dropout)
    out = net.forward_window(xp, xa, geom if net.cfg.geometry_dims else None, return_all=True)
    loss, parts = fesnet_loss(out, y, weights, loss_cfg)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 5.0)
    opt.step()
    return parts


def train_head(
    net: FESNet,
    train_f: list[FeatureVideo],
    val_f: list[FeatureVideo],
    *,
    minutes: float,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    windows_per_step: int = 32,
    expression_fraction: float = 0.6,
    stride_frames: int = DEFAULT_STRIDE_FRAMES,
    evals: int = 4,
    seed: int = 0,
    loss_cfg=None,
    on_best=None,
    feature_dropout: float = 0.0,
) -> tuple[FESNet, MergerConfig | None, MetricTable | None, list[dict]]:
    """Train the window head (everything but the encoder) for ``minutes`` of training time
    (validation time not counted, so a slow or loaded machine still gets its training steps);
    validate ``evals`` times, evenly spaced, and keep the best weights by validation overall
    F1. ``on_best(net, merger_cfg, table, step)`` is called at every new best (to save a
    checkpoint). Returns (best net, its merger, its validation table, the log of (step, loss,
    validation F1)). ``feature_dropout``: dropout on the cached encoder features during
    training (a regulariser against learning the training faces)."""
    import copy

    from tqdm import tqdm

    from .losses import LossConfig

    loss_cfg = loss_cfg or LossConfig(lsdm_weight=0.0)
    torch.manual_seed(seed)
    rng = random.Random(seed + 1)
    for p in net.encoder.parameters():
        p.requires_grad_(False)
    params = [p for p in net.parameters() if p.requires_grad]
    t = net.cfg.window_frames
    weights = class_weights(train_f, clip_frames=t, expression_fraction=expression_fraction,
                            seed=seed)
    log.info("head class weights (neutral, ME, MaE): %s", weights.tolist())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = HeadSchedule(lr=lr, minutes=minutes)
    base = MergerConfig(window_frames=t)
    due = [minutes * 60 * (i + 1) / evals for i in range(evals)]
    best: tuple[float, FESNet, MergerConfig, MetricTable] | None = None
    history: list[dict] = []
    t0, step, validating_s = time.monotonic(), 0, 0.0
    bar = tqdm(desc="head", unit="step")
    net.train()
    while due:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, sched, time.monotonic() - t0 - validating_s)
        batch = sample_windows(train_f, windows_per_step, t, expression_fraction, rng)
        parts = _train_step(net, opt, params, batch, weights, loss_cfg, feature_dropout)
        step += 1
        bar.update()
        bar.set_postfix(loss=f"{parts['loss']:.3f}")
        trained_s = time.monotonic() - t0 - validating_s
        if trained_s >= due[0]:
            due.pop(0)
            entry = {"step": step, "minutes": round(trained_s / 60, 2), **parts}
            v0 = time.monotonic()
            if val_f:
                merger_cfg, table = choose_merger_on_features(net, val_f, base, stride_frames)
                entry["val_f1"] = table.f1
                log.info("head step %d validation:\n%s", step, table.to_markdown())
                if best is None or table.f1_overall > best[0]:
                    best = (table.f1_overall, copy.deepcopy(net), merger_cfg, table)
                    if on_best is not None:
                        on_best(net, merger_cfg, table, step)
            validating_s += time.monotonic() - v0
            history.append(entry)
    bar.close()
    for p in net.encoder.parameters():
        p.requires_grad_(True)
    if best is None:
        return net.eval(), None, None, history
    return best[1].eval(), best[2], best[3], history
