"""Observers: what viewers, plots and recorders see of a spotter, without reaching into it.

An :class:`Observer` is attached with ``Spotter.add_observer`` and called on the spotter's infer
thread: after every consumed frame with its real tracking result, for every scored window, for
every run of committed fused scores, and whenever the merger thresholds in force change. An
observer must return quickly and must not call back into the spotter; one that is read from
other threads (a viewer) guards its own state.

- :class:`ScoreLog`: committed per-slot scores of a whole run (plots, offline comparison);
- :class:`LiveView`: the thread-safe state a viewer polls (face state, newest crop, newest
  frame with the tracked face's box, recent scores, the thresholds in force).
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field

import numpy as np

from fesnet.model.merger import MergerConfig

from .tracking import NO_FACE, TrackResult
from .types import Frame


class Observer:
    """Base with no-op hooks: override the ones you need."""

    def on_frame(self, frame: Frame, tracked: TrackResult) -> None:
        """A source frame was consumed; ``tracked`` is its tracking result."""

    def on_window(self, segment: int, start_slot: int, probs: np.ndarray) -> None:
        """A window of segment ``segment`` was scored: ``probs`` (T, 3), a view: copy to keep."""

    def on_committed(
        self, pts_s: np.ndarray, source_index: np.ndarray, scores: np.ndarray
    ) -> None:
        """Slots were committed: their source times, source frames and fused (K, 3) scores."""

    def on_merger_config(self, cfg: MergerConfig) -> None:
        """The merger settings in force (when attached, and whenever they change)."""


@dataclass
class ScoreLog(Observer):
    """Committed per-slot fused scores of a whole run (for plots and offline comparison), and
    the merger settings in force at its end."""

    pts_s: list[np.ndarray] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)
    source_index: list[np.ndarray] = field(default_factory=list)
    merger: MergerConfig | None = None

    def on_merger_config(self, cfg: MergerConfig) -> None:
        self.merger = cfg

    def on_committed(
        self, pts_s: np.ndarray, source_index: np.ndarray, scores: np.ndarray
    ) -> None:
        self.pts_s.append(pts_s)
        self.scores.append(scores.copy())
        self.source_index.append(source_index)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.scores:
            return np.zeros(0), np.zeros((0, 3), np.float32), np.zeros(0, np.int64)
        return (
            np.concatenate(self.pts_s),
            np.concatenate(self.scores),
            np.concatenate(self.source_index),
        )


@dataclass(frozen=True)
class ViewState:
    """A copy of what a viewer shows of one stream (safe to keep across threads)."""

    state: str
    n_faces: int
    latest_crop: np.ndarray | None
    recent_pts_s: np.ndarray
    recent_me: np.ndarray
    recent_mae: np.ndarray
    on_threshold: float | None
    off_threshold: float | None

    @property
    def recent_p_expr(self) -> np.ndarray:
        """p_ME + p_MaE: what the merger compares with its thresholds."""
        return self.recent_me + self.recent_mae


@dataclass(frozen=True)
class FrameView:
    """The newest consumed frame of a stream and its tracked face (arrays are the source's and
    the tracker's own: neither writes one it handed on)."""

    seq: int
    """How many frames the stream has consumed: a new number, a new picture."""
    image: np.ndarray
    """(H, W, 3) BGR."""
    landmarks: np.ndarray | None
    """The tracked face in frame pixels (468, 2); None: no face in this frame."""

    @property
    def box(self) -> tuple[float, float, float, float] | None:
        """The face's landmark box (x0, y0, x1, y1) in fractions of the frame (computed when a
        viewer asks, not for every frame)."""
        if self.landmarks is None:
            return None
        h, w = self.image.shape[:2]
        (x0, y0), (x1, y1) = self.landmarks.min(axis=0), self.landmarks.max(axis=0)
        return (
            min(max(float(x0) / w, 0.0), 1.0),
            min(max(float(y0) / h, 0.0), 1.0),
            min(max(float(x1) / w, 0.0), 1.0),
            min(max(float(y1) / h, 0.0), 1.0),
        )


class LiveView(Observer):
    """The viewer's side of a stream: thread-safe, bounded (``recent_slots`` committed slots)."""

    def __init__(self, recent_slots: int = 600) -> None:
        self._lock = threading.Lock()
        self._recent: collections.deque[tuple[float, float, float]] = collections.deque(
            maxlen=recent_slots
        )
        self._state = NO_FACE
        self._n_faces = 0
        self._crop: np.ndarray | None = None
        self._seq = 0
        self._newest: tuple[np.ndarray, np.ndarray | None] | None = None
        self._thresholds: tuple[float, float] | None = None

    def on_frame(self, frame: Frame, tracked: TrackResult) -> None:
        with self._lock:
            self._state, self._n_faces = tracked.state, tracked.n_faces
            if tracked.crop is not None:
                self._crop = tracked.crop
            self._seq += 1
            self._newest = (frame.image, tracked.landmarks)

    def frame(self) -> FrameView | None:
        """The newest consumed frame with its face box (None before the first)."""
        with self._lock:
            if self._newest is None:
                return None
            return FrameView(self._seq, *self._newest)

    def on_committed(
        self, pts_s: np.ndarray, source_index: np.ndarray, scores: np.ndarray
    ) -> None:
        rows = zip(pts_s.tolist(), scores[:, 1].tolist(), scores[:, 2].tolist(), strict=True)
        with self._lock:
            self._recent.extend(rows)

    def on_merger_config(self, cfg: MergerConfig) -> None:
        with self._lock:
            self._thresholds = (cfg.on_threshold, cfg.off_threshold)

    def view(self) -> ViewState:
        with self._lock:
            recent = np.array(self._recent, np.float64).reshape(-1, 3)
            crop = None if self._crop is None else self._crop.copy()
            on, off = self._thresholds if self._thresholds is not None else (None, None)
            state, n_faces = self._state, self._n_faces
        return ViewState(state, n_faces, crop, recent[:, 0], recent[:, 1], recent[:, 2], on, off)
