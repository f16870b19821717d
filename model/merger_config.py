"""The interval merger's settings (:class:`MergerConfig`), their validation and their JSON form.

Every setting the merger (merger.py) decides with; calibration fits them and saves them as JSON.
``fesnet.model.merger`` re-exports these names, so callers import them from either module.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

Fusion = Literal["mean", "max", "latest"]
FUSIONS: tuple[str, ...] = ("mean", "max", "latest")
_EPS = 1e-9  # guards seconds -> frames conversions against float error (0.5 * 60 = 30 exactly)


class ConfigError(ValueError):
    """A merger config has an unknown key, a value of the wrong type, or an invalid value."""


@dataclass(frozen=True)
class MergerConfig:
    """Every setting of the interval merger. Calibration fits these and saves them as JSON.

    Seconds are converted to frames at ``fps`` by the ``*_frames`` properties; an interval of
    ``n`` inclusive frames lasts ``n / fps`` seconds.
    """

    fps: float = 60.0
    """Rate of the slot timeline (the model's 60 Hz)."""
    window_frames: int = 32
    """Length T of every window passed to ``update``; ``probs`` must be ``(T, 3)``."""
    fusion: Fusion = "mean"
    """How the scores one slot gets from different overlapping windows (each with its own
    reference frame) are fused: "mean" averages the probability vectors; "max" keeps the whole
    vector of the window that saw the most expression (largest p_ME + p_MaE; the earliest window
    wins a tie), so the result is still a distribution; "latest" keeps the vector of the newest
    window, the one that saw the most frames after the slot."""
    right_margin_frames: int = 4
    """A window's last k positions see MTAM's zero padding, so their scores are used for a slot
    only if no window scored it from a reliable position (in practice: the stream's last slots
    at ``flush``, or slots next to a gap in window starts)."""
    commit_lag_frames: int = 12
    """A slot is committed once it is this many slots behind the newest slot seen. Must be at
    least ``right_margin_frames`` (then the newest window always scores a committed slot from a
    reliable position). The default 12 = right margin 4 + the default stride 8: with stride 8
    every committed slot then fuses reliable scores from at least two windows. Smaller is
    lower latency, larger fuses more windows; the latency it costs is measurable as
    ``MergerEvent.emitted_at_slot - offset_slot``."""
    on_threshold: float = 0.5
    """An interval opens when the committed p_expr = p_ME + p_MaE reaches this (expression more
    likely than neutral)."""
    off_threshold: float = 0.3
    """An open interval continues while p_expr stays at or above this (hysteresis: a noisy score
    around ``on_threshold`` does not flicker)."""
    min_expression_frames: int = 6
    """Intervals shorter than this (0.1 s at 60 Hz, below the shortest labelled expressions) are
    cancelled: their provisional onset is withdrawn with a "cancelled" event."""
    me_max_s: float = 0.5
    """An interval labelled ME that lasts longer than this is relabelled MaE (ME <= 0.5 s)."""
    mae_min_s: float = 0.5
    """An interval labelled MaE that lasts less than this is relabelled ME. With both 0.5 s at
    60 Hz: <= 29 frames is ME, >= 31 frames is MaE, exactly 30 frames keeps its score label."""
    gap_merge_s: float = 0.1
    """A dip (p_expr below ``off_threshold`` until it is back at ``on_threshold``) shorter than
    this inside an expression does not split it; the dip becomes part of the interval."""
    mae_gap_merge_s: float = 0.1
    """The gap merging of an interval that has already lasted ``mae_min_s`` (a macro-expression
    under way): its score can sag in the middle (a long expression differs less from a window's
    first frame than its onset does), so a longer dip may be bridged. At ``gap_merge_s`` (the
    default) nothing changes."""
    max_expression_s: float = 5.0
    """Longer intervals are force-closed; a new one can open only after p_expr has dropped below
    ``off_threshold`` (a stuck score yields one interval, not a train of them)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            default = f.default
            if isinstance(default, bool) or isinstance(value, bool):
                raise ConfigError(f"{f.name}: booleans are not valid values, got {value!r}")
            if isinstance(default, int):
                if not isinstance(value, int):
                    raise ConfigError(f"{f.name} must be an int, got {value!r}")
            elif isinstance(default, float):
                if not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise ConfigError(f"{f.name} must be a finite number, got {value!r}")
                object.__setattr__(self, f.name, float(value))
        checks = [
            (self.fps > 0, f"fps must be > 0, got {self.fps}"),
            (self.window_frames >= 1, f"window_frames must be >= 1, got {self.window_frames}"),
            (self.fusion in FUSIONS, f"fusion must be one of {FUSIONS}, got {self.fusion!r}"),
            (
                0 <= self.right_margin_frames < self.window_frames,
                "right_margin_frames must be in [0, window_frames), "
                f"got {self.right_margin_frames} with window_frames={self.window_frames}",
            ),
            (
                self.commit_lag_frames >= self.right_margin_frames,
                f"commit_lag_frames ({self.commit_lag_frames}) must be >= right_margin_frames "
                f"({self.right_margin_frames})",
            ),
            (
                0 < self.off_threshold <= self.on_threshold < 1,
                "need 0 < off_threshold <= on_threshold < 1, "
                f"got off={self.off_threshold}, on={self.on_threshold}",
            ),
            (
                self.min_expression_frames >= 1,
                f"min_expression_frames must be >= 1, got {self.min_expression_frames}",
            ),
            (self.me_max_s > 0, f"me_max_s must be > 0, got {self.me_max_s}"),
            (
                0 <= self.mae_min_s <= self.me_max_s,
                "need 0 <= mae_min_s <= me_max_s (otherwise the duration rules swap labels "
                f"in between), got mae_min_s={self.mae_min_s}, me_max_s={self.me_max_s}",
            ),
            (self.gap_merge_s >= 0, f"gap_merge_s must be >= 0, got {self.gap_merge_s}"),
            (
                self.mae_gap_merge_s >= self.gap_merge_s,
                f"mae_gap_merge_s ({self.mae_gap_merge_s}) must be >= gap_merge_s "
                f"({self.gap_merge_s})",
            ),
            (
                self.max_expression_frames >= max(self.min_expression_frames, 1),
                f"max_expression_s ({self.max_expression_s}) must allow at least "
                f"min_expression_frames ({self.min_expression_frames}) frames",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def me_max_frames(self) -> int:
        """Longest interval (frames) that may stay ME."""
        return math.floor(self.me_max_s * self.fps + _EPS)

    @property
    def mae_min_frames(self) -> int:
        """Shortest interval (frames) that may stay MaE."""
        return math.ceil(self.mae_min_s * self.fps - _EPS)

    @property
    def gap_merge_frames(self) -> int:
        """A dip of this many slots or more splits an expression."""
        return math.ceil(self.gap_merge_s * self.fps - _EPS)

    @property
    def mae_gap_merge_frames(self) -> int:
        """A dip of this many slots or more splits an interval that has lasted ``mae_min_s``."""
        return math.ceil(self.mae_gap_merge_s * self.fps - _EPS)

    @property
    def max_expression_frames(self) -> int:
        """Longest interval (frames) before a forced close."""
        return math.floor(self.max_expression_s * self.fps + _EPS)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MergerConfig:
        """Missing keys take their defaults; unknown keys are a ``ConfigError`` (a typo in a
        calibrated file must not silently fall back to a default)."""
        if not isinstance(data, dict):
            raise ConfigError(f"merger config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown merger config keys {unknown}; known: {sorted(known)}")
        return cls(**data)

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> MergerConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"cannot read merger config {path}: {e}") from e
        return cls.from_dict(data)
