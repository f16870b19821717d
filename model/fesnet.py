"""FESNet: local spatial discrepancy module (LSDM) + multi-scale temporal aggregation module (MTAM).

Zhang, Lu, Wang, He, "FESNet: Spotting Facial Expressions Using Local Spatial Discrepancy and
Multi-Scale Temporal Aggregation". Every place where the paper is ambiguous, and the reading
chosen here, is listed in docs/PAPER_NOTES.md and marked "Reading:" below.

The forward is split in two so that streaming, training and evaluation share one path:

- ``encode_frames``: per frame, independent of the window -> ``FrameFeatures(x_prime, x_atten)``.
  The streaming ring buffer caches it once per frame.
- ``forward_window``: per window of cached features; the window's first frame is the reference.
  With ``geometry_dims > 0`` it also reads each frame's geometry vector (model/geometry.py): the
  face's expressive points against its running neutral shape, computed from landmarks outside
  the network, cached per slot like the pixel features.
- ``forward`` = both, for training on raw windows.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .geometry import GEOMETRY_DIMS, RMS_ALL

CLASS_NAMES = ("neutral", "ME", "MaE")
MODEL_FPS = 60.0


@dataclass(frozen=True)
class FESNetConfig:
    """Every shape and width of the network. Checkpoints store this as JSON beside the weights."""

    window_frames: int = 32
    image_size: int = 112
    num_classes: int = 3
    stem_channels: int = 24  # the single conv before the residual blocks (stride 2)
    init_channels: tuple[int, int, int] = (32, 48, 48)  # 3 residual blocks -> X_init
    init_strides: tuple[int, int, int] = (2, 2, 1)
    attn_depth: int = 4  # D
    attn_heads: int = 8  # H
    attn_mlp_ratio: float = 2.0
    deep_channels: tuple[int, int] = (64, 64)  # 2 residual blocks -> x'
    deep_strides: tuple[int, int] = (2, 1)
    mtam_channels: int = 64
    mtam_kernel: int = 3
    mtam_dilations: tuple[int, ...] = (1, 2, 4, 8, 16)  # the five multi-scale temporal convs
    refine_stages: int = 2  # S
    refine_layers: int = 5  # l = 0..4, dilation 2**l
    dropout: float = 0.1
    # Geometry channel: per-frame vector width (0 = pixels only, as the paper) and the width of
    # the small MLP that reads it (vs the running neutral and vs the window's reference frame).
    geometry_dims: int = 0
    geometry_hidden: int = 32
    # "both": the MLP reads the vector against the running neutral and against the window's
    # first frame; "window": only against the first frame (the ablation of the neutral anchor).
    geometry_reference: str = "both"
    # RGB normalisation applied inside encode_frames, so every caller feeds raw uint8 crops.
    pixel_mean: float = 0.5
    pixel_std: float = 0.25

    def __post_init__(self) -> None:
        if self.init_channels[-1] % self.attn_heads:
            raise ValueError(
                f"attention width {self.init_channels[-1]} must be divisible by "
                f"attn_heads={self.attn_heads}"
            )
        if len(self.mtam_dilations) < 1 or self.refine_stages < 1 or self.refine_layers < 1:
            raise ValueError("MTAM needs at least one temporal conv, stage and layer")
        if self.geometry_reference not in ("both", "window"):
            raise ValueError(f"geometry_reference must be 'both' or 'window', "
                             f"got {self.geometry_reference!r}")

    @property
    def attn_hw(self) -> int:
        """Side of the X_init / X_Atten feature map (tokens per frame = attn_hw**2)."""
        side = self.image_size // 2  # stem
        for s in self.init_strides:
            side = math.ceil(side / s)
        return side

    @property
    def deep_hw(self) -> int:
        side = self.attn_hw
        for s in self.deep_strides:
            side = math.ceil(side / s)
        return side

    @classmethod
    def paper(cls) -> FESNetConfig:
        """Widths closest to the paper's description (its Table 1 did not survive extraction)."""
        return cls(
            stem_channels=32,
            init_channels=(64, 128, 128),
            deep_channels=(256, 256),
            mtam_channels=128,
            attn_mlp_ratio=4.0,
        )

    @classmethod
    def small(cls) -> FESNetConfig:
        """The shipped configuration: sized for a 2-core CPU at >= 120 frames/s."""
        return cls()

    @classmethod
    def tiny(cls) -> FESNetConfig:
        """For tests: same topology (D=4, H=8, S=2, 5 layers), minimal widths."""
        return cls(
            stem_channels=8,
            init_channels=(8, 16, 16),
            deep_channels=(16, 16),
            mtam_channels=16,
            attn_mlp_ratio=1.0,
            dropout=0.0,
        )

    @classmethod
    def named(cls, name: str) -> FESNetConfig:
        presets = {"paper": cls.paper, "small": cls.small, "tiny": cls.tiny}
        if name not in presets:
            raise ValueError(f"unknown model config {name!r}; choose one of {sorted(presets)}")
        return presets[name]()

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> FESNetConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown FESNetConfig keys: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class FrameFeatures(NamedTuple):
    """Per-frame LSDM features; cacheable because they do not depend on the window."""

    x_prime: torch.Tensor  # (N, C_deep, deep_hw, deep_hw): x' after the 2 deep residual blocks
    x_atten: torch.Tensor  # (N, C_init, attn_hw, attn_hw): X_Atten, attention-weighted X_init


