"""The streaming merger against an oracle written from its documented rules (not from its code):
the committed scores slot by slot, and the events the decision rules make of them. merge_offline,
the offline driver, must agree with both."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from test_merger import check_event_grammar, random_track

from fesnet.model.merger import IntervalMerger, MergerConfig, MergerEvent, merge_offline

NEUTRAL = np.array([1.0, 0.0, 0.0], np.float32)


def oracle_fused(starts: list[int], probs: list[np.ndarray], cfg: MergerConfig) -> np.ndarray:
    """The committed scores, slot by slot, written from the merger's documented rules (not from
    its code): slot ``s`` is committed when the first window starting after it arrives (before
    that window counts) or once a window's newest slot is ``commit_lag_frames`` past it (that
    window counts), else at the end. It fuses the windows that arrived until then: from their
    reliable positions if any (a window's last ``right_margin_frames`` are margin), else from the
    margin ones, else neutral. "mean" averages, "max" keeps the vector of largest p_ME + p_MaE
    (the earliest window on a tie), "latest" the newest window's."""
    t = cfg.window_frames
    fused = np.tile(NEUTRAL, (starts[-1] + t, 1))
    for slot in range(starts[0], len(fused)):
        arrived = len(starts)
        for k, start in enumerate(starts):
            if start > slot:
                arrived = k
                break
            if start + t - 1 - cfg.commit_lag_frames >= slot:
                arrived = k + 1
                break
        covering = [(k, slot - starts[k]) for k in range(arrived) if slot - starts[k] < t]
        reliable = [(k, i) for k, i in covering if i < t - cfg.right_margin_frames]
        use = [probs[k][i] for k, i in (reliable or covering)]
        if not use:
            continue
        if cfg.fusion == "mean":
            total = np.zeros(3, np.float64)
            for v in use:
                total += v
            fused[slot] = total / len(use)
        elif cfg.fusion == "max":
            best = use[0]
            for v in use[1:]:
                if float(v[1]) + float(v[2]) > float(best[1]) + float(best[2]):
                    best = v
            fused[slot] = best
        else:
            fused[slot] = use[-1]
    return fused


def decisions(fused: np.ndarray, cfg: MergerConfig) -> list[tuple]:
    """The interval decisions on a committed score sequence: the same settings, fed with windows
    that each cover their slots alone (nothing to fuse, no margin, no lag), so only the
    hysteresis / gap / duration rules act on the scores."""
    t = cfg.window_frames
    plain = replace(cfg, right_margin_frames=0, commit_lag_frames=0, fusion="latest")
    starts = list(range(0, len(fused) - t + 1, t))
    if starts[-1] != len(fused) - t:
        starts.append(len(fused) - t)
    events, replayed = merge_offline(starts, [fused[s : s + t] for s in starts], plain)
    np.testing.assert_array_equal(replayed, fused)
    return [dropped_latency(e) for e in events]


def dropped_latency(e: MergerEvent) -> tuple:
    """An event without ``emitted_at_slot`` (when it was decided depends on the commit lag)."""
    return (e.state, e.label, e.onset_slot, e.apex_slot, e.offset_slot, e.score)


@pytest.mark.parametrize("seed", range(6))
def test_streaming_matches_an_oracle_of_the_documented_rules(seed: int) -> None:
    """Irregular window starts (sometimes wider than the window: gaps), noisy windows, random
    settings; the stream drained at random moments. The fused scores must be what the rules say,
    and the events what the decision rules make of those scores; merge_offline (the offline
    driver) must agree with both."""
    rng = np.random.default_rng(seed)
    fusion = ("mean", "max", "latest")[seed % 3]
    cfg = MergerConfig(
        window_frames=16,
        right_margin_frames=int(rng.integers(0, 4)),
        commit_lag_frames=int(rng.integers(4, 12)),
        fusion=fusion,
        min_expression_frames=int(rng.integers(1, 8)),
        gap_merge_s=float(rng.choice([0.0, 0.05, 0.1])),
        max_expression_s=float(rng.choice([0.5, 5.0])),
    )
    n = 1500
    tr = random_track(rng, n)
    starts, s = [], int(rng.integers(0, 5))
    while s + 16 <= n:
        starts.append(s)
        s += int(rng.choice([1, 4, 8, 8, 8, 20]))
    probs = []
    for st in starts:
        w = tr[st : st + 16].copy()
        w[:, 1:] = np.clip(w[:, 1:] + rng.normal(0, 0.05, (16, 2)), 0, 0.5)
        w[:, 0] = 1 - w[:, 1:].sum(axis=1)
        probs.append(w.astype(np.float32))
    want_fused = oracle_fused(starts, probs, cfg)
    want_events = decisions(want_fused, cfg)
    assert sum(e[0] == "final" for e in want_events) >= 5  # the comparison is not vacuous

    m = IntervalMerger(cfg)
    events: list[MergerEvent] = []
    fused = np.tile(NEUTRAL, (starts[-1] + 16, 1))
    for st, p in zip(starts, probs, strict=True):
        events += m.update(st, p)
        if rng.uniform() < 0.3:  # a driver may drain whenever it likes
            first, scores = m.drain_committed()
            fused[first : first + len(scores)] = scores
    events += m.flush()
    first, scores = m.drain_committed()
    fused[first : first + len(scores)] = scores

    np.testing.assert_array_equal(fused, want_fused)
    assert [dropped_latency(e) for e in events] == want_events
    check_event_grammar(events, cfg)
    for e in events:  # decided no earlier than the slots it reports were committed
        assert e.emitted_at_slot >= (e.offset_slot if e.offset_slot is not None else e.onset_slot)
    offline_events, offline_fused = merge_offline(starts, probs, cfg)
    np.testing.assert_array_equal(offline_fused, want_fused)
    assert [dropped_latency(e) for e in offline_events] == want_events


def test_the_oracle_sees_a_window_the_stream_ignores() -> None:
    """A window that arrives after its slots were committed must not count: the oracle says
    which one, and the stream agrees (had it counted, the fused score of slot 3 would move)."""
    cfg = MergerConfig(window_frames=8, right_margin_frames=0, commit_lag_frames=2,
                       fusion="mean")
    a = np.tile(np.array([0.9, 0.05, 0.05], np.float32), (8, 1))
    b = np.tile(np.array([0.1, 0.45, 0.45], np.float32), (8, 1))
    # Window 0 (slots 0-7) commits slots 0-5 at once (lag 2); window 1 starts at 3: its scores
    # for slots 3-5 arrive too late.
    fused = oracle_fused([0, 3], [a, b], cfg)
    np.testing.assert_array_equal(fused[3], a[0])
    np.testing.assert_allclose(fused[6], (a[0] + b[0]) / 2)
    _, streamed = merge_offline([0, 3], [a, b], cfg)
    np.testing.assert_array_equal(streamed, fused)
