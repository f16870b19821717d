"""A short training run on a learnable toy set lowers the loss, through the real train_step."""

import random

import numpy as np
import pytest
import torch
from toy_videos import toy_video, with_landmarks

from fesnet.model.fesnet import FESNet, FESNetConfig
from fesnet.model.losses import LossConfig
from fesnet.model.sampling import class_weights
from fesnet.model.train import TrainConfig, augment, clip_batch, train_step

torch.set_num_threads(1)


def test_class_weights_are_inverse_frequency() -> None:
    w = class_weights([toy_video(0)])
    counts = np.array([90, 20, 50])
    expected = (160 / counts) / (160 / counts).mean()
    assert np.allclose(w.numpy(), expected, rtol=1e-5)


def test_class_weights_follow_the_clips_training_draws() -> None:
    """Clips are placed over expressions with probability ``expression_fraction``: the
    weights must come from those clips' labels, not from the whole videos."""
    videos = [toy_video(0)]
    uniform = class_weights(videos, clip_frames=160, samples=50)  # every clip = the whole video
    assert np.allclose(uniform.numpy(), class_weights(videos).numpy(), rtol=1e-5)
    oversampled = class_weights(videos, clip_frames=40, expression_fraction=1.0, samples=500)
    placed_anywhere = class_weights(videos, clip_frames=40, expression_fraction=0.0, samples=500)
    # Expression-centred clips hold fewer neutral frames: neutral weighs more, ME less
    # (measured 0.445 vs 0.326).
    assert oversampled[0] / oversampled[1] > 1.25 * placed_anywhere[0] / placed_anywhere[1]


def test_augment_changes_the_look_but_not_the_motion() -> None:
    """A still clip stays still (one transform per clip), while clips get different room gains
    and side lights: left/right brightness ratios spread around 1."""
    frame = np.full((112, 112, 3), 120, np.uint8)
    still = np.stack([frame] * 8)
    rng = random.Random(0)
    ratios, means = [], []
    for _ in range(40):
        out = augment(still, rng)
        assert out.shape == still.shape and out.dtype == np.uint8
        assert (out == out[0]).all()
        left, right = out[0, :, :20].mean(), out[0, :, -20:].mean()
        ratios.append(left / right)
        means.append(out.mean())
    assert min(ratios) < 0.8 and max(ratios) > 1.25
    assert min(means) < 85 and max(means) > 145


@pytest.mark.slow
def test_short_training_run_lowers_the_loss() -> None:
    """60 steps on three fixed toy batches roughly halve the CE loss. The bound leaves a wide
    margin on purpose: float paths differ between CPUs, and measured ratios (last 6 steps over
    first 6) on three seeds were 0.33-0.52 at step 60, while at step 40 one seed sat at 0.706
    against the old bound of 0.7 and failed on another machine of the same kind."""
    torch.manual_seed(0)
    net = FESNet(FESNetConfig.tiny()).train()
    videos = [toy_video(0), toy_video(1)]
    cfg = TrainConfig(model="tiny", clips_per_step=2, clip_frames=48, stride_frames=8)
    weights = class_weights(videos)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    rng = random.Random(0)
    fixed = [clip_batch(videos, cfg, 32, rng)[:3] for _ in range(3)]
    losses = []
    for step in range(60):
        x, y, starts = fixed[step % 3]
        loss, parts = train_step(net, x, y, starts, weights, LossConfig())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(parts["ce"])
    assert all(np.isfinite(losses))
    assert np.mean(losses[-6:]) < 0.8 * np.mean(losses[:6]), losses


@pytest.mark.slow
def test_head_stage_adds_geometry_freezes_the_encoder_and_trains_the_head(
    tmp_path, two_identities
) -> None:
    from fesnet.model import checkpoint
    from fesnet.model.geometry import GEOMETRY_DIMS
    from fesnet.model.train import run_head_stage

    base = two_identities[0].landmarks * (112 / 256)  # a real face shape at crop scale
    torch.manual_seed(0)
    net = FESNet(FESNetConfig.tiny())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    videos = [with_landmarks(toy_video(i), base, i) for i in range(3)]
    cfg = TrainConfig(model="tiny", threads=1)
    path = run_head_stage(net, cfg, videos[:2], videos[2:], tmp_path, {"data": "toy"},
                          minutes=0.05, geometry=True, feature_cache=tmp_path / "features")
    loaded = checkpoint.load(path)
    after = loaded.net.state_dict()
    assert loaded.config.geometry_dims == GEOMETRY_DIMS and "geometry" in loaded.meta
    enc = [k for k in before if k.startswith("encoder.") and before[k].is_floating_point()]
    head = [k for k in before if k.startswith("mtam.stages") and k.endswith("weight")]
    assert all(torch.equal(before[k], after[k]) for k in enc)
    assert any(not torch.equal(before[k], after[k]) for k in head)
    assert any(after[k].abs().sum() > 0 for k in after if k.startswith("geometry."))
    assert loaded.meta["stages"]["head_steps"] > 0
    assert list((tmp_path / "features").glob("*.npy"))  # encoder features cached for reruns


def test_cached_encoder_features_follow_the_crops_not_only_the_video_id(tmp_path) -> None:
    """The same video aligned otherwise (same id, other crops) is encoded again, not served the
    first alignment's features from the cache."""
    from dataclasses import replace

    from fesnet.model.head import feature_videos

    torch.manual_seed(0)
    net = FESNet(FESNetConfig.tiny()).eval()
    first = toy_video(0, n=40)
    other = replace(first, crops=np.ascontiguousarray(first.crops[:, :, ::-1]))
    cache = tmp_path / "features"
    (a,) = feature_videos(net, [first], None, cache)
    (b,) = feature_videos(net, [other], None, cache)
    (fresh,) = feature_videos(net, [other], None, None)
    assert not np.array_equal(np.asarray(a.x_prime), np.asarray(b.x_prime))
    np.testing.assert_array_equal(np.asarray(b.x_prime), fresh.x_prime)
    (again,) = feature_videos(net, [first], None, cache)
    np.testing.assert_array_equal(np.asarray(again.x_prime), np.asarray(a.x_prime))
    assert len(list(cache.glob("*.npy"))) == 4
