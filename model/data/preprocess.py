"""Source videos -> aligned 112x112 RGB crops on the 60 Hz model timeline, with per-slot labels.

What holds for every :class:`AlignedVideo`:

- ``crops[k]`` is the aligned face of source frame ``source_index[k]``, the frame whose timestamp
  is nearest to slot ``k`` (:class:`~fesnet.model.data.resample.Resampler`, the same code the
  realtime pipeline runs). Only those source frames are aligned (a 200 FPS video costs 60 FPS).
- ``labels[k]`` is the label of source frame ``source_index[k]`` (intervals in source frames).
- ``landmarks[k]`` are that frame's 468 FaceMesh landmarks in *crop* pixel coordinates (the
  alignment transform applied to the frame's landmarks): the geometry channel reads them.
- A frame without a face holds the previous crop and landmarks (leading faceless frames take the
  first found ones); ``n_missing`` counts them. A video without any face raises
  :class:`PreprocessError`.
- Results are cached as ``<cache_dir>/<video id>-<settings digest>.npz``: a second epoch or run
  loads the file without touching the aligner; changing the settings changes the digest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..metrics import labels_to_intervals
from .common import ForwardReader, VideoRecord, labels_from_intervals
from .landmarks import crop_landmarks
from .resample import resample_indices

if TYPE_CHECKING:
    from .align import FaceAligner
    from .identities import Identity
    from .synthetic import SyntheticSpec, SyntheticStream, SyntheticVideo

logger = logging.getLogger(__name__)

MODEL_FPS = 60.0
PREPROCESS_VERSION = 2  # 2: landmarks stored beside the crops
_PROGRESS_MIN_FRAMES = 600


class PreprocessError(Exception):
    """A video cannot be turned into aligned crops (unreadable frames, no face at all)."""


@dataclass(frozen=True)
class PreprocessSettings:
    """Everything that changes the bytes of the cached crops (hashed into the cache key)."""

    crop_size: int = 112
    model_fps: float = MODEL_FPS
    max_faces: int = 2
    min_detection_confidence: float = 0.5
    far_faces: bool = True  # faces FaceMesh alone misses (model/data/far_faces.py)

    def digest(self) -> str:
        payload = json.dumps({"v": PREPROCESS_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:10]

    def make_aligner(self) -> FaceAligner:
        from .align import FaceAligner

        return FaceAligner(
            crop_size=self.crop_size,
            max_faces=self.max_faces,
            static_image_mode=False,
            min_detection_confidence=self.min_detection_confidence,
            far_faces=self.far_faces,
        )


@dataclass(frozen=True)
class AlignedVideo:
    """Aligned crops (N, S, S, 3) uint8 RGB at ``model_fps`` with labels (N,) int64."""

    video_id: str
    subject: str
    crops: np.ndarray
    labels: np.ndarray
    source_index: np.ndarray
    fps_source: float
    n_missing: int = 0
    model_fps: float = MODEL_FPS
    landmarks: np.ndarray | None = None  # (N, 468, 2) float32, crop pixels

    def __len__(self) -> int:
        return int(self.crops.shape[0])

    @property
    def intervals(self) -> list[tuple[int, int, int]]:
        """Inclusive (onset, offset, label) runs on the model timeline (slot indices)."""
        return labels_to_intervals(self.labels)

    def save(self, path: Path) -> None:
        meta = {
            "video_id": self.video_id,
            "subject": self.subject,
            "fps_source": self.fps_source,
            "n_missing": self.n_missing,
            "model_fps": self.model_fps,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        extra = {} if self.landmarks is None else {"landmarks": self.landmarks}
        np.savez(
            tmp,
            crops=self.crops,
            labels=self.labels,
            source_index=self.source_index,
            meta=np.array(json.dumps(meta)),
            **extra,
        )
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> AlignedVideo:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            return cls(
                video_id=meta["video_id"],
                subject=meta["subject"],
                crops=data["crops"],
                labels=data["labels"].astype(np.int64),
                source_index=data["source_index"].astype(np.int64),
                fps_source=float(meta["fps_source"]),
                n_missing=int(meta["n_missing"]),
                model_fps=float(meta["model_fps"]),
                landmarks=data["landmarks"] if "landmarks" in data.files else None,
            )


def cache_path(cache_dir: Path, video_id: str, settings: PreprocessSettings) -> Path:
    """Cache file for a video id under the given settings (id sanitised for the file system)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", video_id)
    return Path(cache_dir) / f"{safe}-{settings.digest()}.npz"


