"""Shared test fixtures: small, CPU-only, offline. Add generic fixtures here; keep them cheap."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
FACES_DIR = REPO_ROOT / "model" / "data" / "faces"


@pytest.fixture(autouse=True, scope="session")
def _ctrl_c_reaches_children() -> None:
    """Tests press Ctrl-C (SIGINT) on the programs they start and expect what a user at a
    terminal gets. A test run started in the background (``cmd &`` in a script, nohup) has
    SIGINT ignored, every child inherits that, and Python then installs no KeyboardInterrupt
    handler: such a child ignores Ctrl-C except inside the blocks that set a handler of their
    own, and those tests failed by timing. A Python handler here is reset to the default in
    each child, which then gets Python's usual handler."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True, scope="session")
def _single_torch_thread() -> None:
    """The test machines have 2 shared cores: keep torch (if installed and used) on one."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    """Folder of the shipped real identity images (256x256 BGR JPEGs)."""
    return FACES_DIR


@pytest.fixture(scope="session")
def real_face_bgr(faces_dir: Path) -> np.ndarray:
    """A real, frontal face photo (256x256 BGR uint8) shipped with the project."""
    import cv2

    image = cv2.imread(str(faces_dir / "door-man.jpg"), cv2.IMREAD_COLOR)
    assert image is not None
    return image


@pytest.fixture(scope="session")
def still_aligner() -> Iterator[object]:
    """A real mediapipe FaceAligner for unrelated still images (static_image_mode=True).

    Session-scoped: building the FaceMesh graph costs ~100 ms. Call ``reset()`` before use when
    the test depends on which face is tracked.
    """
    from fesnet.model.data.align import FaceAligner

    with FaceAligner(static_image_mode=True, max_faces=2) as aligner:
        yield aligner


@pytest.fixture(scope="session")
def two_identities() -> list[object]:
    """One train and one test synthetic identity (real faces with FaceMesh landmarks)."""
    from fesnet.model.data.identities import load_identities, train_test_identities

    train, test = train_test_identities()
    return load_identities([train[0], test[-1]])


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def tiny_runtime(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random FESNet on torch, loaded as every program loads a model (the viewers' hub
    is made from it: ``SpotHub.from_runtime``)."""
    import torch

    from fesnet.model import checkpoint
    from fesnet.model.fesnet import FESNet, FESNetConfig
    from fesnet.model.runtime import RuntimeConfig, load_runtime

    torch.manual_seed(0)
    path = checkpoint.save(tmp_path_factory.mktemp("ckpt") / "tiny.pt", FESNet(FESNetConfig.tiny()))
    return load_runtime(RuntimeConfig(path, "torch"))


@pytest.fixture()
def loopback_ice():
    """ICE on 127.0.0.1 only (no network interfaces, no STUN). Use in WebRTC test modules with
    ``pytestmark = pytest.mark.usefixtures("loopback_ice")``."""
    from unittest import mock

    import aioice.ice

    def loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"]

    with mock.patch.object(aioice.ice, "get_host_addresses", loopback):
        yield
