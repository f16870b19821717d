import numpy as np
import pytest
import torch

from fesnet.model.backends import TorchBackend
from fesnet.model.fesnet import FESNet, FESNetConfig
from fesnet.model.inference import gather_windows, predict_windows, spot_video, window_starts
from fesnet.model.merger import MergerConfig

torch.set_num_threads(1)


@pytest.mark.parametrize(
    ("n", "stride", "expected"),
    [
        (31, 8, []),  # shorter than a window: nothing to score
        (32, 8, [0]),
        (40, 8, [0, 8]),
        (45, 8, [0, 8, 13]),  # plus one window flush with the end
        (36, 16, [0, 4]),
    ],
)
def test_window_starts(n: int, stride: int, expected: list[int]) -> None:
    assert window_starts(n, 32, stride) == expected


def test_window_starts_rejects_bad_stride() -> None:
    with pytest.raises(ValueError, match="stride"):
        window_starts(100, 32, 0)


def test_gather_windows() -> None:
    feats = np.arange(50)[:, None]
    w = gather_windows(feats, [0, 10], 32)
    assert w.shape == (2, 32, 1)
    assert w[1, 0, 0] == 10 and w[1, -1, 0] == 41


def test_predict_windows_matches_per_window_forward() -> None:
    torch.manual_seed(0)
    net = FESNet(FESNetConfig.tiny()).eval()
    crops = np.random.default_rng(0).integers(0, 256, (50, 112, 112, 3), dtype=np.uint8)
    starts, probs = predict_windows(TorchBackend(net), crops, 32, 8)
    assert starts == [0, 8, 16, 18]
    with torch.no_grad():
        ref = torch.softmax(net(torch.from_numpy(crops[16:48])[None]), -1)[0].numpy()
    assert np.abs(probs[2] - ref).max() <= 1e-5
    assert np.allclose(probs.sum(-1), 1, atol=1e-5)


def test_spot_video_returns_per_slot_scores() -> None:
    net = FESNet(FESNetConfig.tiny()).eval()
    crops = np.random.default_rng(1).integers(0, 256, (64, 112, 112, 3), dtype=np.uint8)
    pred = spot_video(TorchBackend(net), crops, MergerConfig(), stride_frames=8)
    assert pred.fused_scores.shape == (64, 3)
    assert all(on <= off for on, off, _ in pred.intervals)