def align_frames(
    read_frame: Callable[[int], np.ndarray],
    source_index: np.ndarray,
    aligner: FaceAligner,
    crop_size: int,
    desc: str = "align",
) -> tuple[np.ndarray, np.ndarray, int]:
    """Crops and crop-pixel landmarks for each slot's source frame; each distinct source frame
    is aligned once, in order.

    Returns (crops (N, S, S, 3) uint8 RGB, landmarks (N, 468, 2) float32, number of distinct
    source frames without a face).
    """
    from tqdm import tqdm

    unique = np.unique(source_index)
    found_at: dict[int, tuple[np.ndarray, np.ndarray] | None] = {}
    aligner.reset()
    for idx in tqdm(unique, desc=desc, unit="frame", leave=False,
                    disable=len(unique) < _PROGRESS_MIN_FRAMES):
        r = aligner.align(read_frame(int(idx)))
        found_at[int(idx)] = None if r.crop is None else (
            r.crop, crop_landmarks(r.landmarks, r.transform)
        )
    found = [f for f in found_at.values() if f is not None]
    if not found:
        raise PreprocessError(f"{desc}: no face found in any of {len(unique)} frames")
    n_missing = 0
    last = found[0]
    held: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for idx in unique:
        face = found_at[int(idx)]
        if face is None:
            n_missing += 1
        else:
            last = face
        held[int(idx)] = last
    n_points = last[1].shape[0]
    crops = np.empty((len(source_index), crop_size, crop_size, 3), np.uint8)
    landmarks = np.empty((len(source_index), n_points, 2), np.float32)
    for k, idx in enumerate(source_index):
        crops[k], landmarks[k] = held[int(idx)]
    return crops, landmarks, n_missing


def _preprocess(
    video_id: str,
    subject: str,
    fps_source: float,
    n_source: int,
    read_frame: Callable[[int], np.ndarray],
    frame_labels: np.ndarray,
    aligner: FaceAligner | None,
    cache_dir: Path | None,
    settings: PreprocessSettings,
) -> AlignedVideo:
    path = cache_path(cache_dir, video_id, settings) if cache_dir is not None else None
    if path is not None and path.exists():
        logger.debug("cache hit %s", path)
        return AlignedVideo.load(path)
    if n_source <= 0:
        raise PreprocessError(f"{video_id}: no frames")
    timestamps = [i / fps_source for i in range(n_source)]
    source_index = np.asarray(resample_indices(timestamps, settings.model_fps), np.int64)
    own = aligner is None
    active = settings.make_aligner() if own else aligner
    assert active is not None
    if active.crop_size != settings.crop_size:
        raise ValueError(f"aligner crop_size {active.crop_size} != settings {settings.crop_size}")
    try:
        crops, landmarks, n_missing = align_frames(
            read_frame, source_index, active, settings.crop_size, desc=video_id
        )
    finally:
        if own:
            active.close()
    if n_missing:
        logger.info("%s: %d source frames without a face held the last crop", video_id, n_missing)
    result = AlignedVideo(
        video_id=video_id,
        subject=subject,
        crops=crops,
        labels=frame_labels[source_index].astype(np.int64),
        source_index=source_index,
        fps_source=float(fps_source),
        n_missing=n_missing,
        model_fps=settings.model_fps,
        landmarks=landmarks,
    )
    if path is not None:
        result.save(path)
    return result


