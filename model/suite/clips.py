"""The suite's clips: what each one is, how it is rendered, and where it is cached.

``suite_clips()`` is the independent suite (v2), two strata of clips of 30-40 s with 3-5 MEs and
3-5 MaEs each, every one under the same webcam conditions (H.264, exposure, flicker, noise, 3D
head motion):

- ``subtle_clips()`` (suite v1, 12 clips): every face twice, once at 30 and once at 60 FPS, half
  of each rate at 640x480 and half at 1280x720, all with bursts of talking; expressions of the
  "subtle" stratum (``motion.SUBTLE``).
- ``clear_clips()`` (8 clips): expressions of the "clear" stratum (``motion.CLEAR``), one clip
  per cell of FPS x frame size x talking (half "calm": no talking), every face at least once.

A clip is a pure function of its :class:`ClipSpec` (and :data:`RENDER_VERSION`): the same spec
gives the same frames, labels and bytes. Rendered clips are cached as
``<cache>/suite/v<render version>/<name>-<digest>.mp4`` with a JSON beside it (spec, labels,
distractors); a spec or render version change makes a new file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import RENDER_VERSION
from .camera import H264Writer, draw_scene, draw_sensor, expose
from .face import FaceRenderer, Pose
from .motion import STRATA
from .stills import STILL_FILES, load_still
from .timeline import Timeline, make_timeline

RESOLUTIONS = ((640, 480), (1280, 720))
KBPS = {480: (500, 1000), 720: (1000, 2200)}
"""Webcam bitrates (kbit/s) by frame height: what a video call sends."""
FACE_IOD_OF_HEIGHT = (0.13, 0.18)
"""Inter-ocular distance as a fraction of the frame height: a face at arm's length from a
laptop camera (the face, brow to chin, then fills a third to a half of the height)."""


@dataclass(frozen=True)
class ClipSpec:
    name: str
    still: str
    fps: int
    width: int
    height: int
    duration_s: float
    seed: int
    kbps: int
    stratum: str = "subtle"
    talking: bool = True

    @property
    def n_frames(self) -> int:
        return int(np.round(self.duration_s * self.fps))

    @property
    def video_id(self) -> str:
        """Names the clip everywhere (aligned caches too), with the render version in it."""
        return f"indep{RENDER_VERSION}-{self.name}"

    def as_dict(self) -> dict:
        """The spec's fields; one added after suite v1 (:data:`ADDED_FIELDS`) only where it
        differs from its default, so every v1 clip keeps its digest, cache file and JSON."""
        out = asdict(self)
        for f in dataclasses.fields(self):
            if f.name in ADDED_FIELDS and out[f.name] == f.default:
                del out[f.name]
        return out

    def digest(self) -> str:
        payload = json.dumps({"v": RENDER_VERSION, **self.as_dict()}, sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:10]


ADDED_FIELDS = ("stratum", "talking")
"""ClipSpec fields that suite v1 did not have; their defaults draw exactly what v1 drew."""


@dataclass(frozen=True)
class RenderedClip:
    """A clip on disk: the .mp4 and its labels (inclusive source frames, ME 1, MaE 2)."""

    spec: ClipSpec
    path: Path
    labels: list[tuple[int, int, int]]
    n_frames: int


def suite_clips(seed: int = 0) -> list[ClipSpec]:
    """The independent suite (module docstring): the subtle clips, then the clear ones."""
    return subtle_clips(seed) + clear_clips(seed)


def subtle_clips(seed: int = 0) -> list[ClipSpec]:
    """Suite v1: 12 clips of the subtle stratum, all with talking (module docstring)."""
    specs = []
    for i, still in enumerate(STILL_FILES):
        for k, fps in enumerate((30, 60)):
            rng = np.random.default_rng([seed, i, k, 1])
            width, height = RESOLUTIONS[(i + k) % 2]
            specs.append(ClipSpec(
                name=f"{still}-{fps}fps-{height}p", still=still, fps=fps, width=width,
                height=height, duration_s=float(np.round(rng.uniform(30, 40) * 2) / 2),
                seed=seed * 1000 + i * 10 + k, kbps=int(rng.integers(*KBPS[height]) // 50 * 50),
            ))
    return specs


CLEAR_CELLS: tuple[tuple[str, int, int, bool], ...] = (
    ("astronaut", 30, 480, True),
    ("einstein", 30, 480, False),
    ("f13-anc", 30, 720, True),
    ("grace_hopper", 30, 720, False),
    ("wolfgang", 60, 480, True),
    ("f13-anc", 60, 480, False),
    ("obama", 60, 720, True),
    ("astronaut", 60, 720, False),
)
"""(face, FPS, frame height, talking) of each clear clip: every cell of FPS x size x talking
once, every face at least once, the two first faces twice (once talking, once calm, at another
rate and size). Einstein only at 480p: at 720p the product's aligner finds no face in it
(docs/SUITE.md), and a clip no method can see measures the aligner, not the spotters."""


def clear_clips(seed: int = 0) -> list[ClipSpec]:
    """8 clips of the clear stratum (:data:`CLEAR_CELLS`)."""
    specs = []
    for j, (still, fps, height, talking) in enumerate(CLEAR_CELLS):
        rng = np.random.default_rng([seed, 2, j])
        width = {h: w for w, h in RESOLUTIONS}[height]
        specs.append(ClipSpec(
            name=f"clear-{still}-{fps}fps-{height}p-{'talk' if talking else 'calm'}",
            still=still, fps=fps, width=width, height=height,
            duration_s=float(np.round(rng.uniform(30, 40) * 2) / 2), seed=seed * 1000 + 500 + j,
            kbps=int(rng.integers(*KBPS[height]) // 50 * 50), stratum="clear", talking=talking,
        ))
    return specs


def clip_timeline(spec: ClipSpec) -> Timeline:
    """Everything that happens in the clip, drawn from its seed (no face needed)."""
    rng = np.random.default_rng([spec.seed, RENDER_VERSION, 0])
    return make_timeline(spec.fps, spec.n_frames, spec.width, rng, stratum=STRATA[spec.stratum],
                         talking=spec.talking)


class ClipRenderer:
    """Renders one :class:`ClipSpec` frame by frame (deterministic, random access)."""

    def __init__(self, spec: ClipSpec) -> None:
        self.spec = spec
        rngs = [np.random.default_rng([spec.seed, RENDER_VERSION, part]) for part in range(4)]
        self.face = FaceRenderer(load_still(spec.still))
        self.timeline: Timeline = clip_timeline(spec)
        self.scene = draw_scene(spec.width, spec.height, rngs[1])
        self.sensor = draw_sensor(rngs[2])
        r = rngs[3]
        iod = spec.height * r.uniform(*FACE_IOD_OF_HEIGHT)
        self.base_scale = iod / self.face.iod_px
        self.home = (spec.width * r.uniform(0.4, 0.6), spec.height * r.uniform(0.42, 0.52))
        bank = self.face.bank
        self.expr_fields = []
        for e in self.timeline.expressions:
            f = sum(w * bank.field(t, *e.gains) for t, w in e.templates)
            self.expr_fields.append(f / float(np.linalg.norm(f, axis=1).max()))
        self.blink_field = bank.blink_field()
        self.jaw_field = bank.field("jaw_drop", 1.0, 1.0)
        self.pucker_field = bank.field("pucker", 1.0, 1.0)
        self._strength = self.timeline.strengths()

    def field(self, i: int) -> np.ndarray:
        """(468, 3) face-frame displacement of frame ``i``: expressions and distractors."""
        tl = self.timeline
        f = tl.blink[i] * self.blink_field + tl.jaw[i] * self.jaw_field
        f = f + tl.pucker[i] * self.pucker_field
        for s, ef in zip(self._strength[i], self.expr_fields, strict=True):
            if s > 0:
                f = f + s * ef
        return f

    def expression_field(self, i: int) -> np.ndarray:
        """(468, 3) displacement of frame ``i`` from the labelled expressions alone."""
        f = np.zeros((len(self.face.rest), 3))
        for s, ef in zip(self._strength[i], self.expr_fields, strict=True):
            f = f + s * ef
        return f

    def pose(self, i: int) -> Pose:
        tl = self.timeline
        return Pose(float(tl.yaw[i]), float(tl.pitch[i]), float(tl.roll[i]),
                    self.base_scale * float(tl.scale[i]), self.home[0] + float(tl.dx[i]),
                    self.home[1] + float(tl.dy[i]))

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` as the camera delivers it: (H, W, 3) uint8 BGR."""
        canvas = self.scene.copy()
        self.face.draw(canvas, self.field(i), self.pose(i))
        noise_seed = int(np.random.default_rng([self.spec.seed, RENDER_VERSION, 9, i]).integers(
            2**31))
        return expose(canvas, float(self.timeline.exposure[i]), i / self.spec.fps,
                      self.spec.fps, self.sensor, noise_seed)

    def frames(self, progress: bool = False) -> Iterator[np.ndarray]:
        from tqdm import tqdm

        for i in tqdm(range(self.spec.n_frames), desc=f"render {self.spec.name}", unit="frame",
                      leave=False, disable=not progress):
            yield self.frame(i)

    def metadata(self) -> dict:
        tl = self.timeline
        return {
            "render_version": RENDER_VERSION,
            "spec": self.spec.as_dict(),
            "n_frames": self.spec.n_frames,
            "labels": [list(x) for x in tl.labels()],
            "talking": [list(x) for x in tl.talking],
            "blinks": [list(x) for x in tl.blinks],
            "expressions": [{**asdict(e), "templates": [list(t) for t in e.templates]}
                            for e in tl.expressions],
        }


