"""A frozen camera: one named rule of stream health beside the spotter.

A hung camera driver keeps handing out its last buffer: the frames keep coming, with fresh
timestamps, and every one is the identical image. :class:`FrozenCamera` says so once the same
image has lasted ``frozen_after_s`` of source time, and once more when the image changes again.
The frames are still spotted (a face that holds perfectly still is not an error); the messages
become ``status`` events.
"""

from __future__ import annotations

import numpy as np

from .types import Frame


class FrozenCamera:
    """Watches one stream's images. Not thread-safe: the spotter's infer thread owns it."""

    def __init__(self, frozen_after_s: float) -> None:
        self.frozen_after_s = frozen_after_s
        self.times_frozen = 0
        self._same: tuple[np.ndarray, float] | None = None  # (image, pts it was first seen at)
        self._frozen = False

    def check(self, frame: Frame) -> str | None:
        """A message when the camera froze or moves again with ``frame``; None otherwise."""
        image, same = frame.image, self._same
        if same is not None and same[0].shape == image.shape and np.array_equal(same[0], image):
            held_s = frame.pts_s - same[1]
            if not self._frozen and held_s >= self.frozen_after_s:
                self._frozen = True
                self.times_frozen += 1
                return f"camera frozen: the same image for {held_s:.1f} s"
            return None
        self._same = (image, frame.pts_s)
        if self._frozen:
            self._frozen = False
            return "camera image changing again"
        return None
