"""The benchmark report as one PNG: throughput per backend, cached vs naive windows, ours vs the
optical-flow input stage, and the pipeline's stage timings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def plot(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    runs = report.get("backends", [])
    labels = [f"{r['backend']}\n{r['threads']}t" for r in runs]
    ax = axes[0, 0]
    x = np.arange(len(runs))
    ax.bar(x - 0.2, [r["encoder_frames_per_s"] for r in runs], 0.4, label="encoder frames/s")
    ax.bar(x + 0.2, [r["windows_per_s"]["1"] for r in runs], 0.4, label="window heads/s (B=1)")
    ax.set_xticks(x, labels)
    ax.set_yscale("log")
    ax.set_title("model throughput per backend")
    ax.legend()
    ax = axes[0, 1]
    ax.bar(x - 0.2, [r["cached_window_ms"] for r in runs], 0.4, label="cached features")
    ax.bar(x + 0.2, [r["naive_window_ms"] for r in runs], 0.4, label="naive re-encode")
    ax.set_xticks(x, labels)
    ax.set_ylabel("ms per window")
    ax.set_title(f"cached vs naive (stride {report['model']['stride_frames']})")
    ax.legend()
    ax = axes[1, 0]
    names = [f"ours {r['backend']} {r['threads']}t" for r in runs]
    fps = [r["stream_frames_per_s"] for r in runs]
    for f in report.get("optical_flow", []):
        names.append(f"{f['method']} flow")
        fps.append(f["frames_per_s"])
    ax.barh(np.arange(len(fps)), fps, color=["C0"] * len(runs) + ["C3"] * (len(fps) - len(runs)))
    ax.set_yticks(np.arange(len(fps)), names)
    ax.axvline(60, color="k", ls="--", lw=1, label="60 FPS")
    ax.set_xscale("log")
    ax.set_xlabel("frames/s (per-frame cost)")
    ax.set_title("ours vs optical-flow input stage")
    ax.legend()
    ax = axes[1, 1]
    e2e = report.get("end_to_end")
    if isinstance(e2e, list) and e2e:
        stages = sorted({s for r in e2e for s in r.get("stages", {})})
        for j, r in enumerate(e2e):
            p50 = [r["stages"].get(s, {}).get("p50_ms", 0) for s in stages]
            p99 = [r["stages"].get(s, {}).get("p99_ms", 0) for s in stages]
            xs = np.arange(len(stages)) + j * 0.8 / len(e2e)
            ax.bar(xs, p99, 0.8 / len(e2e), alpha=0.35, color=f"C{j}")
            ax.bar(xs, p50, 0.8 / len(e2e), color=f"C{j}", label=f"{r['backend']} x{r['streams']}")
        ax.set_xticks(np.arange(len(stages)), stages, rotation=20)
        ax.set_ylabel("ms (solid p50, light p99)")
        ax.set_title("pipeline stages")
        ax.legend()
    else:
        reason = e2e.get("skipped", "") if isinstance(e2e, dict) else ""
        ax.text(0.5, 0.5, f"end to end not run\n{reason}", ha="center", va="center", wrap=True)
        ax.set_axis_off()
    fig.suptitle(f"fesnet-bench {report['started'][:19]}  ({report['machine']['processor']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
