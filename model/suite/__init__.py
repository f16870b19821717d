"""An independent evaluation suite: webcam-like clips made by a renderer that shares no code with
the training data path (docs/SUITE.md).

The training generator (model/data/synthetic.py and its helpers) warps images with its own
action-unit model; a held-out split drawn from it measures how well the network fits that
generator. This package is a second, separate world: piecewise-affine warps over mediapipe's
FaceMesh triangulation of six faces no training video uses, its own region templates, temporal
profiles, head rotation of the 3D mesh, talking and blinks as neutral distractors, and a webcam
camera model (exposure steps, mains flicker, sensor noise, H.264 at webcam bitrates, 30 and 60
FPS, 640x480 and 1280x720). ``tests/test_suite_render.py`` checks that no module here imports
the training generator, its identities or its landmark groups.

Modules: ``stills`` (the six faces and their 3D meshes), ``mesh`` (triangulation and the
piecewise-affine renderer), ``regions`` (face regions and expression templates), ``motion``
(timelines: expressions, distractors, head pose, labels), ``camera`` (scene, exposure, noise,
encoding), ``clips`` (the suite's clips, rendering and the cache), ``real`` (unlabelled real
clips). Scoring through the product's own path lives in ``fesnet.model.suite_eval``.
"""

RENDER_VERSION = 1
"""Bumped whenever a change alters any rendered byte of an existing clip: rendered clips, their
seeds and the aligned caches are keyed by it."""
SUITE_VERSION = 2
"""The clip list: v1 is the 12 "subtle" clips, v2 adds 8 "clear" ones (``clips.suite_clips``).
A new stratum of clips bumps it; the clips already there keep their bytes and caches."""
