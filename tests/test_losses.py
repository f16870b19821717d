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
    """The one ME frame is scored wrong with confidence, the three neutral frames right: a
    weight of 10 on ME must raise the loss towards that frame's CE, a weight of 1 must not."""
    logits = torch.tensor([[[4.0, 0, 0], [4.0, 0, 0], [4.0, 0, 0], [4.0, 0, 0]]])
    labels = torch.tensor([[0, 0, 0, 1]])
    right = -torch.log_softmax(logits[0, 0], dim=0)[0].item()  # CE of a neutral frame
    wrong = -torch.log_softmax(logits[0, 3], dim=0)[1].item()  # CE of the ME frame
    plain = weighted_ce(logits, labels, torch.ones(3)).item()
    heavy = weighted_ce(logits, labels, torch.tensor([1.0, 10.0, 1.0])).item()
    # weighted mean: sum_i w_i CE_i / sum_i w_i
    assert math.isclose(plain, (3 * right + wrong) / 4, rel_tol=1e-5)
    assert math.isclose(heavy, (3 * right + 10 * wrong) / 13, rel_tol=1e-5)
    assert heavy > 2 * plain
