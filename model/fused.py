"""The fused spotter: the network's evidence checked against what the face's landmarks did.

Why it exists: on faces and motion the network never trained on, its expression scores are
raised by things that are not expressions (sensor noise, compression, lighting, talking, blinks),
while the landmark geometry (model/geometry.py: expressive points against the face's own running
neutral shape, head motion removed) is identity-light but blind to the faintest motions. Each is
wrong in a different way, so their agreement is worth more than either alone.

Per slot of a window, from the network's probabilities ``(p_N, p_ME, p_MaE)`` and the slot's
geometry vector:

- ``e_net = p_ME + p_MaE`` (the network's expression evidence) and
  ``e_geo = sigmoid((z - geo_k) / geo_scale)`` with ``z`` the geometry channel's overall robust
  z-score (the landmark peer's score, model/peer.py);
- *evidence*: ``e = e_net ** w * e_geo ** (1 - w)`` (``rule="geometric"``: both must agree) or
  ``e = w * e_net + (1 - w) * e_geo`` (``rule="mean"``: either may carry it), ``w =
  net_weight``;
- *distractors*: a blink (both eyes close: upper lids move towards the lower lids by more than
  ``blink_iod`` inter-ocular distances) takes the slot's ME share to neutral; a window in which
  the mouth opens and closes like speech (at least ``talk_reversals`` reversals of the lip gap of
  more than ``talk_iod`` each) takes ``talk_suppress`` of every slot's evidence to neutral;
- *class*: the network's ME share of its own evidence, ``p_ME / (p_ME + p_MaE)``, splits ``e``
  into ME and MaE. The merger's duration rules then decide as for every method.

It is a :class:`~fesnet.model.backends.Backend` over the network's backend: ``encode`` is the
network's, ``window`` adds nothing but numpy on the window's own arrays, so it is stateless and
the streaming spotter, offline evaluation and calibration run it exactly as they run FESNet
(streaming == offline holds by construction, and is tested). The settings, and the merger they
were chosen with, are stored in the checkpoint's JSON (``"fused"``) by the script that chose them
on validation videos (scripts/choose_fused.py); the defaults below are that script's choice for
the shipped checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import numpy as np

from .geometry import DISP, GROUP_NAMES, Z_ALL, GeometryConfig

Rule = Literal["geometric", "mean"]
RULES: tuple[str, ...] = ("geometric", "mean")


def _dy(name: str) -> int:
    """Index of a group's vertical displacement within the geometry vector."""
    return DISP.start + 2 * GROUP_NAMES.index(name) + 1


_UPPER_LIDS = np.array([_dy("upper_lid_l"), _dy("upper_lid_r")])
_LOWER_LIDS = np.array([_dy("lower_lid_l"), _dy("lower_lid_r")])
_UPPER_LIP, _LOWER_LIP = _dy("upper_lip"), _dy("lower_lip")


@dataclass(frozen=True)
class FusedConfig:
    """Settings of the fused evidence (see the module docstring). Stored in the checkpoint's
    JSON under ``"fused"`` with the merger settings chosen beside them."""

    rule: Rule = "geometric"
    net_weight: float = 0.5
    """Weight of the network's evidence (1: the network alone, 0: the geometry alone)."""
    geo_k: float = 2.0
    """Overall geometry z at which the geometry's evidence is 0.5."""
    geo_scale: float = 1.0
    """Width of the geometry's sigmoid, in z units."""
    blink_iod: float | None = None
    """Eye closure (both eyes, IOD) above which a slot's ME share is taken to neutral; None: off."""
    talk_iod: float | None = None
    """Size of a lip-gap reversal (IOD) that counts towards speech; None: off."""
    talk_reversals: int = 3
    """Reversals of the lip gap within one window that make it speech."""
    talk_suppress: float = 1.0
    """Share of the evidence a speech window loses (1: all of it)."""

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {self.rule!r}")
        if not 0.0 <= self.net_weight <= 1.0 or not 0.0 <= self.talk_suppress <= 1.0:
            raise ValueError("net_weight and talk_suppress must be within [0, 1]")
        if self.geo_scale <= 0 or self.talk_reversals < 1:
            raise ValueError("geo_scale must be > 0 and talk_reversals >= 1")
        for name in ("blink_iod", "talk_iod"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"{name} must be > 0 or None, got {v!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FusedConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown fused settings: {sorted(unknown)}")
        return cls(**d)