@dataclass
class WindowOutput:
    """Everything the loss needs from one window batch."""

    logits: torch.Tensor  # (B, T, 3) final proposal p^{S-1|4}
    proposals: list[torch.Tensor]  # every frame-level proposal (B, T, 3): spatial, temporal,
    # combined, then each refinement layer's p^{s|l}; the smooth loss runs over the MTAM ones
    refine_proposals: list[torch.Tensor]  # just the S*5 refinement-layer proposals
    x_dd: torch.Tensor  # (B, T, C, h, w) x'' (local spatial discrepancy features) for L_LSDM


class ResidualBlock(nn.Module):
    """Basic ResNet block (two 3x3 convs, BN, identity or 1x1 projection shortcut)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class AttentionBlock(nn.Module):
    """Pre-norm transformer block over the h*w spatial tokens of one frame."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, L, d = x.shape  # (N frames, L tokens, d channels)
        qkv = self.qkv(self.norm1(x)).reshape(n, L, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (N, H, L, d/H)
        a = F.scaled_dot_product_attention(q, k, v)  # (N, H, L, d/H)
        x = x + self.proj(a.transpose(1, 2).reshape(n, L, d))
        return x + self.mlp(self.norm2(x))


class LSDMEncoder(nn.Module):
    """Per-frame half of LSDM: conv + 3 residual blocks -> X_init; D attention blocks ->
    X_Atten; 2 residual blocks -> x'."""

    def __init__(self, cfg: FESNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stem = nn.Sequential(
            nn.Conv2d(3, cfg.stem_channels, 3, 2, 1, bias=False),
            nn.BatchNorm2d(cfg.stem_channels),
            nn.ReLU(inplace=True),
        )
        blocks, c = [], cfg.stem_channels
        for c_out, s in zip(cfg.init_channels, cfg.init_strides, strict=True):
            blocks.append(ResidualBlock(c, c_out, s))
            c = c_out
        self.init_blocks = nn.Sequential(*blocks)
        dim, side = c, cfg.attn_hw
        # Reading: learned absolute position embedding per token (ViT [7], which the paper cites).
        self.pos = nn.Parameter(torch.zeros(1, side * side, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.attn = nn.Sequential(
            *[
                AttentionBlock(dim, cfg.attn_heads, cfg.attn_mlp_ratio, cfg.dropout)
                for _ in range(cfg.attn_depth)
            ]
        )
        self.attn_norm = nn.LayerNorm(dim)
        deep = []
        for c_out, s in zip(cfg.deep_channels, cfg.deep_strides, strict=True):
            deep.append(ResidualBlock(c, c_out, s))
            c = c_out
        self.deep_blocks = nn.Sequential(*deep)

    def forward(self, frames_u8: torch.Tensor) -> FrameFeatures:
        cfg = self.cfg
        # (N,H,W,3) uint8 -> (N,3,H,W). contiguous(): the permuted view has channels-last
        # strides, and torch 2.13's CPU channels-last conv backward corrupts the heap
        # (double free; reproduced on these machines), so training must not take that path.
        x = frames_u8.permute(0, 3, 1, 2).contiguous().float()
        x = (x / 255.0 - cfg.pixel_mean) / cfg.pixel_std
        x_init = self.init_blocks(self.stem(x))  # (N, C, s, s)
        n, c, h, w = x_init.shape
        tokens = x_init.flatten(2).transpose(1, 2) + self.pos  # (N, s*s, C)
        tokens = self.attn_norm(self.attn(tokens))
        x_atten = tokens.transpose(1, 2).reshape(n, c, h, w)  # (N, C, s, s)
        x_prime = self.deep_blocks(x_atten)  # (N, C', s', s')
        return FrameFeatures(x_prime, x_atten)


class MTAM(nn.Module):
    """Multi-scale temporal aggregation: five dilated temporal convs -> temporal proposal;
    combined with the spatial proposal; S refinement blocks of 5 dilated layers (Eq. 2)."""

    def __init__(self, cfg: FESNetConfig, c_in: int) -> None:
        super().__init__()
        f, k, nc = cfg.mtam_channels, cfg.mtam_kernel, cfg.num_classes
        self.inp = nn.Conv1d(c_in, f, 1)
        # Reading: "same kernel, different temporal receptive fields" = same kernel size with
        # dilations 1,2,4,8,16; their outputs are concatenated and fused by a 1x1 conv.
        self.scales = nn.ModuleList(
            [nn.Conv1d(f, f, k, padding=d * (k - 1) // 2, dilation=d) for d in cfg.mtam_dilations]
        )
        self.fuse = nn.Sequential(
            nn.Conv1d(f * len(cfg.mtam_dilations), f, 1), nn.BatchNorm1d(f), nn.ReLU(inplace=True)
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.temporal_head = nn.Conv1d(f, nc, 1)
        # Reading: spatial and temporal proposals are combined by summing their logits.
        self.stages = nn.ModuleList()
        for _ in range(cfg.refine_stages):
            layers, heads = nn.ModuleList(), nn.ModuleList()
            for li in range(cfg.refine_layers):
                d = 2**li
                c0 = nc if li == 0 else f
                conv = nn.Conv1d(c0, f, k, padding=d * (k - 1) // 2, dilation=d)
                # Eq. 2: layer 0 is a plain conv of softmax(previous block's output);
                # layers 1..4 are ReLU(BN(conv(previous layer))).
                if li > 0:
                    conv = nn.Sequential(conv, nn.BatchNorm1d(f), nn.ReLU())
                layers.append(conv)
                # Reading: each layer's F-channel output is read out as a 3-class proposal
                # p^{s|l} by a 1x1 conv (the paper keeps every layer's proposal for the loss).
                heads.append(nn.Conv1d(f, nc, 1))
            self.stages.append(nn.ModuleDict({"layers": layers, "heads": heads}))

    def forward(
        self, feats: torch.Tensor, spatial_logits: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """feats (B, C, T), spatial_logits (B, 3, T) -> (temporal logits, refinement proposals)."""
        h = self.inp(feats)  # (B, F, T)
        h = self.fuse(torch.cat([conv(h) for conv in self.scales], dim=1))  # (B, F, T)
        temporal = self.temporal_head(self.drop(h))  # (B, 3, T)
        prev = temporal + spatial_logits
        refine: list[torch.Tensor] = []
        for stage in self.stages:
            x = F.softmax(prev, dim=1)  # Eq. 2, l = 0: softmax of previous block's last layer
            for layer, head in zip(stage["layers"], stage["heads"], strict=True):
                x = layer(x)  # (B, F, T)
                prev = head(x)  # (B, 3, T) proposal p^{s|l}
                refine.append(prev)
        return temporal, refine


class GeometryBranch(nn.Module):
    """Per-frame MLP over the geometry channel, against the running neutral (the vector as
    given) and against the window's reference frame (vector minus frame 0's), the same first-
    frame discrepancy Eq. 1 takes of the pixel features. Fixed input scaling: displacements and
    RMS are in inter-ocular distances (~0.01-0.1), z-scores are unbounded, so displacements are
    multiplied by 20 and z-scores compressed by asinh."""

    def __init__(self, dims: int, hidden: int, reference: str = "both") -> None:
        super().__init__()
        if dims != GEOMETRY_DIMS:
            raise ValueError(f"geometry_dims {dims} != the geometry channel's {GEOMETRY_DIMS}")
        self.n_metric = RMS_ALL + 1  # displacements and RMS come first, z-scores last
        self.neutral = reference == "both"
        self.mlp = nn.Sequential(
            nn.Linear((2 if self.neutral else 1) * dims, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
        )

    def forward(self, geom: torch.Tensor) -> torch.Tensor:
        """(B, T, G) -> (B, T, hidden)."""
        g = torch.cat([20.0 * geom[..., : self.n_metric], torch.asinh(geom[..., self.n_metric :])],
                      dim=-1)
        if not self.neutral:
            return self.mlp(g - g[:, :1])  # (B, T, G) -> (B, T, hidden)
        return self.mlp(torch.cat([g, g - g[:, :1]], dim=-1))  # (B, T, 2G) -> (B, T, hidden)


class FESNet(nn.Module):
    def __init__(self, cfg: FESNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = LSDMEncoder(cfg)
        c_deep, c_att = cfg.deep_channels[-1], cfg.init_channels[-1]
        scale = cfg.attn_hw // cfg.deep_hw
        # DeConv brings the discrepancy x' - x'_0 back to X_Atten's resolution and width.
        self.deconv = nn.ConvTranspose2d(c_deep, c_att, kernel_size=scale, stride=scale)
        self.deconv_bn = nn.BatchNorm2d(c_att)
        # Reading: the frame-wise spatial proposal is a linear head on x'' pooled over space
        # (average and max pooling concatenated: the discrepancy is local, max keeps it).
        self.spatial_head = nn.Linear(2 * c_att, cfg.num_classes)
        self.geometry: GeometryBranch | None = None
        c_seq = 2 * c_att
        if cfg.geometry_dims:
            self.geometry = GeometryBranch(cfg.geometry_dims, cfg.geometry_hidden,
                                           cfg.geometry_reference)
            c_seq += cfg.geometry_hidden
        self.mtam = MTAM(cfg, c_seq)
        if cfg.attn_hw % cfg.deep_hw:
            raise ValueError(
                f"attention map {cfg.attn_hw} must be a multiple of the deep map {cfg.deep_hw}"
            )

    def encode_frames(self, frames_u8: torch.Tensor) -> FrameFeatures:
        """(N, 112, 112, 3) uint8 RGB crops -> per-frame FrameFeatures."""
        if frames_u8.dtype != torch.uint8 or frames_u8.ndim != 4 or frames_u8.shape[-1] != 3:
            raise ValueError(
                f"encode_frames expects uint8 (N, H, W, 3) RGB crops, got "
                f"{tuple(frames_u8.shape)} {frames_u8.dtype}"
            )
        return self.encoder(frames_u8)

    def forward_window(
        self,
        x_prime: torch.Tensor,
        x_atten: torch.Tensor,
        geom: torch.Tensor | None = None,
        return_all: bool = False,
    ) -> torch.Tensor | WindowOutput:
        """(B, T, ...) cached features of T frames, position 0 the reference -> (B, T, 3) logits.
        ``geom`` (B, T, geometry_dims) is required exactly when the config has a geometry
        channel."""
        b, t = x_prime.shape[:2]
        if (geom is None) != (self.geometry is None):
            need = "needs a" if self.geometry is not None else "has no"
            raise ValueError(f"this FESNet {need} geometry channel (geometry_dims="
                             f"{self.cfg.geometry_dims}), got geom={geom is not None}")
        # Eq. 1: x'' = ReLU(BN(DeConv(x' - x'_base)) + X_Atten), x'_base = f'_0 repeated T times.
        diff = (x_prime - x_prime[:, :1]).flatten(0, 1)  # (B*T, C', s', s')
        up = self.deconv_bn(self.deconv(diff))  # (B*T, C, s, s)
        x_dd = F.relu(up + x_atten.flatten(0, 1))  # (B*T, C, s, s)
        pooled = torch.cat([x_dd.mean(dim=(2, 3)), x_dd.amax(dim=(2, 3))], dim=1)  # (B*T, 2C)
        spatial = self.spatial_head(pooled).reshape(b, t, -1)  # (B, T, 3)
        seq = pooled.reshape(b, t, -1)  # (B, T, 2C)
        if self.geometry is not None:
            seq = torch.cat([seq, self.geometry(geom)], dim=-1)  # (B, T, 2C + H)
        seq = seq.transpose(1, 2)  # (B, C_seq, T)
        temporal, refine = self.mtam(seq, spatial.transpose(1, 2))
        logits = refine[-1].transpose(1, 2)  # (B, T, 3)
        if not return_all:
            return logits
        return WindowOutput(
            logits=logits,
            proposals=[spatial, temporal.transpose(1, 2)] + [p.transpose(1, 2) for p in refine],
            refine_proposals=[p.transpose(1, 2) for p in refine],
            x_dd=x_dd.reshape(b, t, *x_dd.shape[1:]),
        )

    def forward(
        self, frames_u8: torch.Tensor, geom: torch.Tensor | None = None, return_all: bool = False
    ):
        """(B, T, 112, 112, 3) uint8 windows -> (B, T, 3) logits (or WindowOutput)."""
        b, t = frames_u8.shape[:2]
        feats = self.encode_frames(frames_u8.flatten(0, 1))
        x_prime = feats.x_prime.reshape(b, t, *feats.x_prime.shape[1:])
        x_atten = feats.x_atten.reshape(b, t, *feats.x_atten.shape[1:])
        return self.forward_window(x_prime, x_atten, geom, return_all=return_all)
