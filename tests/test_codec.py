"""The codec between a webcam and the spotter (model/data/codec.py): H.264 one frame in, one
out, deterministic; synthetic videos delivered through it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fesnet.model.data.codec import (
    CodecSpec,
    H264Roundtrip,
    H264Settings,
    draw_codec,
)
from fesnet.model.data.synthetic import SyntheticStream
from fesnet.model.data.webcam_set import webcam_spec


def _moving(n: int, w: int = 160, h: int = 120) -> list[np.ndarray]:
    """A smooth grey texture (blurred noise, as a scene has) panning one pixel a frame."""
    import cv2

    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (h, w + n), dtype=np.uint8)
    grey = cv2.normalize(cv2.GaussianBlur(noise, (0, 0), 2.0), None, 0, 255, cv2.NORM_MINMAX)
    base = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    return [np.ascontiguousarray(base[:, i : i + w]) for i in range(n)]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


def test_h264_gives_one_frame_per_frame_the_same_bytes_every_time_and_less_at_a_lower_rate():
    frames = _moving(40)
    runs = {}
    for kbps in (20, 3000):
        codecs = [H264Roundtrip(160, 120, 30.0, H264Settings(kbps, 15)) for _ in range(2)]
        out = [[c(f) for f in frames] for c in codecs]
        for a, b in zip(*out, strict=True):
            assert a.shape == (120, 160, 3) and a.dtype == np.uint8
            np.testing.assert_array_equal(a, b)
        runs[kbps] = np.median([_psnr(f, o) for f, o in zip(frames, out[0], strict=True)])
    assert runs[20] < runs[3000] - 3.0, runs
    with pytest.raises(ValueError, match="even"):
        H264Roundtrip(161, 120, 30.0, H264Settings(500, 15))


def test_drawn_settings_stay_in_their_ranges_and_depend_on_the_seed_only():
    spec = CodecSpec(bits_per_pixel=(0.03, 0.12), keyframe_s=(1.0, 4.0))
    drawn = [draw_codec(spec, 640, 480, 30.0, seed) for seed in range(50)]
    for s in drawn:
        bpp = s.kbps * 1000 / (640 * 480 * 30.0)
        assert 0.03 - 1e-3 <= bpp <= 0.12 + 1e-3 and 30 <= s.keyframe_frames <= 120
    assert len({s.kbps for s in drawn}) > 40
    assert draw_codec(spec, 640, 480, 30.0, 7) == drawn[7]
    with pytest.raises(ValueError, match="bits_per_pixel"):
        CodecSpec(bits_per_pixel=(0.2, 0.1))


def test_a_synthetic_video_with_a_codec_is_delivered_through_it(two_identities):
    identity = two_identities[0]
    spec = replace(webcam_spec(np.random.default_rng(3), 1.0), n_me=0, n_mae=0,
                   frame_size=(256, 256),
                   face_size_px=None, codec=CodecSpec(bits_per_pixel=(0.05, 0.05)))
    a, b = SyntheticStream(identity, spec, 11), SyntheticStream(identity, spec, 11)
    assert a.codec is not None and a.codec == b.codec
    delivered = list(a)
    np.testing.assert_array_equal(a.render_all(), np.stack(list(b)))
    read = b.reader()
    for i in (0, 5, 5, len(delivered) - 1):
        np.testing.assert_array_equal(read(i), delivered[i])
    camera = [a.frame(i) for i in range(a.n_frames)]
    psnr = [_psnr(c, d) for c, d in zip(camera, delivered, strict=True)]
    assert 25.0 < float(np.median(psnr)) < 60.0  # changed, still the same picture
    plain = SyntheticStream(identity, replace(spec, codec=None), 11)
    assert plain.codec is None and plain.reader() == plain.frame
    np.testing.assert_array_equal(next(iter(plain)), camera[0])
