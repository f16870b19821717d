"""The input stage most published expression spotters use: dense optical flow on aligned faces.

SoftNet-style spotters (and MEAN, LGSNet, ...) do not look at pixels. For every frame i they compute
dense optical flow between frame i and frame i + k (k about half an expression's length), add the
optical strain (magnitude of the flow's symmetric gradient) as a third channel, and feed the
(u, v, strain) maps to a small CNN. The flow, TV-L1 in most papers, is by far their most expensive
step. This module is that stage, so ``fesnet-bench`` can put its frames/s next to ours in the same
run; the CNN that would follow it is not included, so the baseline's measured speed is an upper
bound for such a pipeline.

Flow runs on grayscale aligned crops (the same 112x112 crops FESNet sees). OpenCV settings are the
ones these papers' code uses: ``cv2.optflow.DualTVL1OpticalFlow_create()`` defaults (opencv-contrib,
installed with mediapipe) and Farneback (0.5, 3, 15, 3, 5, 1.2).
"""

from __future__ import annotations

from typing import Any

import numpy as np

FLOW_METHODS = ("farneback", "tvl1")


class OpticalFlowBaseline:
    """Dense flow + optical strain between pairs of aligned RGB crops."""

    def __init__(self, method: str = "tvl1", threads: int | None = 1) -> None:
        import cv2

        if method not in FLOW_METHODS:
            raise ValueError(f"unknown flow method {method!r}; choose one of {FLOW_METHODS}")
        if threads is not None:
            cv2.setNumThreads(threads)
        self.method = method
        self._cv2 = cv2
        self._tvl1: Any = None
        if method == "tvl1":
            if not hasattr(cv2, "optflow"):
                raise RuntimeError("TV-L1 needs opencv-contrib (cv2.optflow), which is missing")
            self._tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()

    def gray(self, crop_rgb: np.ndarray) -> np.ndarray:
        return self._cv2.cvtColor(crop_rgb, self._cv2.COLOR_RGB2GRAY)

    def flow(self, prev_gray: np.ndarray, next_gray: np.ndarray) -> np.ndarray:
        """(H, W) uint8 pair -> (H, W, 2) float32 flow (u, v) in pixels."""
        if self.method == "farneback":
            return self._cv2.calcOpticalFlowFarneback(
                prev_gray, next_gray, None, 0.5, 3, 15, 3, 5, 1.2, 0
            )
        return self._tvl1.calc(prev_gray, next_gray, None)

    def features(self, prev_rgb: np.ndarray, next_rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) RGB crops -> (H, W, 3) float32 (u, v, optical strain): the CNN input."""
        f = self.flow(self.gray(prev_rgb), self.gray(next_rgb))
        return np.concatenate([f, optical_strain(f)[..., None]], axis=-1)


def optical_strain(flow: np.ndarray) -> np.ndarray:
    """|e| = sqrt(u_x^2 + v_y^2 + 0.5 (u_y + v_x)^2) of an (H, W, 2) flow field."""
    u, v = flow[..., 0], flow[..., 1]
    u_y, u_x = np.gradient(u)
    v_y, v_x = np.gradient(v)
    return np.sqrt(u_x**2 + v_y**2 + 0.5 * (u_y + v_x) ** 2).astype(np.float32)


def flow_sequence(
    crops_rgb: np.ndarray, baseline: OpticalFlowBaseline, k_frames: int = 1
) -> np.ndarray:
    """(N, H, W, 3) crops -> (N - k, H, W, 3) features of frame i vs frame i + k."""
    gray = [baseline.gray(c) for c in crops_rgb]
    out = []
    for i in range(len(gray) - k_frames):
        f = baseline.flow(gray[i], gray[i + k_frames])
        out.append(np.concatenate([f, optical_strain(f)[..., None]], axis=-1))
    return np.stack(out) if out else np.zeros((0, *crops_rgb.shape[1:3], 3), np.float32)
