"""Identity augmentation: new faces made from the shipped real ones, so training sees dozens of
identities instead of a dozen. Every variant is named, and the name alone rebuilds it:

- ``a+b@0.40``: a *morph* of people ``a`` and ``b``: both faces warped (piecewise affine over
  their FaceMesh landmarks) onto the shape 40 % of the way from ``a`` to ``b``, and their pixels
  blended 60/40 inside the face outline; hair, ears and background stay ``a``'s.
- ``<any>~j7``: a *jitter* of a face, drawn from seed 7: its shape (face and jaw width, eye
  spacing, nose and chin length, mouth width and height) by a landmark-driven warp, and its
  colour (white balance, skin tone, saturation, gamma).
- ``a~flip`` (identities.py): the mirror image.

A variant is deterministic (same name, same bytes) and belongs to every person it is made of
(:func:`people`): a morph of a training and a held-out person would leak the held-out one, so
splits check people, not names. No accessories are drawn on: only what renders cleanly.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from .landmarks import CHIN, CORNER_L, CORNER_R, EYE_CORNERS, NOSE_TIP, RIGID

FLIP_SUFFIX = "~flip"
_JITTER = re.compile(r"~j(\d+)$")
_MORPH = re.compile(r"^(?P<a>[^+@]+)\+(?P<b>[^+@]+)@(?P<w>0\.\d+)$")
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
             377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67,
             109)


def morph_name(a: str, b: str, weight: float) -> str:
    """The name of the morph of ``a`` and ``b`` with ``weight`` of ``b`` (two decimals)."""
    return f"{a}+{b}@{weight:.2f}"


def jitter_name(base: str, seed: int) -> str:
    return f"{base}~j{int(seed)}"


def people(name: str) -> tuple[str, ...]:
    """The real people a (variant) identity name shows, e.g. ``a+b@0.40~j3`` -> (a, b)."""
    name = _JITTER.sub("", name)
    match = _MORPH.match(name)
    parts = [match["a"], match["b"]] if match else [name]
    return tuple(dict.fromkeys(p.removesuffix(FLIP_SUFFIX) for p in parts))


def image_of(
    name: str,
    read: Callable[[str], np.ndarray],
    detect: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """The 256x256 BGR image of a variant name. ``read(person)`` gives a person's image,
    ``detect(image)`` its FaceMesh landmarks (468, 2) (raising when there is no face)."""
    jitter = _JITTER.search(name)
    base = _JITTER.sub("", name)
    match = _MORPH.match(base)
    if match:
        a, b = image_of(match["a"], read, detect), image_of(match["b"], read, detect)
        image = morph(a, detect(a), b, detect(b), float(match["w"]))
    elif base.endswith(FLIP_SUFFIX):
        image = np.ascontiguousarray(read(base.removesuffix(FLIP_SUFFIX))[:, ::-1])
    else:
        image = read(base)
    if jitter:
        image = jittered(image, detect(image), int(jitter[1]))
    return image


def _anchored(landmarks: np.ndarray, size: int) -> np.ndarray:
    """Landmarks plus fixed points on the image border (5 a side), so the warp covers it all."""
    t = np.linspace(0.0, size - 1.0, 5)
    inner = t[1:-1]
    border = np.concatenate([
        np.stack([t, np.zeros_like(t)], 1), np.stack([t, np.full_like(t, size - 1.0)], 1),
        np.stack([np.zeros_like(inner), inner], 1), np.stack([np.full_like(inner, size - 1.0),
                                                              inner], 1),
    ])
    return np.concatenate([landmarks, border]).astype(np.float64)


def piecewise_affine(image: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Warp ``image`` so its landmarks ``src`` (K, 2) land on ``dst`` (K, 2): affine inside
    each triangle of the Delaunay mesh of ``dst`` (plus the image border, which stays put)."""
    import cv2
    from scipy.spatial import Delaunay

    size = image.shape[0]
    s, d = _anchored(src, size), _anchored(dst, size)
    mesh = Delaunay(d)
    ys, xs = np.mgrid[0:size, 0:size]
    points = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    simplex = mesh.find_simplex(points)
    simplex = np.where(simplex < 0, mesh.find_simplex(np.clip(points, 0.5, size - 1.5)), simplex)
    simplex = np.maximum(simplex, 0)
    transform = mesh.transform[simplex]  # (P, 3, 2): barycentric coordinates of each pixel
    bary = np.einsum("pij,pj->pi", transform[:, :2], points - transform[:, 2])
    weights = np.concatenate([bary, 1.0 - bary.sum(axis=1, keepdims=True)], axis=1)
    corners = s[mesh.simplices[simplex]]  # (P, 3, 2) the triangle in the source image
    source = np.einsum("pk,pkc->pc", weights, corners).astype(np.float32)
    map_x = source[:, 0].reshape(size, size)
    map_y = source[:, 1].reshape(size, size)
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity transform taking points ``src`` onto ``dst``."""
    import cv2

    matrix, _ = cv2.estimateAffinePartial2D(src.astype(np.float32), dst.astype(np.float32),
                                            method=cv2.LMEDS)
    return matrix


def face_mask(landmarks: np.ndarray, size: int, feather_px: float) -> np.ndarray:
    """Soft mask (size, size) float32 of the face outline, feathered by ``feather_px``."""
    import cv2

    mask = np.zeros((size, size), np.float32)
    cv2.fillPoly(mask, [np.round(landmarks[list(FACE_OVAL)] * 4).astype(np.int32)], 1.0,
                 cv2.LINE_AA, 2)
    mask = cv2.erode(mask, np.ones((3, 3), np.uint8), iterations=max(int(feather_px / 2), 1))
    return cv2.GaussianBlur(mask, (0, 0), sigmaX=max(feather_px, 0.5))


def morph(
    image_a: np.ndarray, lm_a: np.ndarray, image_b: np.ndarray, lm_b: np.ndarray, weight: float
) -> np.ndarray:
    """A face between ``a`` and ``b``: shape and face pixels ``weight`` of the way to ``b``;
    everything outside the face outline from ``a`` (warped to the new shape)."""
    import cv2

    size = image_a.shape[0]
    matrix = _similarity(lm_b[list(RIGID)], lm_a[list(RIGID)])
    b_in_a = cv2.warpAffine(image_b, matrix, (size, size), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
    lm_b_in_a = lm_b @ matrix[:, :2].T + matrix[:, 2]
    target = (1.0 - weight) * lm_a + weight * lm_b_in_a
    warped_a = piecewise_affine(image_a, lm_a, target).astype(np.float32)
    warped_b = piecewise_affine(b_in_a, lm_b_in_a, target).astype(np.float32)
    iod = float(np.linalg.norm(target[EYE_CORNERS[0]] - target[EYE_CORNERS[2]]))
    alpha = face_mask(target, size, 0.12 * iod)[..., None] * np.float32(weight)
    out = warped_a * (1.0 - alpha) + warped_b * alpha
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _shape_targets(lm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Landmarks moved by one random face shape: smooth displacements around the eyes, nose,
    mouth, jaw and chin (fractions of the inter-ocular distance)."""
    eye_l, eye_r = lm[list(EYE_CORNERS[:2])].mean(axis=0), lm[list(EYE_CORNERS[2:])].mean(axis=0)
    iod = float(np.linalg.norm(eye_r - eye_l))
    mid_x = float((eye_l[0] + eye_r[0]) / 2)
    mouth = lm[list(CORNER_L[:1] + CORNER_R[:1])].mean(axis=0)
    chin_y = float(lm[list(CHIN)][:, 1].max())
    nose = lm[NOSE_TIP[0]]
    out = lm.astype(np.float64).copy()

    def near(point: np.ndarray, radius: float) -> np.ndarray:
        return np.exp(-((lm - point) ** 2).sum(axis=1) / (2 * (radius * iod) ** 2))

    spacing = rng.uniform(-0.06, 0.06) * iod
    side = np.sign(lm[:, 0] - mid_x)
    out[:, 0] += spacing * side * np.maximum(near(eye_l, 0.35), near(eye_r, 0.35))
    out[:, 1] += rng.uniform(-0.06, 0.08) * iod * near(nose, 0.25)
    width = rng.uniform(0.9, 1.1)
    out[:, 0] += (lm[:, 0] - mouth[0]) * (width - 1.0) * near(mouth, 0.45)
    out[:, 1] += rng.uniform(-0.05, 0.05) * iod * near(mouth, 0.45)
    below = np.clip((lm[:, 1] - mouth[1]) / max(chin_y - mouth[1], 1.0), 0.0, 1.0)
    out[:, 0] += (lm[:, 0] - mid_x) * (rng.uniform(0.93, 1.07) - 1.0) * below
    out[:, 1] += rng.uniform(-0.05, 0.06) * iod * below
    out[:, 0] = mid_x + (out[:, 0] - mid_x) * rng.uniform(0.94, 1.06)
    return out