def clip_path(spec: ClipSpec, cache_dir: Path) -> Path:
    return Path(cache_dir) / "suite" / f"v{RENDER_VERSION}" / f"{spec.name}-{spec.digest()}.mp4"


def render_clip(spec: ClipSpec, path: Path, progress: bool = False) -> RenderedClip:
    """Render and encode one clip to ``path`` (written atomically) with its JSON beside it."""
    renderer = ClipRenderer(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.mp4")
    writer = H264Writer(tmp, spec.width, spec.height, spec.fps, spec.kbps)
    try:
        for image in renderer.frames(progress):
            writer.write(image)
    finally:
        writer.close()
    meta = renderer.metadata()
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    tmp.replace(path)
    return RenderedClip(spec, path, renderer.timeline.labels(), spec.n_frames)


def load_rendered(spec: ClipSpec, cache_dir: Path) -> RenderedClip | None:
    path = clip_path(spec, cache_dir)
    meta_path = path.with_suffix(".json")
    if not (path.exists() and meta_path.exists()):
        return None
    meta = json.loads(meta_path.read_text())
    return RenderedClip(spec, path, [tuple(x) for x in meta["labels"]], int(meta["n_frames"]))


def _render_missing(spec: ClipSpec, cache_dir: Path) -> None:
    if load_rendered(spec, cache_dir) is None:
        render_clip(spec, clip_path(spec, cache_dir))


def ensure_rendered(
    specs: list[ClipSpec], cache_dir: Path, workers: int = 1
) -> list[RenderedClip]:
    """Every clip from the cache, rendering the missing ones (``workers`` processes share
    them; progress bars per clip, and per frame with one worker)."""
    from functools import partial

    from tqdm import tqdm

    todo = [s for s in specs if load_rendered(s, cache_dir) is None]
    bar = tqdm(total=len(todo), desc="render suite", unit="clip", disable=not todo)
    if workers > 1 and len(todo) > 1:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for _ in pool.map(partial(_render_missing, cache_dir=cache_dir), todo):
                bar.update()
    else:
        for spec in todo:
            render_clip(spec, clip_path(spec, cache_dir), progress=True)
            bar.update()
    bar.close()
    out = [load_rendered(s, cache_dir) for s in specs]
    assert all(c is not None for c in out)
    return out  # type: ignore[return-value]
