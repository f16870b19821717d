"""Timeline plot: per-slot ME / MaE probabilities, detected intervals shaded, ground truth below."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

COLORS = {"ME": "tab:orange", "MaE": "tab:blue"}


def timeline_png(
    path: str | Path,
    pts_s: np.ndarray,
    scores: np.ndarray,
    detected: Sequence[tuple[float, float, str]] = (),
    truth: Sequence[tuple[float, float, str]] | None = None,
    title: str = "",
    on_threshold: float | None = None,
) -> Path:
    """Write a PNG. ``scores`` (N, 3) fused per-slot probabilities at times ``pts_s`` (N,);
    intervals are (start_s, end_s, "ME" | "MaE") on the same (source) timeline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = 2 if truth is not None else 1
    fig, axes = plt.subplots(
        rows, 1, figsize=(12, 3.2 + 0.8 * (rows - 1)), sharex=True, squeeze=False,
        gridspec_kw={"height_ratios": [4, 1][:rows]},
    )
    ax = axes[0, 0]
    if len(pts_s):
        ax.plot(pts_s, scores[:, 1], color=COLORS["ME"], lw=1.2, label="p(ME)")
        ax.plot(pts_s, scores[:, 2], color=COLORS["MaE"], lw=1.2, label="p(MaE)")
        ax.plot(pts_s, scores[:, 1] + scores[:, 2], color="0.4", lw=0.8, ls=":", label="p(ME+MaE)")
    if on_threshold is not None:
        ax.axhline(on_threshold, color="0.6", lw=0.8, ls="--")
    for i, (a, b, label) in enumerate(detected):
        ax.axvspan(a, b, color=COLORS.get(label, "0.5"), alpha=0.2,
                   label=f"detected {label}" if i == 0 else None)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("probability")
    ax.legend(loc="upper right", fontsize=8, ncol=4)
    ax.set_title(title or "FESNet per-slot scores (source timeline)")
    if truth is not None:
        tax = axes[1, 0]
        for a, b, label in truth:
            tax.axvspan(a, b, color=COLORS.get(label, "0.5"), alpha=0.6)
            tax.text((a + b) / 2, 0.5, label, ha="center", va="center", fontsize=8)
        tax.set_yticks([])
        tax.set_ylabel("truth")
    axes[-1, 0].set_xlabel("time on the source timeline (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
