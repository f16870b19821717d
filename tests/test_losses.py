import math

import torch

from fesnet.model.losses import lsdm_loss, smooth_loss, weighted_ce


def test_lsdm_loss_is_positive_and_grows_with_deviation() -> None:
    still = torch.ones(1, 8, 4, 3, 3)
    small = still + 0.01 * torch.randn(1, 8, 4, 3, 3)
    large = still + 1.0 * torch.randn(1, 8, 4, 3, 3)
    # s -> 0: loss -> 0+ (logarithmically: s = 1e-6 from the epsilon gives 1/log(1e6) = 0.072)
    assert 0 < lsdm_loss(still).item() < 0.08
    assert lsdm_loss(still).item() < lsdm_loss(small).item() < lsdm_loss(large).item()


def test_lsdm_loss_value_by_hand() -> None:
    # two frames, one value each: 0 and 2 -> deviations -1, +1 -> s = 1 -> -1/log(1/2)
    x = torch.tensor([0.0, 2.0]).reshape(1, 2, 1, 1, 1)
    assert math.isclose(lsdm_loss(x).item(), 1 / math.log(2), rel_tol=1e-5)


def test_smooth_loss_zero_for_constant_and_positive_for_flicker() -> None:
    const = torch.zeros(1, 6, 3)
    flicker = torch.tensor([[[5.0, 0, 0], [0, 5.0, 0]] * 3])
    assert smooth_loss([const]).item() == 0
    assert smooth_loss([flicker]).item() > 0.5


def test_weighted_ce_weights_rare_class() -> None:
    logits = torch.zeros(1, 4, 3)
    labels = torch.tensor([[0, 0, 0, 1]])
    w = torch.tensor([1.0, 10.0, 1.0])
    # uniform logits: every frame's CE is log 3 whatever the weights (weighted mean)
    assert math.isclose(weighted_ce(logits, labels, w).item(), math.log(3), rel_tol=1e-5)
