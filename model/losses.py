"""FESNet losses: L = w_lsdm * L_LSDM + L_CE (weighted) + gamma * L_smooth (paper Eq. 3-5).

Readings of the paper (see docs/PAPER_NOTES.md):
- L_LSDM (Eq. 3) is printed as -1 / log sqrt(sum(x'' - M(x''))). A plain sum of deviations from
  the mean is identically zero, so we read it as a deviation: s = sqrt(mean((x'' - M_t(x''))^2)),
  the RMS deviation of x'' over the window's frames (M_t = mean over time per channel/position).
  -1/log(s) is singular at s = 1 and changes sign there; we use the monotone, bounded-domain form
  -1 / log(s / (1 + s)), which is positive, increases with s, and -> 0 as s -> 0. Minimising it
  "reduces the deviation within spatial static features", as the paper says it should.
- L_CE uses w_c = inverse class frequency of the training set, applied to every frame-level
  proposal the network keeps (spatial, temporal, and each refinement layer), averaged.
- L_smooth (Eq. 4) is the mean squared difference of consecutive frames' softmax probabilities,
  averaged over the S*5 refinement proposals (the MTAM proposals), weighted by gamma = 0.15.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .fesnet import WindowOutput


@dataclass(frozen=True)
class LossConfig:
    gamma_smooth: float = 0.15
    lsdm_weight: float = 1.0


def lsdm_loss(x_dd: torch.Tensor) -> torch.Tensor:
    """x_dd (B, T, C, h, w) -> scalar: -1 / log(s / (1 + s)), s = RMS temporal deviation."""
    dev = x_dd - x_dd.mean(dim=1, keepdim=True)
    s = torch.sqrt(dev.pow(2).mean() + 1e-12)
    return -1.0 / torch.log(s / (1.0 + s))


def weighted_ce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """logits (B, T, 3), labels (B, T) int64, weights (3,) -> scalar."""
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), weight=weights)


def smooth_loss(proposals: list[torch.Tensor]) -> torch.Tensor:
    """Mean squared difference of consecutive frames' probabilities, averaged over proposals."""
    terms = []
    for p in proposals:
        prob = F.softmax(p, dim=-1)  # (B, T, 3)
        terms.append((prob[:, 1:] - prob[:, :-1]).pow(2).mean())
    return torch.stack(terms).mean()


def fesnet_loss(
    out: WindowOutput, labels: torch.Tensor, class_weights: torch.Tensor, cfg: LossConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its parts (as floats, for logging)."""
    ce = torch.stack([weighted_ce(p, labels, class_weights) for p in out.proposals]).mean()
    sm = smooth_loss(out.refine_proposals)
    ls = lsdm_loss(out.x_dd)
    total = cfg.lsdm_weight * ls + ce + cfg.gamma_smooth * sm
    return total, {"loss": total.item(), "ce": ce.item(), "smooth": sm.item(), "lsdm": ls.item()}