def blink_slots(geom: np.ndarray, closure_iod: float) -> np.ndarray:
    """(..., T, G) geometry -> (..., T) bool: both eyes' upper lids sit closer to their lower
    lids than in the neutral shape by more than ``closure_iod``."""
    closure = geom[..., _UPPER_LIDS] - geom[..., _LOWER_LIDS]  # (..., T, 2) down = positive
    return np.min(closure, axis=-1) > closure_iod


def lip_gap_reversals(geom: np.ndarray, step_iod: float) -> np.ndarray:
    """(..., T, G) geometry -> (...,) reversals of the lip gap (lower minus upper lip height)
    within each window. A zig-zag filter: a reversal counts once the gap has moved back by
    more than ``step_iod`` from its last extreme, so jitter smaller than a step never counts,
    and the first move of a window is not a reversal."""
    gap = geom[..., _LOWER_LIP] - geom[..., _UPPER_LIP]  # (..., T)
    flat = gap.reshape(-1, gap.shape[-1])
    out = np.array([_zigzag_reversals(row, step_iod) for row in flat], np.int64)
    return out.reshape(gap.shape[:-1])


def _zigzag_reversals(values: np.ndarray, step: float) -> int:
    direction, reversals = 0, 0
    hi = lo = float(values[0])
    for x in map(float, values[1:]):
        if direction == 0:
            hi, lo = max(hi, x), min(lo, x)
            if x - lo > step:
                direction, hi = 1, x
            elif hi - x > step:
                direction, lo = -1, x
        elif direction > 0:
            if x > hi:
                hi = x
            elif hi - x > step:
                direction, lo, reversals = -1, x, reversals + 1
        elif x < lo:
            lo = x
        elif x - lo > step:
            direction, hi, reversals = 1, x, reversals + 1
    return reversals


def fuse(probs: np.ndarray, geom: np.ndarray, cfg: FusedConfig) -> np.ndarray:
    """The network's window probabilities (B, T, 3) and the same slots' geometry (B, T, G) ->
    fused probabilities (B, T, 3) float32 (see the module docstring)."""
    p = np.asarray(probs, np.float64)
    g = np.asarray(geom, np.float64)
    e_net = np.clip(p[..., 1] + p[..., 2], 0.0, 1.0)
    e_geo = 1.0 / (1.0 + np.exp(-(g[..., Z_ALL] - cfg.geo_k) / cfg.geo_scale))
    w = cfg.net_weight
    if cfg.rule == "geometric":
        e = np.power(e_net, w) * np.power(e_geo, 1.0 - w)
    else:
        e = w * e_net + (1.0 - w) * e_geo
    me_share = p[..., 1] / np.maximum(e_net, 1e-12)
    me_share = np.where(e_net > 1e-12, me_share, 0.5)
    me = e * me_share
    mae = e - me
    if cfg.blink_iod is not None:
        me = np.where(blink_slots(g, cfg.blink_iod), 0.0, me)
    if cfg.talk_iod is not None:
        speech = lip_gap_reversals(g, cfg.talk_iod) >= cfg.talk_reversals  # (B,)
        keep = np.where(speech, 1.0 - cfg.talk_suppress, 1.0)[..., None]
        me, mae = me * keep, mae * keep
    out = np.stack([1.0 - me - mae, me, mae], axis=-1)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


class FusedBackend:
    """The fused spotter as a backend over the network's backend (module docstring)."""

    name = "fused"

    def __init__(self, net: Any, cfg: FusedConfig | None = None) -> None:
        if getattr(net, "geometry", None) is None:
            raise ValueError("the fused spotter needs a network that reads the geometry channel")
        self.net = net
        self.cfg = cfg or FusedConfig()
        self.geometry: GeometryConfig = net.geometry

    def encode(self, frames_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.net.encode(frames_u8)

    def window(
        self, x_prime: np.ndarray, x_atten: np.ndarray, geom: np.ndarray | None = None
    ) -> np.ndarray:
        if geom is None:
            raise ValueError("the fused spotter scores the geometry channel: geom is required")
        return self.post_window(self.net.window(x_prime, x_atten, geom), geom)

    def post_window(self, probs: np.ndarray, geom: np.ndarray | None) -> np.ndarray:
        """The network's window probabilities -> the fused ones (``model.backends.split_post``:
        the model tier computes the network's part, the stream applies this)."""
        if geom is None:
            raise ValueError("the fused spotter scores the geometry channel: geom is required")
        return fuse(probs, geom, self.cfg)
