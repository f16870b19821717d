"""Checkpoints: weights (``NAME.pt``, a plain state_dict) with their config as JSON beside them
(``NAME.json``: model config, the preprocessing the weights assume, the default merger settings,
what the weights were trained on and how they scored).

``load`` refuses anything that does not match instead of failing deep inside torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .fesnet import MODEL_FPS, FESNet, FESNetConfig
from .geometry import GeometryConfig

FORMAT_VERSION = 1
DEFAULT_CHECKPOINT = Path(__file__).parent / "checkpoints" / "fesnet_small_synthetic.pt"

# What every checkpoint's weights assume about their input. A loader compares this with what
# the running code does (model/data/align.py), so a mismatch is caught, not silently degraded.
PREPROCESSING = {
    "aligner": "mediapipe-facemesh-0.10.14-similarity",
    "crop_size": 112,
    "color": "RGB",
    "fps": MODEL_FPS,
}


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or does not fit the model it is loaded into."""


@dataclass
class Checkpoint:
    net: FESNet
    config: FESNetConfig
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def merger(self) -> dict[str, Any]:
        """Default merger settings shipped with the weights (fitted on validation data)."""
        return dict(self.meta.get("merger", {}))

    @property
    def geometry(self) -> GeometryConfig | None:
        """The geometry channel's settings the weights were trained with (None: pixels only)."""
        if not self.config.geometry_dims:
            return None
        return GeometryConfig.from_dict(self.meta.get("geometry", {}))


def sidecar(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def save(path: str | Path, net: FESNet, meta: dict[str, Any] | None = None) -> Path:
    path = Path(path).with_suffix(".pt")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    doc = {
        "format_version": FORMAT_VERSION,
        "model": net.cfg.to_dict(),
        "preprocessing": PREPROCESSING,
        **(meta or {}),
    }
    sidecar(path).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return path


def update_meta(path: str | Path, **keys: Any) -> Path:
    """Replace top-level keys of a checkpoint's JSON (a key set to None is removed); the weights
    are untouched. Used to store settings fitted after training (fesnet-calibrate fit)."""
    doc = read_meta(path)
    for k, v in keys.items():
        if k in ("format_version", "model", "preprocessing"):
            raise CheckpointError(f"{k!r} describes the weights; it cannot be updated")
        if v is None:
            doc.pop(k, None)
        else:
            doc[k] = v
    side = sidecar(Path(path))
    side.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return side


def read_meta(path: str | Path) -> dict[str, Any]:
    side = sidecar(Path(path))
    if not side.is_file():
        raise CheckpointError(f"checkpoint config {side} not found (expected beside the weights)")
    try:
        doc = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint config {side} is not valid JSON: {e}") from e
    if doc.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{side}: format_version {doc.get('format_version')!r}, "
            f"this code reads {FORMAT_VERSION}"
        )
    return doc


def load(
    path: str | Path | None = None, expect: FESNetConfig | None = None, device: str = "cpu"
) -> Checkpoint:
    """Load weights + config. ``expect``: refuse a checkpoint of another config."""
    path = Path(path) if path is not None else DEFAULT_CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    doc = read_meta(path)
    try:
        cfg = FESNetConfig.from_dict(doc["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{sidecar(path)}: bad model config: {e}") from e
    if expect is not None and cfg != expect:
        want = expect.to_dict()
        diff = {k: (v, want[k]) for k, v in cfg.to_dict().items() if want[k] != v}
        raise CheckpointError(f"{path} is for another model config (checkpoint, expected): {diff}")
    pre = doc.get("preprocessing", {})
    if pre != PREPROCESSING:
        raise CheckpointError(
            f"{path} assumes preprocessing {pre}, this code does {PREPROCESSING}"
        )
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # torch raises many types for a corrupt or foreign file
        raise CheckpointError(f"cannot read weights {path}: {e}") from e
    net = FESNet(cfg)
    own = net.state_dict()
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state_dict")
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path}: weights do not fit the config in {sidecar(path).name} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]})"
        )
    net.load_state_dict(state)
    net.to(device).eval()
    meta = {k: v for k, v in doc.items() if k not in ("model",)}
    return Checkpoint(net=net, config=cfg, meta=meta, path=path)
