"""The settings the live benchmarks compare: the spotter before issue 16 and now.

A profile names an aligner (config.py's ``ALIGN_MODES``), a window stride and merger settings
(None: the checkpoint's). ``before`` is the spotter as issue 16 found it: the aligner of then,
stride 8, and the shipped checkpoint's merger of then (the settings issue 16 changed are
spelled out here, so the old path stays measurable after the checkpoint moved on). ``now`` is
what ``fesnet-spot`` runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Profile:
    name: str
    align: str
    stride_frames: int | None = None
    """None: the checkpoint's (what the runtime loader picks)."""
    merger: dict[str, Any] = field(default_factory=dict)
    """MergerConfig fields that differ from the checkpoint's."""


BEFORE_MERGER = {
    "commit_lag_frames": 12,
    "right_margin_frames": 4,
    "fusion": "mean",
    "on_threshold": 0.98,
    "off_threshold": 0.588,
    "min_expression_frames": 6,
    "gap_merge_s": 0.1,
    "mae_gap_merge_s": 0.1,
    "me_max_s": 0.5,
    "mae_min_s": 0.5,
    "max_expression_s": 5.0,
}
"""The shipped checkpoint's merger before issue 16 (what ``--merger-config`` takes, with
``--stride 8``, to spot as then)."""

PROFILES = {
    "before": Profile("before", "before", 8, BEFORE_MERGER),
    "now": Profile("now", "periodic"),
}


def hub_settings(ck: Any, profile: Profile) -> tuple[Any, int]:
    """(merger config, stride) of ``profile`` over checkpoint ``ck``."""
    from fesnet.model.runtime import merger_config, stride_of

    return replace(merger_config(ck), **profile.merger), stride_of(ck, profile.stride_frames)