def _recolour(image: np.ndarray, lm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """White balance, gamma and saturation over the whole image; a skin-tone shift on
    skin-coloured pixels (face, neck, ears: those near the face's mean colour)."""
    import cv2

    x = image.astype(np.float32) / 255.0
    gains = rng.uniform(0.9, 1.1, size=3).astype(np.float32)
    x = np.clip(x * (gains / gains.mean()), 0.0, 1.0) ** np.float32(rng.uniform(0.85, 1.15))
    lab = cv2.cvtColor(x, cv2.COLOR_BGR2LAB)
    mask = face_mask(lm, image.shape[0], 2.0) > 0.5
    skin_ab = lab[..., 1:][mask].mean(axis=0) if mask.any() else np.zeros(2, np.float32)
    dist2 = ((lab[..., 1:] - skin_ab) ** 2).sum(axis=-1)
    skin = (np.exp(-dist2 / (2 * 12.0**2)) * (lab[..., 0] > 15)).astype(np.float32)
    shift = np.array([rng.uniform(-8, 8), rng.uniform(-5, 5), rng.uniform(-7, 7)], np.float32)
    lab += skin[..., None] * shift
    lab[..., 1:] *= np.float32(rng.uniform(0.8, 1.2))
    out = cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


def jittered(image: np.ndarray, landmarks: np.ndarray, seed: int) -> np.ndarray:
    """A new-looking face from one: a random face shape (landmark-driven warp) and colour."""
    rng = np.random.default_rng([int(seed), 77])
    target = _shape_targets(landmarks, rng)
    warped = piecewise_affine(image, landmarks, target)
    return _recolour(warped, target, rng)
