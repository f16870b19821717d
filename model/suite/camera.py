"""The webcam: a room behind the person, exposure, mains flicker, sensor noise, H.264.

- Scene: a room drawn from the seed (wall gradient, a bright window, shelves and a door frame,
  a lamp's glow, low-frequency texture), fixed for the clip.
- Exposure: the timeline's brightness factor (light steps the auto-exposure catches up with).
- Flicker: 50 Hz mains light pulses at 100 Hz; a rolling shutter reads rows at different times,
  so it shows as faint horizontal bands drifting through the frame.
- Sensor: white balance gains, shot noise (variance proportional to the signal) and read noise,
  then 8-bit rounding.
- Encoder: H.264 (libx264 through PyAV), yuv420p, no B-frames (tune zerolatency, as a video
  call), a keyframe every 2 s, the bitrate of the clip (webcam range), one thread (the bytes are
  then a pure function of the frames).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAINS_FLICKER_HZ = 100.0


@dataclass(frozen=True)
class Sensor:
    """A clip's camera constants."""

    wb: tuple[float, float, float]  # B, G, R gains
    shot: float  # noise variance per unit of signal (8-bit units)
    read: float  # read noise std (8-bit units)
    flicker: float  # relative amplitude of the 100 Hz light
    readout: float  # rolling-shutter readout time as a fraction of the frame time


def draw_sensor(rng: np.random.Generator) -> Sensor:
    wb = tuple(float(g) for g in 1.0 + rng.uniform(-0.06, 0.06, 3))
    return Sensor(wb, float(rng.uniform(0.05, 0.25)), float(rng.uniform(1.0, 3.0)),  # type: ignore[arg-type]
                  float(rng.uniform(0.005, 0.025)), float(rng.uniform(0.5, 0.9)))


def draw_scene(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float32 BGR room behind the person."""
    import cv2

    yy = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    top = rng.uniform(90, 200, 3).astype(np.float32)
    bottom = top * rng.uniform(0.55, 0.9)
    scene = top + (bottom - top) * yy + np.zeros((height, width, 3), np.float32)
    for _ in range(int(rng.integers(2, 5))):  # shelves, a door frame, pictures
        w, h = int(rng.uniform(0.08, 0.35) * width), int(rng.uniform(0.05, 0.5) * height)
        x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        colour = tuple(float(c) for c in rng.uniform(30, 220, 3))
        cv2.rectangle(scene, (x, y), (x + w, y + h), colour, -1)
    if rng.random() < 0.7:  # a window: bright, it pulls the auto-exposure
        w, h = int(rng.uniform(0.15, 0.3) * width), int(rng.uniform(0.25, 0.45) * height)
        left = rng.random() < 0.5
        x = int(rng.integers(0, width // 5) if left
                else rng.integers(width - w - width // 5, width - w))
        y = int(rng.integers(0, height // 4))
        cv2.rectangle(scene, (x, y), (x + w, y + h), (235.0, 240.0, 245.0), -1)
    gx, gy = rng.uniform(0, width), rng.uniform(0, height * 0.5)  # a lamp's glow
    xx = np.arange(width, dtype=np.float32)[None, :]
    glow = np.exp(-(((xx - gx) ** 2 + (yy[:, :, 0] * height - gy) ** 2) / (0.15 * width) ** 2))
    scene += (40 * glow)[:, :, None]
    texture = rng.standard_normal((height // 16 + 1, width // 16 + 1)).astype(np.float32)
    texture = cv2.resize(texture, (width, height), interpolation=cv2.INTER_CUBIC)
    scene += 6 * texture[:, :, None]
    return cv2.GaussianBlur(scene, (0, 0), 1.2)


def expose(frame: np.ndarray, brightness: float, t_s: float, fps: int, sensor: Sensor,
           noise_seed: int) -> np.ndarray:
    """A rendered float32 BGR frame -> the 8-bit image the sensor reads out. The noise comes
    from OpenCV's generator seeded with ``noise_seed`` (four times faster than numpy's here)."""
    import cv2

    h = frame.shape[0]
    rows = t_s + sensor.readout / fps * np.arange(h, dtype=np.float64) / h
    band = brightness * (1.0 + sensor.flicker * np.sin(2 * np.pi * MAINS_FLICKER_HZ * rows))
    gain = band.astype(np.float32)[:, None, None] * np.asarray(sensor.wb, np.float32)
    signal = np.multiply(frame, gain, out=frame)
    np.clip(signal, 0, 255, out=signal)
    sigma = cv2.sqrt(cv2.add(cv2.multiply(signal, sensor.shot), sensor.read**2))
    noise = np.empty_like(signal)
    cv2.setRNGSeed(int(noise_seed) & 0x7FFFFFFF)
    cv2.randn(noise, 0.0, 1.0)
    noisy = cv2.add(signal, cv2.multiply(sigma, noise))
    return cv2.convertScaleAbs(noisy)


class H264Writer:
    """Frames (BGR uint8) -> an .mp4 of H.264 at a fixed frame rate and bitrate."""

    def __init__(self, path: Path, width: int, height: int, fps: int, kbps: int) -> None:
        import av

        self._out = av.open(str(path), "w", format="mp4")
        stream = self._out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = kbps * 1000
        stream.options = {"preset": "veryfast", "tune": "zerolatency", "g": str(2 * fps),
                          "maxrate": f"{kbps}k", "bufsize": f"{2 * kbps}k"}
        stream.codec_context.thread_count = 1
        self._stream = stream

    def write(self, bgr: np.ndarray) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(bgr, format="bgr24")
        for packet in self._stream.encode(frame):
            self._out.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode():
            self._out.mux(packet)
        self._out.close()
