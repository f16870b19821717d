"""Seeded synthetic expression videos: real face images animated with action-unit-like motions.

Licensed spotting datasets (CAS(ME)^2, SAMM-LV) cannot be shipped, so training and tests use long
videos rendered from the shipped real face images (``model/data/faces``). What holds:

- Expressions are local, smooth displacement fields around FaceMesh landmark groups (brows, lids,
  cheeks, nose, lip corners, lips, chin), one per action unit (AU). An event combines 1-3 AUs whose
  amplitude follows an onset -> apex (short hold) -> offset profile (smoothstep ramps).
- MEs last ``me_duration_s`` (default 0.2-0.5 s) with small amplitude (1-2.5 px on the 256 px
  face image); MaEs last ``mae_duration_s`` (0.6-4 s) with 3-8 px. Both draw from the same AU
  combinations, so duration and intensity, not the AU set, separate the classes.
- Events never overlap and are separated (and kept from the video ends) by at least
  ``min_gap_s`` of neutral frames, so a 32-frame window at 60 FPS (0.53 s) rarely sees two events.
- Distractors are labelled neutral: blinks (lids only, 0.1-0.3 s, kept clear of MEs), smooth head
  drift + jitter + sudden head moves (a global similarity transform), lighting gain/gradient drift
  and sudden changes, Gaussian sensor noise and a JPEG round trip.
- Intervals are ``(onset, offset, label)`` with inclusive frame indices; every labelled frame has a
  non-zero expression amplitude and every frame outside has none.
- Everything random comes from ``numpy.random.default_rng`` seeded by ``seed`` (per-frame noise by
  ``(seed, frame index)``), and cv2 operations are deterministic: the same identity, spec and seed
  give byte-identical frames, whether rendered in one go, streamed, or frame by frame.
- Train and test identities (:func:`~.identities.train_test_identities`) are disjoint people.
- *Motion families*: ``warp`` (how an AU's motion spreads over the face: ``shepard`` or ``tps``,
  action_units.py), ``profiles`` (the temporal shapes events draw from, profiles.py),
  ``region_mix`` (prototype AU combinations or free, possibly one-sided mixes) and ``au_spread``
  (the fields' reach). At their defaults (``shepard``, ``smooth``, ``combos``) nothing changes.
- *Webcam distractors* (``spec.distractors``, distractors.py and face_motion.py): blinks of four
  kinds, talking, head rotation, twitches, exposure flicker and steps, noise bursts, motion
  blur, dropped frames, a soft lens; all labelled neutral and kept clear of MEs where they are
  events. Off by default.

The pieces: landmarks.py (FaceMesh point groups), identities.py and variants.py (the faces, and
morphs and jitters of them), action_units.py (AUs and their displacement fields), profiles.py,
spec.py (what a video contains), timeline.py, plan.py and distractors.py (the per-frame schedule
drawn from the seed), face_motion.py (talking, rotation and camera effects), and this module
(the renderer).
- A session's *neutral look* can differ from the identity image (``rest_aus``, ``face_aspect``,
  ``light_gain``, ``light_side``): a constant resting AU offset (e.g. a one-sided lip corner),
  a wider or narrower face, a dim or bright room, side lighting. They are constant over the video,
  labelled neutral, and are what per-person calibration (calibration/) has to absorb. At their
  defaults they change nothing: neither the bytes nor the digest of existing videos.

Rendering per frame: one ``cv2.remap`` of the identity image by the sum of the active AUs'
precomputed unit fields (a second one for head rotation), one ``cv2.warpAffine`` for head pose
and placement in the canvas, then lighting, optics (blur, lens), noise and JPEG; a video with a
codec (``spec.codec``) then passes through H.264 as it is delivered (codec.py). About 3-6 ms per
256x256 frame on one idle core; the full-frame float work grows with the frame (640x480 ~5x).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .action_units import ACTION_UNITS, au_unit_field, blink_field
from .codec import H264Settings, draw_codec, transcoded
from .common import ForwardReader
from .face_motion import FaceMotion, motion_blur, side_masks, soft_focus, spread_field
from .identities import IDENTITY_SIZE, Identity
from .plan import plan_video
from .spec import (
    GENERATOR_VERSION,
    Distractors,
    SyntheticSpec,
    random_framing,
    random_look,
)
from .timeline import MAE, ME, NEUTRAL, ExpressionEvent

logger = logging.getLogger(__name__)

__all__ = ["GENERATOR_VERSION", "MAE", "ME", "NEUTRAL", "Distractors", "SyntheticSpec",
           "SyntheticStream", "SyntheticVideo", "generate_video", "iter_frames",
           "random_framing", "random_look"]


# ----------------------------------------------------------------------------------------------
# Rendering


def synthetic_video_id(identity: str, spec: SyntheticSpec, seed: int) -> str:
    """Stable id of the video (identity, spec, seed) renders: equal ids mean equal bytes."""
    return f"syn-{identity}-s{int(seed)}-{spec.digest()}"


class SyntheticStream:
    """A synthetic video rendered on demand: iterate it, index it, or :meth:`render_all` it.

    Holds the identity's precomputed AU fields and the plan; memory is O(one frame) while
    iterating, so a long 60 FPS video need not be materialised (30 s at 256x256 is 350 MB).
    """

    def __init__(self, identity: Identity, spec: SyntheticSpec, seed: int) -> None:
        self.identity = identity
        self.spec = spec
        self.seed = int(seed)
        self.plan = plan_video(spec, self.seed)
        self.fps = float(spec.fps)
        self.n_frames = self.plan.n_frames
        self.intervals: list[tuple[int, int, int]] = [
            (e.onset, e.offset, e.label) for e in self.plan.events
        ]
        self.timestamps_s = np.arange(self.n_frames, dtype=np.float64) / self.fps
        self.video_id = synthetic_video_id(identity.name, spec, self.seed)
        self._fields = self._expression_fields()
        self._blink = blink_field(identity)
        self._rest: np.ndarray | None = None
        for name, px in spec.rest_aus:
            term = au_unit_field(identity, ACTION_UNITS[name], spec.warp) * np.float32(px)
            self._rest = term if self._rest is None else self._rest + term
        self._motion = None
        if self.plan.extra is not None:
            self._motion = FaceMotion(identity)
        s = IDENTITY_SIZE
        ys, xs = np.mgrid[0:s, 0:s].astype(np.float32)
        self._grid = np.stack([xs, ys], axis=-1)
        self._setup_canvas()
        self.codec: H264Settings | None = None
        if spec.codec is not None:
            w, h = spec.frame_size
            self.codec = draw_codec(spec.codec, w, h, self.fps, self.seed)

    def _expression_fields(self) -> dict[str, np.ndarray]:
        """Unit field of every track of the plan; a sided track ("AU|L") is its AU's field
        masked to that half of the face."""
        fields: dict[str, np.ndarray] = {}
        masks = None
        for key in self.plan.au_amplitude:
            name, _, side = key.partition("|")
            base = spread_field(self.identity, ACTION_UNITS[name], self.spec.warp,
                                self.plan.spread)
            if side:
                masks = masks or side_masks(self.identity)
                base = base * masks[side][..., None]
            fields[key] = base
        return fields

    @property
    def events(self) -> list[ExpressionEvent]:
        return list(self.plan.events)

    def labels(self) -> np.ndarray:
        """Per-frame class ids (N,) int64 from the intervals."""
        out = np.zeros(self.n_frames, np.int64)
        for onset, offset, label in self.intervals:
            out[onset : offset + 1] = label
        return out

    def _setup_canvas(self) -> None:
        import cv2

        w, h = self.spec.frame_size
        side = self.spec.face_size_px or min(w, h)
        self._scale = side / IDENTITY_SIZE
        self._centre = np.array([w / 2.0, h / 2.0])
        self._blend = side < min(w, h) or w != h
        if self._blend:
            # A plain backdrop in the colour of the identity image's border, with a soft vertical
            # gradient; the face image is feathered into it so no hard square edge shows.
            img = self.identity.image.astype(np.float32)
            border = np.concatenate([img[:8].reshape(-1, 3), img[-8:].reshape(-1, 3),
                                     img[:, :8].reshape(-1, 3), img[:, -8:].reshape(-1, 3)])
            colour = np.median(border, axis=0)
            ramp = np.linspace(1.1, 0.85, h, dtype=np.float32)[:, None, None]
            self._background = np.broadcast_to(colour * ramp, (h, w, 3)).astype(np.float32)
            mask = np.zeros((IDENTITY_SIZE, IDENTITY_SIZE), np.float32)
            m = IDENTITY_SIZE // 10
            mask[m:-m, m:-m] = 1.0
            self._mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=m / 2)
        xs = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :]
        ys = np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None]
        self._xs, self._ys = xs, ys

    def _matrix(self, i: int) -> np.ndarray:
        tx, ty, rot, log_s = self.plan.pose[i]
        scale = self._scale * float(np.exp(log_s))
        a = np.deg2rad(rot)
        c, s = scale * np.cos(a), scale * np.sin(a)
        half = IDENTITY_SIZE / 2.0
        cx, cy = self._centre[0] + tx * self._scale, self._centre[1] + ty * self._scale
        matrix = np.array([[c, -s, cx - c * half + s * half], [s, c, cy - s * half - c * half]])
        aspect = self.spec.face_aspect
        if aspect != 1.0:
            # Stretch the identity image horizontally about its centre, then place it.
            stretch = np.array([[aspect, 0.0, half * (1.0 - aspect)], [0.0, 1.0, 0.0], [0, 0, 1]])
            matrix = (np.vstack([matrix, [0.0, 0.0, 1.0]]) @ stretch)[:2]
        return matrix

    def _displacement(self, i: int) -> np.ndarray | None:
        """The frame's summed displacement field (256, 256, 2), None when nothing moves."""
        plan = self.plan
        disp = self._rest
        for name, track in plan.au_amplitude.items():
            if track[i] != 0.0:
                term = self._fields[name] * np.float32(track[i])
                disp = term if disp is None else disp + term
        if plan.blink[i] != 0.0:
            term = self._blink * np.float32(plan.blink[i])
            disp = term if disp is None else disp + term
        extra = plan.extra
        if extra is not None and self._motion is not None:
            for field, track in ((self._motion.jaw, extra.talk),
                                 (self._motion.round, extra.talk_round)):
                if track[i] != 0.0:
                    term = field * np.float32(track[i])
                    disp = term if disp is None else disp + term
        return disp

    def _face(self, i: int) -> np.ndarray:
        """The identity image moved by the frame's expression, blink and talking, with the
        mouth's dark inside where talking parted the lips, then turned by the head rotation."""
        import cv2

        disp = self._displacement(i)
        face = self.identity.image
        if disp is not None:
            maps = self._grid - disp
            face = cv2.remap(face, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT101)
            extra = self.plan.extra
            if extra is not None and extra.talk[i] > 0.0 and self._motion is not None:
                face = self._motion.cavity(face, float(extra.talk[i]))
        extra = self.plan.extra
        if extra is None or (extra.yaw_deg[i] == 0.0 and extra.pitch_deg[i] == 0.0):
            return face
        assert self._motion is not None
        turn = self._motion.rotation(float(extra.yaw_deg[i]), float(extra.pitch_deg[i]))
        # The rotation field is forward and moves pixels by up to ~25 px: one fixed-point step
        # inverts it (the field read where each output pixel came from).
        maps = self._grid - turn
        back = cv2.remap(turn, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
        maps = self._grid - back
        return cv2.remap(face, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REFLECT101)

    def frame(self, i: int) -> np.ndarray:
        """Render frame ``i`` (H, W, 3) uint8 BGR as the camera gives it; independent of which
        frames came before (a dropped frame is its held frame again, byte for byte). A video
        with a codec (``self.codec``) reaches the spotter as :meth:`__iter__` or :meth:`reader`
        deliver it, not as this."""
        import cv2

        if not 0 <= i < self.n_frames:
            raise IndexError(f"frame {i} outside 0..{self.n_frames - 1}")
        plan = self.plan
        extra = plan.extra
        if extra is not None and extra.hold[i] != i:
            return self.frame(int(extra.hold[i]))
        face = self._face(i)
        w, h = self.spec.frame_size
        matrix = self._matrix(i)
        warped = cv2.warpAffine(face, matrix, (w, h), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT101).astype(np.float32)
        if self._blend:
            alpha = cv2.warpAffine(self._mask, matrix, (w, h), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)[..., None]
            warped = warped * alpha + self._background * (1.0 - alpha)
        gx, gy = plan.gradient[i]
        slope = 1.0 + np.float32(gx) * self._xs + np.float32(gy) * self._ys
        light = np.float32(plan.gain[i]) * slope
        lit = warped * light[..., None]
        sigma = plan.noise_sigma
        if extra is not None:
            lit = self._camera(i, lit)
            sigma = float(extra.noise_sigma[i])
        rng = np.random.default_rng([self.seed, 1, i])
        noise = rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(sigma)
        out = np.clip(lit + noise, 0, 255).astype(np.uint8)
        if plan.jpeg_quality is not None:
            ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, plan.jpeg_quality])
            if not ok:
                raise RuntimeError("JPEG encoding failed")
            out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        return out

    def _camera(self, i: int, lit: np.ndarray) -> np.ndarray:
        """Optics before the sensor noise: motion blur from the head's image speed, soft lens."""
        extra = self.plan.extra
        assert extra is not None
        if extra.blur_exposure > 0.0 and i > 0:
            step = (self.plan.pose[i, :2] - self.plan.pose[i - 1, :2]) * self._scale
            lit = motion_blur(lit, (float(step[0]), float(step[1])), extra.blur_exposure)
        return soft_focus(lit, extra.soft_focus)

    def __len__(self) -> int:
        return self.n_frames

    def __iter__(self) -> Iterator[np.ndarray]:
        """The frames as the spotter receives them: through the codec, if the video has one."""
        camera = (self.frame(i) for i in range(self.n_frames))
        if self.codec is None:
            return camera
        w, h = self.spec.frame_size
        return transcoded(camera, w, h, self.fps, self.codec)

    def reader(self) -> Callable[[int], np.ndarray]:
        """``read(i)`` of the delivered frames: :meth:`frame` itself without a codec; with one,
        a reader that decodes in order (an earlier frame is decoded again from the start: the
        round trip is deterministic)."""
        return self.frame if self.codec is None else ForwardReader(lambda: iter(self))

    def render_all(self) -> np.ndarray:
        """All delivered frames (N, H, W, 3) uint8 BGR."""
        w, h = self.spec.frame_size
        out = np.empty((self.n_frames, h, w, 3), np.uint8)
        for i, f in enumerate(self):
            out[i] = f
        return out


