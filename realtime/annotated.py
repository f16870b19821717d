"""``fesnet-spot run --video-out``: an annotated copy of the video, written by an observer of the
spotter (every consumed frame with its tracking state, its aligned crop and the expression open at
the time)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .observers import Observer
from .outputs import OutputError, check_writable
from .tracking import TrackResult
from .types import Frame


class AnnotatedVideo(Observer):
    """Writes each processed frame with its tracking state, its aligned crop and the expression
    currently open (an observer of the spotter; ``on_event`` is its event sink). A video that
    cannot be written is reported once to ``on_error`` (raised without one) and not retried."""

    def __init__(
        self, path: Path, fps: float, on_error: Callable[[OutputError], None] | None = None
    ) -> None:
        self.path, self.fps = path, fps
        self.on_error = on_error
        self._writer: Any = None
        self.active: str | None = None
        self.failed = False

    def on_event(self, event: Any) -> None:
        if event.type == "expression":
            self.active = event.label if event.state == "onset" else None

    def on_frame(self, frame: Frame, track: TrackResult) -> None:
        import cv2

        if self.failed:
            return
        img = frame.image.copy()
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = img.shape[:2]
            self._writer = cv2.VideoWriter(
                str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h)
            )
            if not self._writer.isOpened():
                self.failed = True
                error = OutputError(f"cannot write the annotated video {self.path}")
                if self.on_error is None:
                    raise error
                self.on_error(error)
                return
        cv2.putText(img, f"{frame.pts_s:6.2f}s  {track.state}", (10, 24),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
        if self.active:
            cv2.putText(img, self.active, (10, 56), cv2.FONT_HERSHEY_SIMPLEX, 1.0,
                        (0, 165, 255) if self.active == "ME" else (255, 128, 0), 3)
        if track.crop is not None:
            crop = track.crop[:, :, ::-1]
            ch, cw = crop.shape[:2]
            if img.shape[0] >= ch and img.shape[1] >= cw:
                img[-ch:, -cw:] = crop
        self._writer.write(img)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()

    @staticmethod
    def check(path: Path) -> None:
        """OutputError unless a video can be written at ``path`` (folder writable, and the
        container the extension names can take an mp4v stream). Leaves nothing behind."""
        import cv2

        check_writable(path, "annotated video")
        existed = path.exists()
        probe = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (64, 64))
        ok = probe.isOpened()
        probe.release()
        if not existed:
            path.unlink(missing_ok=True)
        if not ok:
            raise OutputError(
                f"cannot write the annotated video {path}: OpenCV cannot write an mp4v video "
                f"to a {path.suffix or 'file without an extension'} (use .mp4)"
            )
