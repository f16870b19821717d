"""What a ``fesnet-spot run`` prints of its streams: each stream's summary, its interval F1 against
a ground truth, and the result of a stream, whether it ran in this process or on Ray."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class StreamResult:
    """How one stream of a run ended: its summary (None: nothing is known of it, it never
    started), its error (None: it ended normally or was stopped), and for a stream on Ray what
    crossed the wire."""

    stream: str
    summary: dict[str, Any] | None
    error: BaseException | None = None
    wire: dict[str, Any] = field(default_factory=dict)


def read_truth(path: Path) -> list[tuple[int, int, int]]:
    """Ground-truth intervals (source frames) from a JSON file; ValueError says why not."""
    try:
        doc = json.loads(path.read_text())
        return [(int(iv["onset"]), int(iv["offset"]), int(iv["label"])) for iv in doc["intervals"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"cannot read ground truth {path}: {e}") from e


def compare_with_truth(events: list[Any], truth: list[tuple[int, int, int]]) -> dict[str, Any]:
    """Per-class interval F1 (IoU >= 0.5) of final events against truth (source frames)."""
    from fesnet.model.metrics import match_intervals, spotting_f1

    pred = [
        (e.onset_frame, e.offset_frame, 1 if e.label == "ME" else 2)
        for e in events
        if e.type == "expression" and e.state in ("final", "interrupted")
    ]
    return spotting_f1([match_intervals(pred, truth)])


def format_comparison(counts: dict[str, Any]) -> str:
    lines = [f"{'class':<8}{'TP':>4}{'FP':>4}{'FN':>4}{'P':>7}{'R':>7}{'F1':>7}"]
    for name in ("ME", "MaE", "overall"):
        c = counts[name]
        lines.append(
            f"{name:<8}{c.tp:>4}{c.fp:>4}{c.fn:>4}{c.precision:>7.2f}{c.recall:>7.2f}{c.f1:>7.2f}"
        )
    return "\n".join(lines)


def _pct(summary: dict[str, Any], stage: str, key: str) -> str:
    s = summary["stages"].get(stage)
    return f"{s[key]:.1f} ms" if s else "n/a"


def format_summary(summary: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"source      {summary['source']}",
            f"frames      {summary['frames']} processed, {summary['dropped']} dropped, "
            f"{summary['fps']:.1f} frames/s over {summary['wall_s']:.1f} s",
            f"slots       {summary['slots']} at 60 Hz, {summary['encoded']} encoded, "
            f"{summary['windows']} windows",
            f"faces lost  {summary['faces_lost']}",
            f"expressions {summary['expressions_final']} final"
            + (" (stopped early: open intervals interrupted)" if summary["interrupted"] else ""),
            "latency     capture -> frame scores p50 "
            f"{_pct(summary, 'frame_score_latency', 'p50_ms')}, p99 "
            f"{_pct(summary, 'frame_score_latency', 'p99_ms')}; capture -> event p50 "
            f"{_pct(summary, 'event_latency', 'p50_ms')}, p99 "
            f"{_pct(summary, 'event_latency', 'p99_ms')}",
        ]
    )
