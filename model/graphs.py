"""The two model functions as deployable graph modules, shared by the ONNX and TensorRT exports.

- ``EncoderGraph``: ``frames_u8 (N, 112, 112, 3) uint8 -> x_prime (N, ...), x_atten (N, ...)``;
- ``WindowGraph``: ``x_prime (B, T, ...), x_atten (B, T, ...)[, geom (B, T, G)] -> probs
  (B, T, 3)``, the softmax inside, so every backend returns probabilities. ``geom`` is an input
  exactly when the network has a geometry channel (``window_inputs``).

Exports are cached by a hash of the weights and config (``weights_hash``) and written atomically
(``atomic_write``: a temporary name, then a rename), so a second process never reads a
half-written file.
"""

from __future__ import annotations

import copy
import hashlib
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from .fesnet import FESNet

# Bump when the exported graphs change for the same weights, so stale caches are not reused.
EXPORT_VERSION = 2  # 2: the window graph takes geom when the network has a geometry channel
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "fesnet"

ENCODER_INPUTS = ("frames_u8",)
ENCODER_OUTPUTS = ("x_prime", "x_atten")
WINDOW_INPUTS = ("x_prime", "x_atten")
GEOMETRY_INPUT = "geom"
WINDOW_OUTPUTS = ("probs",)


def window_inputs(net: FESNet) -> tuple[str, ...]:
    """The window graph's input names, in order: the features, then ``geom`` if it reads one."""
    return WINDOW_INPUTS + ((GEOMETRY_INPUT,) if net.cfg.geometry_dims else ())


class ExportError(RuntimeError):
    """A graph could not be exported, or an exported graph disagrees with torch."""


def deployable(net: FESNet) -> FESNet:
    """An fp32 eval-mode copy of ``net`` (the caller's module keeps its mode and dtype)."""
    return copy.deepcopy(net).float().eval()


class EncoderGraph(nn.Module):
    """``encode_frames`` as a module with tensor outputs: what ONNX and TensorRT compile."""

    def __init__(self, net: FESNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, frames_u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.net.encode_frames(frames_u8)
        return f.x_prime, f.x_atten


class WindowGraph(nn.Module):
    """``forward_window`` followed by the softmax over classes: (B, T, ...) -> probs (B, T, 3)."""

    def __init__(self, net: FESNet) -> None:
        super().__init__()
        self.net = net

    def forward(
        self, x_prime: torch.Tensor, x_atten: torch.Tensor, geom: torch.Tensor | None = None
    ) -> torch.Tensor:
        logits = self.net.forward_window(x_prime, x_atten, geom)
        return torch.softmax(logits.float(), dim=-1)


def example_inputs(
    net: FESNet, n_frames: int = 2, batch: int = 2, seed: int = 0
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Random frames_u8 (n, 112, 112, 3) and the window graph's inputs (``window_inputs``):
    x_prime (B, T, ...), x_atten (B, T, ...)[, geom (B, T, G)]."""
    cfg = net.cfg
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (n_frames, cfg.image_size, cfg.image_size, 3), generator=g)
    t = cfg.window_frames
    c_deep, c_att = cfg.deep_channels[-1], cfg.init_channels[-1]
    x_prime = torch.randn(batch, t, c_deep, cfg.deep_hw, cfg.deep_hw, generator=g)
    x_atten = torch.randn(batch, t, c_att, cfg.attn_hw, cfg.attn_hw, generator=g).relu()
    window = (x_prime, x_atten)
    if cfg.geometry_dims:
        window += (torch.randn(batch, t, cfg.geometry_dims, generator=g),)
    return frames.to(torch.uint8), window


def weights_hash(net: FESNet) -> str:
    """sha256 over the model config and every tensor of the state dict (names, shapes, bytes)."""
    h = hashlib.sha256(net.cfg.to_json().encode())
    for name, t in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def ensure_dir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p
