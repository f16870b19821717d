"""The neutral-baseline phase at the start of a live session.

For the first ``duration_s`` seconds *with a face* the person is asked to keep a neutral face.
:class:`CalibrationPhase` is a :class:`~fesnet.realtime.spotter.Phase` composed onto any
:class:`~fesnet.realtime.spotter.Spotter` (:func:`attach_calibration`): the spotter runs as usual
meanwhile, with all its settings, but the phase holds back its expressions and records every
scored window (an observer). When enough resting slots are scored it ends the spotter's segment,
fuses the recorded windows exactly as the merger does (``merge_offline``: the committed fused
scores), turns their statistics into a :class:`~fesnet.calibration.profile.NeutralProfile`,
switches the spotter's merger to the thresholds the profile implies, and spotting starts on a
fresh timeline.

What holds:

- Only slots that carry an aligned face are scored (the tracker feeds nothing else), and the
  phase needs ``duration_s`` seconds of *scored* slots, so it never calibrates on nothing. With
  no face for ``timeout_s`` source seconds it fails: a ``status`` event with
  ``state="calibration_failed"``, then :class:`CalibrationError` from the next frame (the
  pipeline stops with it). A stream that ends before the phase is done fails the same way.
- The phase is skippable (``skip()``, thread-safe; e.g. a viewer's button): spotting continues
  with the base thresholds and ``state="calibration_skipped"``.
- Viewers see the phase as ``status`` events (``state`` "calibrating", "calibrated",
  "calibration_skipped", "calibration_failed"; the thresholds and resting quantiles in extra
  keys) and can poll :meth:`CalibrationPhase.state`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fesnet.model.merger import MergerConfig, merge_offline
from fesnet.realtime.observers import Observer
from fesnet.realtime.spotter import Spotter
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


class CalibrationPhase:
    """The neutral-baseline phase (module docstring), composed onto a spotter with
    :func:`attach_calibration`. Its hooks run on the spotter's infer thread; ``skip`` and
    ``state`` are safe from any thread."""

    def __init__(
        self,
        spotter: Spotter,
        baseline: BaselineConfig | None = None,
        profile_name: str = "session",
        on_profile: Callable[[NeutralProfile], Any] | None = None,
        source_name: str = "",
    ) -> None:
        self.baseline = baseline or BaselineConfig()
        self.base_cfg = spotter.merger_config
        self.fps = spotter.fps
        self.profile_name = profile_name
        self.on_profile = on_profile
        self.source_name = source_name
        self.phase = "calibrating"
        self.profile: NeutralProfile | None = None
        self.recorder = spotter.add_observer(_WindowRecorder(spotter.window_frames))
        self._t0: float | None = None
        self._skip = threading.Event()
        self._failure: CalibrationError | None = None
        self._need_slots = int(np.ceil(self.baseline.duration_s * self.fps))
        self._scored_slots = 0  # the recorder's count, handed over by the infer thread
        self._lock = threading.Lock()

    # -- control --------------------------------------------------------------------------------
    def skip(self) -> None:
        """Skip the phase (thread-safe): spotting goes on with the base thresholds."""
        self._skip.set()

    @property
    def running(self) -> bool:
        return self.phase == "calibrating"

    def state(self) -> dict[str, Any]:
        """What a viewer shows: phase, progress in [0, 1], the profile's thresholds when done.
        Reads only what the infer thread handed over under the lock, never the recorder (which
        that thread writes without one)."""
        with self._lock:
            out: dict[str, Any] = {
                "phase": self.phase,
                "progress": min(self._scored_slots / self._need_slots, 1.0),
                "profile": self.profile_name,
            }
            if self.profile is not None:
                cfg = self.profile.apply(self.base_cfg)
                out["on_threshold"] = cfg.on_threshold
                out["off_threshold"] = cfg.off_threshold
            return out

    # -- Phase hooks ---------------------------------------------------------------------------
    def before(self, spotter: Spotter, frame: Frame) -> list[SpotEvent]:
        if self._failure is not None:
            raise self._failure
        if not self.running:
            return []
        events: list[SpotEvent] = []
        if self._t0 is None:
            self._t0 = frame.pts_s
            message = f"calibrating: keep a neutral face for {self.baseline.duration_s:g} s"
            events.append(spotter.status_event(message, frame, state="calibrating"))
        if self._skip.is_set():
            events += _no_expressions(spotter.end_segment())
            self.recorder.stop()
            self._set_phase("skipped")
            message = "calibration skipped: base thresholds"
            events.append(spotter.status_event(message, frame, state="calibration_skipped"))
        return events

    def after(self, spotter: Spotter, frame: Frame, events: list[SpotEvent]) -> list[SpotEvent]:
        if not self.running:
            return events
        events = _no_expressions(events)  # the person was asked to rest
        assert self._t0 is not None
        scored = self.recorder.scored_slots
        with self._lock:
            self._scored_slots = scored
        if scored >= self._need_slots:
            events += self._complete(spotter, frame)
        elif frame.pts_s - self._t0 >= self.baseline.timeout_s:
            have = self.recorder.scored_slots / self.fps
            message = (
                f"calibration failed: only {have:.1f} s of face in {self.baseline.timeout_s:g} s "
                f"(needs {self.baseline.duration_s:g} s of a neutral face in view); nothing was "
                "calibrated"
            )
            self._set_phase("failed")
            self._failure = CalibrationError(message)
            events.append(spotter.status_event(message, frame, state="calibration_failed"))
        return events

    def at_end(
        self, spotter: Spotter, events: list[SpotEvent], interrupted: bool
    ) -> list[SpotEvent]:
        if self._failure is not None and not interrupted:
            raise self._failure
        if not self.running:
            return events
        if interrupted:
            return _no_expressions(events)
        have = self.recorder.scored_slots / self.fps
        raise CalibrationError(
            f"the stream ended during calibration after {have:.1f} s of face "
            f"(needs {self.baseline.duration_s:g} s); nothing was calibrated"
        )

    # -- phase changes ------------------------------------------------------------------------
    def _complete(self, spotter: Spotter, frame: Frame) -> list[SpotEvent]:
        events = _no_expressions(spotter.end_segment())  # tail windows are still recorded
        windows = self.recorder.stop()
        profile = profile_from_windows(
            windows, self.base_cfg, self.profile_name, self.baseline.rule, self.source_name
        )
        cfg = profile.apply(self.base_cfg)
        spotter.use_merger_config(cfg)
        with self._lock:
            self.profile = profile
        self._set_phase("calibrated")
        stats = profile.stats
        message = (
            f"calibrated on {stats.n_slots / self.fps:.1f} s of resting face: thresholds "
            f"on {cfg.on_threshold:.3f} / off {cfg.off_threshold:.3f} (base "
            f"{self.base_cfg.on_threshold:.3f} / {self.base_cfg.off_threshold:.3f})"
        )
        logger.info("stream %s: %s", spotter.stream, message)
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
        events.append(spotter.status_event(message, frame, state="calibrated", extra=extra))
        return events

    def _set_phase(self, phase: str) -> None:
        with self._lock:
            self.phase = phase


class _WindowRecorder(Observer):
    """Every window scored during the phase, per segment: what the profile is computed from."""

    def __init__(self, window_frames: int) -> None:
        self.window_frames = window_frames
        self._windows: dict[int, list[tuple[int, np.ndarray]]] = {}
        self._covered: dict[int, int] = {}
        self._recording = True

    @property
    def scored_slots(self) -> int:
        return sum(self._covered.values())

    def on_window(self, segment: int, start_slot: int, probs: np.ndarray) -> None:
        if self._recording:
            self._windows.setdefault(segment, []).append((int(start_slot), probs.copy()))
            self._covered[segment] = int(start_slot) + self.window_frames

    def stop(self) -> list[list[tuple[int, np.ndarray]]]:
        """Stop recording; the windows recorded, per segment in order."""
        self._recording = False
        windows = [self._windows[k] for k in sorted(self._windows)]
        self._windows.clear()
        return windows


def _no_expressions(events: list[SpotEvent]) -> list[SpotEvent]:
    """Expressions during the resting phase are not reported (the person was asked to rest)."""
    return [e for e in events if e.type != "expression"]


def attach_calibration(
    spotter: Spotter,
    baseline: BaselineConfig | None = None,
    profile_name: str = "session",
    on_profile: Callable[[NeutralProfile], Any] | None = None,
    source_name: str = "",
) -> CalibrationPhase:
    """Start ``spotter``'s session with a neutral-baseline phase (before its first frame). The
    spotter is not rebuilt: every setting it has (shedding, gaps, observers) stays in force."""
    phase = CalibrationPhase(spotter, baseline, profile_name, on_profile, source_name)
    spotter.start_phase(phase)
    return phase


def calibration_phase(
    baseline: BaselineConfig | None = None,
    profile_name: str = "session",
    on_profile: Callable[[NeutralProfile], Any] | None = None,
    source_name: str = "",
) -> Callable[[Spotter], CalibrationPhase]:
    """A stream that starts with a neutral-baseline phase: the phase factory
    ``fesnet.realtime.session.open_stream(phase=...)`` takes."""

    def make(spotter: Spotter) -> CalibrationPhase:
        return CalibrationPhase(spotter, baseline, profile_name, on_profile, source_name)

    return make


def session_phase(baseline: BaselineConfig) -> Callable[[Spotter, str], CalibrationPhase]:
    """A phase factory for the viewers' hub (``HubConfig.camera_phase``): each camera session
    calibrates, its profile named after the session."""

    def make(spotter: Spotter, session_id: str) -> CalibrationPhase:
        return CalibrationPhase(spotter, baseline, session_id)

    return make
