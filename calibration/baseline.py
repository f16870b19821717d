"""The neutral-baseline phase at the start of a live session.

For the first ``duration_s`` seconds *with a face* the person is asked to keep a neutral face.
:class:`CalibratingSpotter` (a :class:`~fesnet.realtime.pipeline.Spotter`) runs the whole
pipeline as usual meanwhile, but reports no expressions; it records every scored window. When
enough resting slots are scored it ends the segment, fuses the recorded windows exactly as the
merger does (``merge_offline``: the committed fused scores), turns their statistics into a
:class:`~fesnet.calibration.profile.NeutralProfile`, switches its merger to the thresholds the
profile implies, and spotting starts on a fresh timeline.

What holds:

- Only slots that carry an aligned face are scored (the tracker feeds nothing else), and the
  phase needs ``duration_s`` seconds of *scored* slots, so it never calibrates on nothing. With
  no face for ``timeout_s`` source seconds it fails: a ``status`` event with
  ``state="calibration_failed"``, then :class:`CalibrationError` from the next ``process`` call
  (the pipeline stops with it). A stream that ends before the phase is done fails the same way.
- The phase is skippable (``skip()``, thread-safe; e.g. a viewer's button): spotting continues
  with the base thresholds and ``state="calibration_skipped"``.
- Viewers see the phase as ``status`` events (``state`` "calibrating", "calibrated",
  "calibration_skipped", "calibration_failed"; the thresholds and resting quantiles in extra
  keys) and can poll :meth:`CalibratingSpotter.calibration_state`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fesnet.model.merger import IntervalMerger, MergerConfig, merge_offline
from fesnet.realtime.engine import Engine
from fesnet.realtime.pipeline import Pipeline, Spotter
from fesnet.realtime.tracking import TrackResult
from fesnet.realtime.types import Frame, SpotEvent

from .profile import BaselineStats, NeutralProfile, ThresholdRule, now_iso

logger = logging.getLogger(__name__)


class CalibrationError(RuntimeError):
    """The neutral-baseline phase could not record a baseline (no face, stream ended)."""


@dataclass(frozen=True)
class BaselineConfig:
    """The calibration phase. Durations are on the source's own timeline (seconds)."""

    duration_s: float = 3.0
    """Resting-face time to record (scored 60 Hz slots with a face)."""
    timeout_s: float = 20.0
    """Fail if the phase is not done this long after it started (no face, face keeps leaving)."""
    rule: ThresholdRule = field(default_factory=ThresholdRule)

    def __post_init__(self) -> None:
        if not self.duration_s > 0:
            raise ValueError(f"duration_s must be > 0, got {self.duration_s}")
        if not self.timeout_s > self.duration_s:
            raise ValueError(
                f"timeout_s ({self.timeout_s}) must exceed duration_s ({self.duration_s})"
            )


def profile_from_windows(
    segments: list[list[tuple[int, np.ndarray]]],
    merger_cfg: MergerConfig,
    name: str,
    rule: ThresholdRule,
    source: str = "",
) -> NeutralProfile:
    """A profile from recorded windows: per segment, ``(start slot, (T, 3) probs)`` in order.

    Each segment is fused exactly as the streaming merger commits it; slots no window covered
    (there are none inside a segment's covered range) are not counted.
    """
    fused = []
    for windows in segments:
        if not windows:
            continue
        starts = [s for s, _ in windows]
        _, scores = merge_offline(starts, [p for _, p in windows], merger_cfg)
        fused.append(scores[starts[0] :])
    if not fused:
        raise CalibrationError("no scored resting slots: nothing to calibrate on")
    stats = BaselineStats.from_scores(np.concatenate(fused))
    return NeutralProfile(name=name, stats=stats, rule=rule, created=now_iso(), source=source)


