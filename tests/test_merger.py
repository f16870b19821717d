"""IntervalMerger on hand-built probability tracks: exact intervals, hysteresis, gap merging,
duration relabelling, cancelled onsets, fusion, right margin, gaps, commit lag, bounded memory,
and config round-trip (streaming against an oracle of the documented rules:
test_merger_oracle.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fesnet.model.merger import (
    ConfigError,
    IntervalMerger,
    MergerConfig,
    MergerEvent,
    events_to_intervals,
    merge_offline,
)

T = 8
# Small windows, realistic margin/lag; other fields at their defaults (60 fps, on 0.5, off 0.3,
# min 6 frames, ME <= 0.5 s, MaE >= 0.5 s, gap 0.1 s = 6 frames, max 5 s).
CFG = MergerConfig(window_frames=T, right_margin_frames=2, commit_lag_frames=4)


def track(n: int, segments: list[tuple[int, int, float, float]]) -> np.ndarray:
    """(n, 3) per-slot probabilities: neutral, except inclusive (a, b, p_me, p_mae) segments."""
    out = np.tile(np.array([1.0, 0.0, 0.0], np.float32), (n, 1))
    for a, b, p_me, p_mae in segments:
        out[a : b + 1] = (1.0 - p_me - p_mae, p_me, p_mae)
    return out


def windows(tr: np.ndarray, t: int = T, stride: int = 1) -> tuple[list[int], list[np.ndarray]]:
    """Windows that all agree with the track (so fusion cannot matter), last one flush."""
    starts = list(range(0, len(tr) - t + 1, stride))
    if starts[-1] != len(tr) - t:
        starts.append(len(tr) - t)
    return starts, [tr[s : s + t] for s in starts]


def spot(tr: np.ndarray, cfg: MergerConfig = CFG, stride: int = 1) -> list[MergerEvent]:
    starts, probs = windows(tr, cfg.window_frames, stride)
    events, fused = merge_offline(starts, probs, cfg)
    np.testing.assert_array_equal(fused, tr)
    return events


def states(events: list[MergerEvent]) -> list[tuple[str, int, int, int | None]]:
    return [(e.state, e.label, e.onset_slot, e.offset_slot) for e in events]


def test_step_functions_give_exact_intervals() -> None:
    # ME-scored 20 frames (<= 30: stays ME), MaE-scored 40 frames (>= 30: stays MaE).
    tr = track(160, [(20, 39, 0.9, 0.05), (80, 119, 0.1, 0.8)])
    events = spot(tr, stride=3)
    assert states(events) == [
        ("onset", 1, 20, None),
        ("final", 1, 20, 39),
        ("onset", 2, 80, None),
        ("final", 2, 80, 119),
    ]
    assert events_to_intervals(events) == [(20, 39, 1), (80, 119, 2)]
    final_me = events[1]
    assert final_me.apex_slot == 20  # flat track: the first maximum
    assert final_me.score == pytest.approx(0.95)  # mean p_ME + p_MaE


def test_apex_and_score() -> None:
    tr = track(80, [(10, 49, 0.1, 0.6), (30, 30, 0.05, 0.9)])
    final = spot(tr)[-1]
    assert (final.label, final.apex_slot) == (2, 30)
    # 39 slots of 0.7 and one of 0.95 -> mean p_expr.
    assert final.score == pytest.approx((39 * 0.7 + 0.95) / 40)


def test_apex_ignores_float_noise_on_a_plateau() -> None:
    """A plateau whose later slot is higher only by inference noise (5e-5 < APEX_TOL) keeps the
    first slot as apex; a real rise (3e-4) moves it."""
    noise = track(80, [(10, 49, 0.1, 0.6), (20, 20, 0.05, 0.8), (35, 35, 0.05, 0.80005)])
    assert spot(noise)[-1].apex_slot == 20
    rise = track(80, [(10, 49, 0.1, 0.6), (20, 20, 0.05, 0.8), (35, 35, 0.05, 0.8003)])
    assert spot(rise)[-1].apex_slot == 35


def test_hysteresis_no_flicker_at_noisy_crossing() -> None:
    # p_expr alternates 0.55 / 0.45 around on_threshold 0.5 (never below off 0.3): one interval.
    noisy = [(s, s, 0.55 if s % 2 == 0 else 0.45, 0.0) for s in range(10, 40)]
    tr = track(70, noisy)
    cfg = replace(CFG, gap_merge_s=0.0)
    assert events_to_intervals(spot(tr, cfg)) == [(10, 39, 1)]  # 30 frames, ME-scored: ME
    # Without hysteresis (off == on) the same track splits into one-frame blips, all cancelled.
    flicker = spot(tr, replace(cfg, off_threshold=0.5))
    assert events_to_intervals(flicker) == []
    assert [e.state for e in flicker].count("cancelled") == 15


def test_gap_merging() -> None:
    cfg = replace(CFG, min_expression_frames=3)  # gap 0.1 s = 6 frames
    # Dip of 5 frames (30..34) < 6: one interval 10..49 (40 frames -> MaE by duration).
    short_dip = track(80, [(10, 29, 0.9, 0.0), (35, 49, 0.9, 0.0)])
    events = spot(short_dip, cfg)
    assert events_to_intervals(events) == [(10, 49, 2)]
    assert [e.state for e in events] == ["onset", "final"]  # one onset, no split
    # Dip of 6 frames (30..35): two intervals; the dip belongs to neither.
    long_dip = track(80, [(10, 29, 0.9, 0.0), (36, 49, 0.9, 0.0)])
    assert events_to_intervals(spot(long_dip, cfg)) == [(10, 29, 1), (36, 49, 1)]
    # A dip that rises only to between off and on (0.4) does not resume: still a dip.
    half = track(80, [(10, 29, 0.9, 0.0), (30, 35, 0.1, 0.0), (36, 36, 0.4, 0.0)])
    assert events_to_intervals(spot(half, cfg)) == [(10, 29, 1)]
    # gap_merge_s = 0: the first frame below off closes the interval.
    cfg0 = replace(cfg, gap_merge_s=0.0)
    one_frame_dip = track(80, [(10, 29, 0.9, 0.0), (31, 49, 0.9, 0.0)])
    assert events_to_intervals(spot(one_frame_dip, cfg0)) == [(10, 29, 1), (31, 49, 1)]


def test_a_long_expression_bridges_a_longer_dip() -> None:
    """mae_gap_merge_s: once an interval has lasted mae_min_s (30 frames) a dip of up to
    0.3 s (18 frames) is bridged; a younger interval still splits at gap_merge_s (6 frames)."""
    cfg = replace(CFG, min_expression_frames=3, mae_gap_merge_s=0.3)
    sag = track(200, [(10, 49, 0.0, 0.9), (60, 99, 0.0, 0.9)])  # 40 frames, dip 10, 40 frames
    assert events_to_intervals(spot(sag, cfg)) == [(10, 99, 2)]
    assert events_to_intervals(spot(sag, CFG)) == [(10, 49, 2), (60, 99, 2)]  # the default
    young = track(200, [(10, 29, 0.9, 0.0), (40, 49, 0.9, 0.0)])  # 20 frames, then a dip of 10
    assert events_to_intervals(spot(young, cfg)) == [(10, 29, 1), (40, 49, 1)]
    too_long = track(200, [(10, 49, 0.0, 0.9), (68, 99, 0.0, 0.9)])  # a dip of 18: split
    assert events_to_intervals(spot(too_long, cfg)) == [(10, 49, 2), (68, 99, 2)]
    with pytest.raises(ConfigError, match="mae_gap_merge_s"):
        replace(CFG, mae_gap_merge_s=0.05)


@pytest.mark.parametrize(
    ("n_frames", "p_me", "p_mae", "label"),
    [
        # At 60 fps an interval of n inclusive frames lasts n / 60 s; the boundary is 30 frames.
        (29, 0.9, 0.0, 1),  # ME-scored, 0.483 s: ME
        (30, 0.9, 0.0, 1),  # ME-scored, exactly 0.5 s: ME (ME <= 0.5 s)
        (31, 0.9, 0.0, 2),  # ME-scored, 0.517 s: relabelled MaE
        (29, 0.0, 0.9, 1),  # MaE-scored, 0.483 s: relabelled ME
        (30, 0.0, 0.9, 2),  # MaE-scored, exactly 0.5 s: MaE (MaE >= 0.5 s)
        (31, 0.0, 0.9, 2),
    ],
)
def test_duration_relabelling_boundary(
    n_frames: int, p_me: float, p_mae: float, label: int
) -> None:
    assert (CFG.me_max_frames, CFG.mae_min_frames) == (30, 30)
    tr = track(100, [(20, 20 + n_frames - 1, p_me, p_mae)])
    events = spot(tr)
    assert events[0].state == "onset"
    assert events[0].label == (2 if p_mae > p_me else 1)  # provisional: scores only
    assert events_to_intervals(events) == [(20, 20 + n_frames - 1, label)]
    assert events[-1].apex_slot == 20


def test_cancelled_onsets() -> None:
    # min 6 frames: a 5-frame blip opens (onset) and is withdrawn (cancelled, same onset).
    tr = track(60, [(20, 24, 0.0, 0.9), (40, 45, 0.9, 0.0)])
    events = spot(tr)
    assert states(events) == [
        ("onset", 2, 20, None),
        ("cancelled", 2, 20, 24),
        ("onset", 1, 40, None),
        ("final", 1, 40, 45),  # exactly 6 frames: kept
    ]
    assert events_to_intervals(events) == [(40, 45, 1)]


def test_max_expression_force_close_and_latch() -> None:
    cfg = replace(CFG, max_expression_s=0.5)  # 30 frames
    # High for 100 frames, then neutral, then high again.
    tr = track(200, [(10, 109, 0.0, 0.9), (130, 169, 0.0, 0.9)])
    events = spot(tr, cfg)
    # Force-closed at 30 frames; no new onset while still high (latched); reopens after the drop.
    assert events_to_intervals(events) == [(10, 39, 2), (130, 159, 2)]
    assert [e.state for e in events] == ["onset", "final", "onset", "final"]


def _fusion_windows(cfg: MergerConfig) -> tuple[np.ndarray, list[MergerEvent]]:
    # T = 4, no margin, lag 3 so slots 2, 3 are still open when window B arrives.
    a = np.tile(np.array([0.8, 0.2, 0.0], np.float32), (4, 1))  # slots 0..3
    b = np.tile(np.array([0.2, 0.0, 0.8], np.float32), (4, 1))  # slots 2..5
    events, fused = merge_offline([0, 2], [a, b], cfg)
    return fused, events


@pytest.mark.parametrize(
    ("fusion", "overlap"),
    [
        ("mean", [0.5, 0.1, 0.4]),  # (A + B) / 2
        ("max", [0.2, 0.0, 0.8]),  # B has the larger p_expr (0.8 > 0.2)
        ("latest", [0.2, 0.0, 0.8]),  # B arrived last
    ],
)
def test_fusion_policies(fusion: str, overlap: list[float]) -> None:
    cfg = MergerConfig(
        window_frames=4,
        right_margin_frames=0,
        commit_lag_frames=3,
        fusion=fusion,
        min_expression_frames=1,
    )
    fused, _ = _fusion_windows(cfg)
    np.testing.assert_allclose(fused[0:2], [[0.8, 0.2, 0.0]] * 2, atol=1e-7)
    np.testing.assert_allclose(fused[2:4], [overlap] * 2, atol=1e-7)
    np.testing.assert_allclose(fused[4:6], [[0.2, 0.0, 0.8]] * 2, atol=1e-7)
    assert fused.dtype == np.float32


def test_max_fusion_keeps_earlier_window_on_tie_and_a_distribution() -> None:
    cfg = MergerConfig(window_frames=2, right_margin_frames=0, commit_lag_frames=1, fusion="max")
    a = np.array([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]], np.float32)
    b = np.array([[0.5, 0.1, 0.4], [0.5, 0.1, 0.4]], np.float32)  # same p_expr 0.5
    _, fused = merge_offline([0, 1], [a, b], cfg)
    np.testing.assert_allclose(fused[1], [0.5, 0.3, 0.2])
    np.testing.assert_allclose(fused.sum(axis=1), 1.0, rtol=1e-6)


def test_default_lag_fuses_at_least_two_windows_at_stride_8() -> None:
    # Even windows say p_ME = 1, odd ones p_ME = 0: a slot fused ("mean") from two or more
    # consecutive windows gets a value strictly between 0 and 1, from one window exactly 0 or 1.
    cfg = MergerConfig()
    t = cfg.window_frames
    starts = list(range(0, 400, 8))
    probs = [np.tile(np.array([i % 2, 1 - i % 2, 0], np.float32), (t, 1)) for i in range(50)]
    m = IntervalMerger(cfg)
    fused = []
    for s, p in zip(starts, probs, strict=True):
        m.update(s, p)
        fused.append(m.drain_committed()[1])
    p_me = np.concatenate(fused)[t:, 1]  # from slot 32 on every slot has enough windows
    assert len(p_me) > 300
    assert ((p_me > 0) & (p_me < 1)).all()


def test_right_margin_used_only_when_nothing_better() -> None:
    cfg = MergerConfig(window_frames=4, right_margin_frames=1, commit_lag_frames=1)
    r = [0.9, 0.1, 0.0]  # reliable positions
    x = [0.0, 0.0, 1.0]  # margin (last) position: must not pollute reliable scores
    a = np.array([r, r, r, x], np.float32)  # slots 0..3, slot 3 at the margin
    b = np.array([r, r, r, x], np.float32)  # slots 1..4, slot 3 reliable, slot 4 margin
    m = IntervalMerger(cfg)
    m.update(0, a)
    m.update(1, b)
    first, scores = m.drain_committed()
    # Newest slot 4, lag 1: slots 0..3 committed; slot 3 from B's reliable score only.
    assert (first, len(scores)) == (0, 4)
    np.testing.assert_allclose(scores, [r] * 4)
    m.flush()  # slot 4 has only a margin score: used at flush
    first, scores = m.drain_committed()
    assert first == 4
    np.testing.assert_allclose(scores, [x])
    # A gap: the margin score of slot 3 is used because no later window covers slot 3;
    # slots 4..9 no window covers are neutral.
    m2 = IntervalMerger(cfg)
    m2.update(0, a)
    m2.update(10, np.array([r, r, r, r], np.float32))
    first, scores = m2.drain_committed()
    assert first == 0
    np.testing.assert_allclose(scores[:3], [r] * 3)
    np.testing.assert_allclose(scores[3], x)
    np.testing.assert_allclose(scores[4:10], [[1.0, 0.0, 0.0]] * 6)
    assert len(scores) == 13  # newest slot 13, lag 1: committed through 12


def test_windows_with_gaps_in_start_slots() -> None:
    cfg = replace(CFG, right_margin_frames=0, commit_lag_frames=0, min_expression_frames=3)
    tr = track(40, [(4, 7, 0.9, 0.0), (20, 27, 0.9, 0.0)])
    starts = [0, 20, 32]  # slots 8..19 and 28..31 covered by no window
    events, fused = merge_offline(starts, [tr[s : s + T] for s in starts], cfg)
    np.testing.assert_allclose(fused[8:20], [[1.0, 0.0, 0.0]] * 12)
    np.testing.assert_allclose(fused[28:32], [[1.0, 0.0, 0.0]] * 4)
    np.testing.assert_array_equal(fused[:8], tr[:8])
    # The uncovered slots are neutral, so the first interval closes at slot 7 after a 6-slot dip.
    assert events_to_intervals(events) == [(4, 7, 1), (20, 27, 1)]
    # A huge gap with nothing open is skipped in one step (no per-slot work, bounded memory).
    m = IntervalMerger(cfg, max_undrained_slots=100)
    m.update(0, tr[:T])
    m.update(10**9, tr[:T])
    first, scores = m.drain_committed()
    assert (first, len(scores)) == (10**9 + T - 100, 100)
    assert m.dropped_committed_slots == 10**9 + T - 100


def test_commit_lag_respected_and_measurable() -> None:
    rng = np.random.default_rng(0)
    cfg = replace(CFG, min_expression_frames=2)
    tr = random_track(rng, 600)
    tr[:T] = (1.0, 0.0, 0.0)  # no onset inside the first window (committed all at once)
    starts, probs = windows(tr, stride=1)
    m = IntervalMerger(cfg)
    onset_latencies = []
    for s, p in zip(starts, probs, strict=True):
        for e in m.update(s, p):
            newest = s + T - 1
            assert e.emitted_at_slot == newest == m.newest_slot
            committed_through = m.next_commit_slot - 1
            assert committed_through == newest - cfg.commit_lag_frames
            for slot in (e.onset_slot, e.apex_slot, e.offset_slot):
                assert slot is None or slot <= committed_through
            if e.state == "onset":
                onset_latencies.append(e.emitted_at_slot - e.onset_slot)
    # With stride 1 an onset is reported exactly commit_lag_frames after its slot.
    assert onset_latencies and set(onset_latencies) == {cfg.commit_lag_frames}


def test_memory_bounded_over_100k_slots() -> None:
    cfg = MergerConfig()  # T = 32
    rng = np.random.default_rng(1)
    base = random_track(rng, 4096)
    n_slots, stride = 100_000, 16
    m = IntervalMerger(cfg, max_undrained_slots=1000)
    drained = IntervalMerger(cfg)
    total = 0
    for s in range(0, n_slots - cfg.window_frames + 1, stride):
        idx = np.arange(s, s + cfg.window_frames) % len(base)
        m.update(s, base[idx])
        drained.update(s, base[idx])
        total += len(drained.drain_committed()[1])
        assert m.tail_slots <= cfg.window_frames
        assert m.undrained_slots <= 1000
        assert drained.undrained_slots <= stride
    assert m._sum.shape == (2, cfg.window_frames, 3)  # fixed-size accumulators
    first, scores = m.drain_committed()
    assert len(scores) == 1000 and first + 1000 == m.next_commit_slot
    assert m.dropped_committed_slots == m.next_commit_slot - 1000
    assert total == drained.next_commit_slot >= 99_900


def test_interrupt_closes_and_latches() -> None:
    cfg = replace(CFG, right_margin_frames=0, commit_lag_frames=0, min_expression_frames=3)
    tr = track(60, [(10, 39, 0.0, 0.9)])
    m = IntervalMerger(cfg)
    events: list[MergerEvent] = []
    for s in range(0, 13):  # committed through slot 19
        events += m.update(s, tr[s : s + T])
    assert m.is_open
    events += m.interrupt()
    assert states(events) == [("onset", 2, 10, None), ("interrupted", 1, 10, 19)]  # 10 frames
    assert m.interrupt() == []
    # The stream continues while still high: no second onset until p_expr drops.
    for s in range(13, 53):
        events += m.update(s, tr[s : s + T])
    events += m.flush()
    assert events_to_intervals(events) == [(10, 19, 1)]
    # A too-short interrupted interval is cancelled instead.
    m.reset()
    for s in range(0, 5):  # committed through slot 11: open 10..11 (2 < 3 frames)
        m.update(s, tr[s : s + T])
    assert [e.state for e in m.interrupt()] == ["cancelled"]


def test_update_validation_and_reset() -> None:
    m = IntervalMerger(CFG)
    good = np.tile(np.array([1.0, 0.0, 0.0], np.float32), (T, 1))
    m.update(5, good)
    with pytest.raises(ValueError, match="increasing"):
        m.update(5, good)
    with pytest.raises(ValueError, match="shape"):
        m.update(6, good[:-1])
    bad = good.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        m.update(6, bad)
    m.reset()
    assert m.next_commit_slot is None and m.drain_committed()[1].shape == (0, 3)
    m.update(0, good)  # a new timeline may start anywhere
    assert m.next_commit_slot == T - CFG.commit_lag_frames


def test_config_json_round_trip(tmp_path: Path) -> None:
    cfg = MergerConfig(fusion="max", on_threshold=0.6, off_threshold=0.4, commit_lag_frames=10)
    path = cfg.to_json(tmp_path / "merger.json")
    assert MergerConfig.from_json(path) == cfg
    assert MergerConfig.from_dict(json.loads(path.read_text())) == cfg
    assert MergerConfig.from_dict({}) == MergerConfig()
    assert MergerConfig.from_dict({"fps": 60}).fps == 60.0  # JSON ints are fine for floats


@pytest.mark.parametrize(
    "bad",
    [
        {"unknown_key": 1},
        {"on_threshold": 1.0},
        {"on_threshold": 0.4, "off_threshold": 0.5},  # off > on
        {"off_threshold": 0.0},
        {"fusion": "median"},
        {"window_frames": 32.0},  # ints must be ints
        {"window_frames": 0},
        {"right_margin_frames": 32},  # >= window_frames
        {"right_margin_frames": 8, "commit_lag_frames": 4},  # lag < margin
        {"min_expression_frames": 0},
        {"min_expression_frames": True},
        {"mae_min_s": 0.6, "me_max_s": 0.5},
        {"gap_merge_s": -0.1},
        {"fps": float("nan")},
        {"fps": "60"},
        {"max_expression_s": 0.05},  # 3 frames < min_expression_frames 6
    ],
)
def test_config_errors(bad: dict) -> None:
    with pytest.raises(ConfigError):
        MergerConfig.from_dict(bad)


def test_config_file_errors(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    for name in ("broken.json", "list.json", "missing.json"):
        with pytest.raises(ConfigError):
            MergerConfig.from_json(tmp_path / name)


def random_track(rng: np.random.Generator, n: int) -> np.ndarray:
    """Piecewise-constant expression episodes of random length, class and strength, plus noise."""
    p = np.zeros((n, 3), np.float32)
    s = 0
    while s < n:
        length = int(rng.integers(1, 60))
        strength = float(rng.choice([0.05, 0.2, 0.45, 0.6, 0.9]))
        share = float(rng.uniform())
        p[s : s + length, 1] = strength * share
        p[s : s + length, 2] = strength * (1 - share)
        s += length
    p[:, 1:] = np.clip(p[:, 1:] + rng.normal(0, 0.05, (n, 2)), 0, 0.5)
    p[:, 0] = 1 - p[:, 1:].sum(axis=1)
    return p


def check_event_grammar(events: list[MergerEvent], cfg: MergerConfig) -> None:
    """Every onset is followed by exactly one close for it; closed intervals do not overlap;
    finals obey the minimum length, the maximum length and the duration rules."""
    open_onset = None
    last_offset = -1
    for e in events:
        if e.state == "onset":
            assert open_onset is None and e.offset_slot is None
            assert e.onset_slot > last_offset
            open_onset = e.onset_slot
            continue
        assert e.onset_slot == open_onset and e.offset_slot is not None
        assert e.onset_slot <= e.apex_slot <= e.offset_slot
        n_frames = e.offset_slot - e.onset_slot + 1
        if e.state == "cancelled":
            assert n_frames < cfg.min_expression_frames
        else:
            assert cfg.min_expression_frames <= n_frames <= cfg.max_expression_frames
            if n_frames > cfg.me_max_frames:
                assert e.label == 2
            if n_frames < cfg.mae_min_frames:
                assert e.label == 1
        assert 0.0 < e.score <= 1.0 + 1e-6
        last_offset, open_onset = e.offset_slot, None
    assert open_onset is None
