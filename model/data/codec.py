"""The video codec between a webcam and the spotter: H.264 at a webcam's bitrate.

A webcam's frames reach the spotter compressed: a video call (WebRTC) sends H.264 or VP8 at a
few hundred kbit/s, and a recorded clip is H.264. Unlike a JPEG of each frame, such a codec
predicts each frame from the one before: small motions can vanish into the prediction, texture
blurs and sharpens again with every keyframe, and blocks flicker when the bitrate runs short.
On 12 validation videos of the synthetic set that alone took the shipped network (trained on
a JPEG of each frame, never on a codec) from 51.0 to 32.5 overall F1 and doubled its false
events (``scripts/codec_effect.py``; README, "Model card"); so the synthetic set draws it as
part of the camera (``SyntheticSpec.codec``; the ``v4`` set of webcam_set.py).

:class:`H264Roundtrip` encodes one frame and decodes it at once, as a receiver of a live call
does: libx264 (through PyAV) with ``tune=zerolatency`` (no B-frames, no lookahead: one frame
in, one frame out), a keyframe every ``keyframe_frames`` frames, a rate cap at the target
bitrate, one thread (the bytes are then a pure function of the frames).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

Range = tuple[float, float]


@dataclass(frozen=True)
class CodecSpec:
    """What a video's codec may be; each video draws its own settings (:func:`draw_codec`)."""

    bits_per_pixel: Range = (0.025, 0.15)
    """Bits per pixel per frame, drawn log-uniformly. A video call at 640x480 and 30 FPS runs
    at about 0.03-0.15 (250-1400 kbit/s); at 60 FPS the same bitrate is half the bits."""
    keyframe_s: Range = (1.0, 4.0)
    """Seconds between keyframes, drawn uniformly."""

    def __post_init__(self) -> None:
        if not 0 < self.bits_per_pixel[0] <= self.bits_per_pixel[1]:
            raise ValueError("bits_per_pixel: positive (low, high)")
        if not 0 < self.keyframe_s[0] <= self.keyframe_s[1]:
            raise ValueError("keyframe_s: positive (low, high)")


@dataclass(frozen=True)
class H264Settings:
    """One video's codec: its bitrate (kbit/s) and keyframe interval (frames)."""

    kbps: int
    keyframe_frames: int


def draw_codec(spec: CodecSpec, width: int, height: int, fps: float, seed: int) -> H264Settings:
    """A video's codec settings, drawn from its own stream of ``seed`` (nothing else the video
    draws moves)."""
    rng = np.random.default_rng([int(seed), 41])
    lo, hi = np.log(spec.bits_per_pixel[0]), np.log(spec.bits_per_pixel[1])
    bpp = float(np.exp(rng.uniform(lo, hi)))
    keyframe_s = float(rng.uniform(*spec.keyframe_s))
    kbps = max(round(bpp * width * height * fps / 1000.0), 20)
    return H264Settings(kbps=kbps, keyframe_frames=max(round(keyframe_s * fps), 1))


class H264Roundtrip:
    """BGR frames of one size through an H.264 encoder and straight back through a decoder."""

    def __init__(self, width: int, height: int, fps: float, settings: H264Settings) -> None:
        import av

        if width % 2 or height % 2:
            raise ValueError(f"H.264 (yuv420p) needs even frame sides, got {width}x{height}")
        rate = Fraction(fps).limit_denominator(1000)
        enc = av.CodecContext.create("libx264", "w")
        enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
        enc.time_base, enc.framerate = 1 / rate, rate
        enc.bit_rate = settings.kbps * 1000
        enc.options = {"preset": "veryfast", "tune": "zerolatency",
                       "g": str(settings.keyframe_frames), "maxrate": f"{settings.kbps}k",
                       "bufsize": f"{2 * settings.kbps}k"}
        enc.thread_count = 1
        dec = av.CodecContext.create("h264", "r")
        dec.thread_count = 1
        self._enc, self._dec = enc, dec
        self._av = av
        self._pts = 0

    def __call__(self, bgr: np.ndarray) -> np.ndarray:
        """One frame in, the decoded frame out."""
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr), format="bgr24")
        frame.pts = self._pts
        self._pts += 1
        out = [f for p in self._enc.encode(frame) for f in self._dec.decode(p)]
        if len(out) != 1:
            raise RuntimeError(f"the encoder returned {len(out)} frames for one (zerolatency "
                               "should give exactly one)")
        return out[0].to_ndarray(format="bgr24")


def transcoded(
    frames: Iterator[np.ndarray], width: int, height: int, fps: float, settings: H264Settings
) -> Iterator[np.ndarray]:
    """``frames`` (BGR, all ``width`` x ``height``) as a receiver decodes them."""
    codec = H264Roundtrip(width, height, fps, settings)
    for f in frames:
        yield codec(f)