class CalibratingSpotter(Spotter):
    """A Spotter whose session starts with a neutral-baseline phase (module docstring)."""

    def __init__(
        self,
        engine: Engine,
        merger_cfg: MergerConfig,
        stride_frames: int = 8,
        *,
        baseline: BaselineConfig | None = None,
        profile_name: str = "session",
        on_profile: Callable[[NeutralProfile], Any] | None = None,
        source_name: str = "",
        **spotter_kwargs: Any,
    ) -> None:
        super().__init__(engine, merger_cfg, stride_frames, **spotter_kwargs)
        self.baseline = baseline or BaselineConfig()
        self.base_cfg = merger_cfg
        self.profile_name = profile_name
        self.on_profile = on_profile
        self.source_name = source_name
        self.phase = "calibrating"
        self.profile: NeutralProfile | None = None
        self._windows: dict[int, list[tuple[int, np.ndarray]]] = {}
        self._covered: dict[int, int] = {}
        self._t0: float | None = None
        self._skip = threading.Event()
        self._failure: CalibrationError | None = None
        self._need_slots = int(np.ceil(self.baseline.duration_s * self.fps))

    # -- control --------------------------------------------------------------------------------
    def skip(self) -> None:
        """Skip the phase (thread-safe): spotting goes on with the base thresholds."""
        self._skip.set()

    @property
    def scored_slots(self) -> int:
        return sum(self._covered.values())

    def calibration_state(self) -> dict[str, Any]:
        """What a viewer shows: phase, progress in [0, 1], the profile's thresholds when done."""
        with self._lock:
            out: dict[str, Any] = {
                "phase": self.phase,
                "progress": min(self.scored_slots / self._need_slots, 1.0),
                "profile": self.profile_name,
            }
            if self.profile is not None:
                out["on_threshold"] = self.cfg.on_threshold
                out["off_threshold"] = self.cfg.off_threshold
            return out

    def snapshot_state(self) -> dict[str, Any]:
        state = super().snapshot_state()
        state["calibration"] = self.calibration_state()
        return state

    # -- Spotter overrides --------------------------------------------------------------------
    def consume(self, frame: Frame, tr: TrackResult) -> list[SpotEvent]:
        if self._failure is not None:
            raise self._failure
        if self.phase != "calibrating":
            return super().consume(frame, tr)
        events: list[SpotEvent] = []
        if self._t0 is None:
            self._t0 = frame.pts_s
            message = f"calibrating: keep a neutral face for {self.baseline.duration_s:g} s"
            events.append(self._phase_event(frame, "calibrating", message))
        if self._skip.is_set():
            events += self._leave_phase(frame, "calibration_skipped",
                                        "calibration skipped: base thresholds")  # fmt: skip
            return events + super().consume(frame, tr)
        events += _no_expressions(super().consume(frame, tr))
        if self.scored_slots >= self._need_slots:
            events += self._complete(frame)
        elif frame.pts_s - self._t0 >= self.baseline.timeout_s:
            have = self.scored_slots / self.fps
            message = (
                f"calibration failed: only {have:.1f} s of face in {self.baseline.timeout_s:g} s "
                f"(needs {self.baseline.duration_s:g} s of a neutral face in view); nothing was "
                "calibrated"
            )
            self._set_phase("failed")
            self._failure = CalibrationError(message)
            events.append(self._phase_event(frame, "calibration_failed", message))
        return events

    def apply(self, start_slot: int, probs: np.ndarray) -> list[SpotEvent]:
        if self.phase == "calibrating":
            self._windows.setdefault(self.segment, []).append((int(start_slot), probs.copy()))
            self._covered[self.segment] = int(start_slot) + self.window_frames
        return super().apply(start_slot, probs)

    def finish(self) -> list[SpotEvent]:
        if self._failure is not None:
            raise self._failure
        if self.phase == "calibrating":
            have = self.scored_slots / self.fps
            raise CalibrationError(
                f"the stream ended during calibration after {have:.1f} s of face "
                f"(needs {self.baseline.duration_s:g} s); nothing was calibrated"
            )
        return super().finish()

    def interrupt(self) -> list[SpotEvent]:
        events = super().interrupt()
        return _no_expressions(events) if self.phase == "calibrating" else events

    # -- phase changes ------------------------------------------------------------------------
    def _complete(self, frame: Frame) -> list[SpotEvent]:
        events = _no_expressions(self.end_segment())  # tail windows are still recorded
        segments = [self._windows[k] for k in sorted(self._windows)]
        profile = profile_from_windows(
            segments, self.base_cfg, self.profile_name, self.baseline.rule, self.source_name
        )
        cfg = profile.apply(self.base_cfg)
        with self._lock:
            self.profile = profile
            self.cfg = cfg
            self.merger = IntervalMerger(cfg)
        self._windows.clear()
        self._set_phase("calibrated")
        stats = profile.stats
        message = (
            f"calibrated on {stats.n_slots / self.fps:.1f} s of resting face: thresholds "
            f"on {cfg.on_threshold:.3f} / off {cfg.off_threshold:.3f} (base "
            f"{self.base_cfg.on_threshold:.3f} / {self.base_cfg.off_threshold:.3f})"
        )
        logger.info("stream %s: %s", self.stream, message)
        if self.on_profile is not None:
            self.on_profile(profile)
        extra = {
            "profile": profile.name,
            "on_threshold": round(cfg.on_threshold, 6),
            "off_threshold": round(cfg.off_threshold, 6),
            "rest_p_expr_median": round(stats.quantile(0.5), 6),
            "rest_p_expr_q99": round(stats.quantile(0.99), 6),
            "rest_slots": stats.n_slots,
        }
        events.append(self._phase_event(frame, "calibrated", message, extra))
        return events

    def _leave_phase(self, frame: Frame, state: str, message: str) -> list[SpotEvent]:
        events = _no_expressions(self.end_segment())
        self._windows.clear()
        self._set_phase("skipped")
        return [*events, self._phase_event(frame, state, message)]

    def _set_phase(self, phase: str) -> None:
        with self._lock:
            self.phase = phase

    def _phase_event(
        self, frame: Frame, state: str, message: str, extra: dict[str, Any] | None = None
    ) -> SpotEvent:
        return SpotEvent(
            type="status",
            stream=self.stream,
            t_s=frame.pts_s,
            state=state,  # type: ignore[arg-type]  # the status states of docs/EVENTS.md
            onset_frame=frame.index,
            message=message,
            extra=dict(extra or {}),
            t_trigger_ns=frame.t_capture_ns,
        )


def _no_expressions(events: list[SpotEvent]) -> list[SpotEvent]:
    """Expressions during the resting phase are not reported (the person was asked to rest)."""
    return [e for e in events if e.type != "expression"]


def attach_calibration(
    pipe: Pipeline,
    baseline: BaselineConfig | None = None,
    profile_name: str = "session",
    on_profile: Callable[[NeutralProfile], Any] | None = None,
) -> CalibratingSpotter:
    """Give a not-yet-started Pipeline a calibration phase (replaces its Spotter)."""
    if pipe.running or pipe._thread is not None:
        raise RuntimeError("attach the calibration phase before starting the pipeline")
    old = pipe.spotter
    spotter = CalibratingSpotter(
        pipe.engine,
        pipe.merger_cfg,
        pipe.stride_frames,
        baseline=baseline,
        profile_name=profile_name,
        on_profile=on_profile,
        source_name=pipe.source.describe(),
        stream=old.stream,
        max_gap_s=old.max_gap_s,
        record_scores=old.score_log is not None,
        stats=pipe.stats,
    )
    pipe.spotter = spotter
    return spotter