class _FrameReader:
    """Random-ish access to a record's frames; video files are decoded forward only."""

    def __init__(self, record: VideoRecord) -> None:
        self.record = record
        self._video = ForwardReader(self._decoded) if isinstance(record.frames, Path) else None

    def _capture(self):
        import cv2

        cap = cv2.VideoCapture(str(self.record.frames))
        if not cap.isOpened():
            raise PreprocessError(f"{self.record.video_id}: cannot open {self.record.frames}")
        return cap

    def _decoded(self) -> Iterator[np.ndarray]:
        cap = self._capture()
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    return
                yield frame
        finally:
            cap.release()

    def count(self) -> int:
        if self._video is None:
            return len(self.record.frames)
        cap = self._capture()
        n = 0
        while cap.grab():
            n += 1
        cap.release()
        return n

    def __call__(self, index: int) -> np.ndarray:
        import cv2

        if self._video is not None:
            try:
                return self._video(index)
            except IndexError:
                raise PreprocessError(
                    f"{self.record.video_id}: frame {index} could not be decoded") from None
        path = self.record.frames[index]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise PreprocessError(f"{self.record.video_id}: cannot read frame {path}")
        return image

    def close(self) -> None:
        if self._video is not None:
            self._video.close()


def preprocess_record(
    record: VideoRecord,
    aligner: FaceAligner | None = None,
    cache_dir: Path | None = None,
    settings: PreprocessSettings | None = None,
) -> AlignedVideo:
    """Align a dataset video onto the model timeline (cached; ``aligner=None`` makes one)."""
    settings = settings or PreprocessSettings()
    if cache_dir is not None:
        path = cache_path(cache_dir, record.video_id, settings)
        if path.exists():
            return AlignedVideo.load(path)
    reader = _FrameReader(record)
    try:
        n = reader.count()
        return _preprocess(
            record.video_id, record.subject, record.fps, n, reader,
            labels_from_intervals(record.intervals, n), aligner, cache_dir, settings,
        )
    finally:
        reader.close()


def cached_synthetic(
    identity: str,
    spec: SyntheticSpec,
    seed: int,
    *,
    cache_dir: Path,
    settings: PreprocessSettings | None = None,
) -> Path | None:
    """The cache file of a synthetic video if it has been aligned already, else None."""
    from .synthetic import synthetic_video_id

    path = cache_path(cache_dir, synthetic_video_id(identity, spec, seed),
                      settings or PreprocessSettings())
    return path if path.exists() else None


def preprocess_synthetic(
    video: SyntheticVideo | SyntheticStream | Identity | str,
    spec: SyntheticSpec | None = None,
    seed: int | None = None,
    *,
    aligner: FaceAligner | None = None,
    cache_dir: Path | None = None,
    settings: PreprocessSettings | None = None,
) -> AlignedVideo:
    """Align a synthetic video onto the model timeline (cached).

    ``video`` is a rendered :class:`SyntheticVideo`, a :class:`SyntheticStream`, or an identity
    (name or :class:`Identity`) together with ``spec`` and ``seed``. In the last form a cache hit
    neither loads the identity nor renders a frame; a miss streams the frames (never holding the
    whole video in memory).
    """
    from .identities import Identity, load_identities
    from .synthetic import SyntheticStream, SyntheticVideo, synthetic_video_id

    settings = settings or PreprocessSettings()
    if isinstance(video, (str, Identity)):
        if spec is None or seed is None:
            raise ValueError("an identity needs spec and seed")
        name = video if isinstance(video, str) else video.name
        video_id = synthetic_video_id(name, spec, seed)
        if cache_dir is not None and cache_path(cache_dir, video_id, settings).exists():
            return AlignedVideo.load(cache_path(cache_dir, video_id, settings))
        identity = load_identities([video])[0] if isinstance(video, str) else video
        video = SyntheticStream(identity, spec, seed)
    elif spec is not None or seed is not None:
        raise ValueError("spec and seed are only used with an identity")

    labels = video.labels()
    read: Callable[[int], np.ndarray]
    if isinstance(video, SyntheticVideo):
        frames = video.frames
        n = len(frames)
        read = frames.__getitem__
        subject = video.identity
    else:
        n = video.n_frames
        read = video.reader()
        subject = video.identity.name
    return _preprocess(
        video.video_id, subject, video.fps, n, read, labels, aligner, cache_dir, settings
    )