@dataclass(frozen=True)
class SyntheticVideo:
    """A rendered synthetic video: frames (N, H, W, 3) uint8 BGR with inclusive intervals."""

    video_id: str
    identity: str
    seed: int
    frames: np.ndarray
    fps: float
    intervals: list[tuple[int, int, int]]
    timestamps_s: np.ndarray
    events: list[ExpressionEvent]

    def labels(self) -> np.ndarray:
        out = np.zeros(len(self.frames), np.int64)
        for onset, offset, label in self.intervals:
            out[onset : offset + 1] = label
        return out


def generate_video(identity: Identity, spec: SyntheticSpec, seed: int) -> SyntheticVideo:
    """Render a whole video in memory (see :class:`SyntheticStream` to stream instead)."""
    stream = SyntheticStream(identity, spec, seed)
    return SyntheticVideo(
        video_id=stream.video_id,
        identity=identity.name,
        seed=stream.seed,
        frames=stream.render_all(),
        fps=stream.fps,
        intervals=list(stream.intervals),
        timestamps_s=stream.timestamps_s,
        events=stream.events,
    )


def iter_frames(identity: Identity, spec: SyntheticSpec, seed: int) -> Iterator[np.ndarray]:
    """Stream the frames of :func:`generate_video` one at a time (identical bytes)."""
    return iter(SyntheticStream(identity, spec, seed))
