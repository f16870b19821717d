"""The stateful interval merger: overlapping window scores in, ME/MaE interval events out.

One object, three drivers. The streaming spotter calls ``update`` once per window as windows
arrive, offline evaluation calls ``merge_offline`` (which is nothing but the same ``update`` loop
followed by ``flush``), and calibration replays stored window scores through ``merge_offline``
while it searches ``MergerConfig`` fields. Because every driver runs the same code, streaming
output equals offline output by construction, and tests check it.

The module is pure Python + numpy: no torch, cv2, threads or clocks. Time is the 60 Hz slot
index; latency is measured in slots (``MergerEvent.emitted_at_slot`` minus the slot an event
refers to), never with a wall clock.

Pipeline inside ``IntervalMerger``:

1. *Accumulate.* A window's ``(T, 3)`` probabilities are added to per-slot accumulators of the
   un-committed tail. Positions in the window's last ``right_margin_frames`` go to a separate
   "margin" accumulator: MTAM's non-causal convolutions see zero padding there.
2. *Commit.* A slot is committed (its fused score frozen) once it is ``commit_lag_frames`` behind
   the newest slot seen, or once a window starting after it has arrived (windows arrive in
   increasing start order, so no later window can cover it). ``flush`` commits everything.
   A committed slot's fused score comes from its reliable (non-margin) scores when it has any,
   otherwise from its margin scores, otherwise (no window covered it) it is neutral (1, 0, 0).
3. *Decide.* A hysteresis state machine runs over committed slots only, on
   ``p_expr = p_ME + p_MaE``, with gap merging, a minimum length, a forced close of very long
   intervals, and the ME/MaE duration rules. So no event ever refers to an uncommitted slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from .merger_config import FUSIONS, ConfigError, Fusion, MergerConfig

__all__ = [
    "FUSIONS",
    "NEUTRAL",
    "ConfigError",
    "EventState",
    "Fusion",
    "IntervalMerger",
    "MergerConfig",
    "MergerEvent",
    "events_to_intervals",
    "merge_offline",
]

EventState = Literal["onset", "final", "cancelled", "interrupted"]
NEUTRAL = np.array([1.0, 0.0, 0.0], dtype=np.float32)


@dataclass(frozen=True)
class MergerEvent:
    """One thing the merger decided.

    ``state``: "onset" (an interval opened; ``label`` is provisional, ``offset_slot`` None);
    "final" (it closed; the duration rules fixed ``label``); "cancelled" (it closed shorter than
    ``min_expression_frames``: withdraw the onset with the same ``onset_slot``; ``label`` is the
    onset's provisional one); "interrupted" (closed early by ``interrupt()``).
    ``score``: mean committed p_expr = p_ME + p_MaE over the interval's slots (for "onset": at
    the onset slot). p_expr rather than p of the label, because the label of an interval is
    mostly decided by its duration, while p_expr is what opened and held it.
    ``apex_slot``: first slot of the largest p of the event's label within the interval (a later
    slot must beat it by more than ``APEX_TOL`` to take over).
    ``emitted_at_slot``: newest slot the merger had seen when it emitted the event, so
    ``emitted_at_slot - offset_slot`` (or ``- onset_slot``) is the decision latency in slots.
    """

    state: EventState
    label: int
    onset_slot: int
    apex_slot: int
    offset_slot: int | None
    score: float
    emitted_at_slot: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


APEX_TOL = 1e-4
"""A later slot becomes the apex only if its p beats the current apex's by more than this. Per-
frame (streaming) and batched (offline) inference differ by ~1e-6; on a saturated plateau that
noise alone moved the apex by 10 frames between the two paths (seen once in CI's
test_pipeline_on_a_real_face_video_equals_offline)."""


class _Stats:
    """Running statistics over a run of committed slots (O(1) memory)."""

    __slots__ = ("apex_mae", "apex_me", "max_mae", "max_me", "n", "sum_e", "sum_mae", "sum_me")

    def __init__(self) -> None:
        self.n = 0
        self.sum_me = self.sum_mae = self.sum_e = 0.0
        self.max_me = self.max_mae = -1.0
        self.apex_me = self.apex_mae = -1

    def add(self, slot: int, p_me: float, p_mae: float) -> None:
        self.n += 1
        self.sum_me += p_me
        self.sum_mae += p_mae
        self.sum_e += p_me + p_mae
        if p_me > self.max_me + APEX_TOL:
            self.max_me, self.apex_me = p_me, slot
        if p_mae > self.max_mae + APEX_TOL:
            self.max_mae, self.apex_mae = p_mae, slot

    def absorb(self, later: _Stats) -> None:
        """Append a run that comes after this one (earlier apex wins a tie, as in ``add``)."""
        self.n += later.n
        self.sum_me += later.sum_me
        self.sum_mae += later.sum_mae
        self.sum_e += later.sum_e
        if later.max_me > self.max_me + APEX_TOL:
            self.max_me, self.apex_me = later.max_me, later.apex_me
        if later.max_mae > self.max_mae + APEX_TOL:
            self.max_mae, self.apex_mae = later.max_mae, later.apex_mae

    def score_label(self) -> int:
        return 2 if self.sum_mae > self.sum_me else 1

    def apex(self, label: int) -> int:
        return self.apex_mae if label == 2 else self.apex_me


_RELIABLE, _MARGIN = 0, 1


class IntervalMerger:
    """Streams window probabilities into ME/MaE interval events (see the module docstring).

    Memory is bounded: the un-committed tail never exceeds ``window_frames`` slots (every slot
    before the newest window's start is committed), an open interval keeps O(1) statistics, and
    committed scores wait for ``drain_committed`` in a buffer capped at ``max_undrained_slots``
    (the oldest are dropped and counted in ``dropped_committed_slots``, which the driver
    reports: the merger itself has no logging, clock or thread).
    """

    def __init__(self, cfg: MergerConfig, max_undrained_slots: int = 1 << 16) -> None:
        if max_undrained_slots < 1:
            raise ValueError(f"max_undrained_slots must be >= 1, got {max_undrained_slots}")
        self.cfg = cfg
        self.max_undrained_slots = max_undrained_slots
        t = cfg.window_frames
        # Accumulators of slots base .. base+T-1: [kind (0 reliable, 1 margin), slot - base, ...].
        self._sum = np.zeros((2, t, 3), np.float64)
        self._cnt = np.zeros((2, t), np.int64)
        self._best = np.zeros((2, t, 3), np.float32)
        self._best_e = np.full((2, t), -1.0, np.float64)
        self._latest = np.zeros((2, t, 3), np.float32)
        self._margin_pos = np.arange(t) >= t - cfg.right_margin_frames
        self.reset()

    # ------------------------------------------------------------------ public API

    def reset(self) -> None:
        """Forget everything (tail, open interval, undrained scores): a new timeline starts."""
        self._clear_tail(self.cfg.window_frames)
        self._base: int | None = None  # first un-committed slot
        self._newest = -1  # newest slot seen (what emitted_at_slot reports)
        self._covered = -1  # newest slot whose window scores are in the tail accumulators
        self._last_start: int | None = None
        self._undrained: list[tuple[int, np.ndarray]] = []
        self._n_undrained = 0
        self.dropped_committed_slots = 0
        self._reset_decider()

    @property
    def next_commit_slot(self) -> int | None:
        """First slot not committed yet (None before the first window)."""
        return self._base

    @property
    def newest_slot(self) -> int:
        """Newest slot any window has covered (-1 before the first window)."""
        return self._newest

    @property
    def tail_slots(self) -> int:
        """Un-committed slots currently held (<= window_frames)."""
        return 0 if self._base is None else max(0, self._covered - self._base + 1)

    @property
    def undrained_slots(self) -> int:
        return self._n_undrained

    @property
    def is_open(self) -> bool:
        """Whether an interval is open (its onset has been emitted, its end not yet)."""
        return self._state in ("active", "dip")

    def update(self, start_slot: int, probs: np.ndarray) -> list[MergerEvent]:
        """Add one window's probabilities for slots ``start_slot .. start_slot + T - 1``.

        Windows must arrive in strictly increasing ``start_slot`` order (gaps allowed: slots no
        window covers are committed as neutral). Positions of the window that fall on already
        committed slots are ignored. Returns the events the newly committed slots caused.
        """
        cfg = self.cfg
        t = cfg.window_frames
        start = int(start_slot)
        p = np.asarray(probs)
        if p.shape != (t, 3):
            raise ValueError(f"probs must have shape ({t}, 3), got {p.shape}")
        if not np.isfinite(p).all():
            raise ValueError(f"window at slot {start} has non-finite probabilities")
        if self._last_start is not None and start <= self._last_start:
            raise ValueError(
                f"windows must arrive in increasing start order: got {start} after "
                f"{self._last_start}"
            )
        p = p.astype(np.float32, copy=False)
        self._last_start = start
        if self._base is None:
            self._base = start
        end = start + t - 1
        self._newest = max(self._newest, end)
        events = self._commit_through(start - 1)

        base = self._base
        first = max(0, base - start)
        if first < t:
            idx = np.arange(start + first - base, end - base + 1)
            kind = self._margin_pos[first:].astype(np.int64)
            w = p[first:]
            self._sum[kind, idx] += w
            self._cnt[kind, idx] += 1
            e = w[:, 1].astype(np.float64) + w[:, 2]
            better = e > self._best_e[kind, idx]
            self._best[kind[better], idx[better]] = w[better]
            self._best_e[kind[better], idx[better]] = e[better]
            self._latest[kind, idx] = w
        self._covered = end
        events += self._commit_through(end - cfg.commit_lag_frames)
        return events

    def flush(self) -> list[MergerEvent]:
        """End of stream: commit every slot seen (margin scores included) and close any open
        interval ("final" or "cancelled"). The merger stays usable for later windows."""
        events: list[MergerEvent] = []
        if self._base is not None:
            events += self._commit_through(self._newest)
        if self.is_open:
            events.append(self._close("final"))
        if self._state == "latched":
            self._state = "idle"
        return events

    def interrupt(self) -> list[MergerEvent]:
        """The stream was cut (SIGINT, face lost): close an open interval now, at its last
        committed active slot, with state "interrupted" ("cancelled" if too short). Nothing is
        committed early. A new interval opens only after p_expr has dropped below
        ``off_threshold``, so an expression still in the un-committed tail is not reported twice.
        """
        if not self.is_open:
            return []
        event = self._close("interrupted")
        self._state = "latched"
        return [event]

    def drain_committed(self) -> tuple[int, np.ndarray]:
        """Fused scores committed since the last drain: (first slot, (K, 3) float32).

        The slots are contiguous; ``K`` is 0 when nothing new was committed (first slot is then
        the next slot to be committed, or 0 before any window).
        """
        if not self._undrained:
            return (self._base if self._base is not None else 0), np.zeros((0, 3), np.float32)
        first = self._undrained[0][0]
        scores = np.concatenate([c for _, c in self._undrained])
        self._undrained = []
        self._n_undrained = 0
        return first, scores

    # ------------------------------------------------------------------ commit

    def _clear_tail(self, n: int) -> None:
        """Drop the first n tail rows and shift the rest to the front."""
        t = self.cfg.window_frames
        n = min(n, t)
        for arr, fill in (
            (self._sum, 0.0),
            (self._cnt, 0),
            (self._best, 0.0),
            (self._best_e, -1.0),
            (self._latest, 0.0),
        ):
            arr[:, : t - n] = arr[:, n:]
            arr[:, t - n :] = fill

    def _fuse(self, n: int) -> np.ndarray:
        """Fused scores of the first n tail rows (n <= window_frames)."""
        fusion = self.cfg.fusion
        cnt = self._cnt[:, :n]
        if fusion == "mean":
            per_kind = (self._sum[:, :n] / np.maximum(cnt, 1)[..., None]).astype(np.float32)
        elif fusion == "max":
            per_kind = self._best[:, :n]
        else:
            per_kind = self._latest[:, :n]
        reliable = (cnt[_RELIABLE] > 0)[:, None]
        margin = (cnt[_MARGIN] > 0)[:, None]
        return np.where(
            reliable, per_kind[_RELIABLE], np.where(margin, per_kind[_MARGIN], NEUTRAL)
        ).astype(np.float32)

    def _commit_through(self, last: int) -> list[MergerEvent]:
        """Commit slots base .. last (inclusive) in order and run the decider over them."""
        events: list[MergerEvent] = []
        t = self.cfg.window_frames
        assert self._base is not None
        while self._base <= last:
            base = self._base
            if self._covered < base and not self.is_open:
                # Uncovered gap with nothing open: all neutral, no events; skip in one step.
                n = last - base + 1
                if self._state == "latched":
                    self._state = "idle"  # p_expr = 0 < off_threshold
                keep = min(n, self.max_undrained_slots)
                self._push(last - keep + 1, np.tile(NEUTRAL, (keep, 1)), skipped=n - keep)
                self._base = last + 1
                break
            n = min(last - base + 1, t)
            scores = self._fuse(n)
            self._clear_tail(n)
            self._base = base + n
            self._push(base, scores)
            for i in range(n):
                ev = self._step(base + i, float(scores[i, 1]), float(scores[i, 2]))
                if ev:
                    events.extend(ev)
        return events

    def _push(self, first: int, scores: np.ndarray, skipped: int = 0) -> None:
        if skipped:
            # The skipped slots sat between the older undrained ones and these: drop all older
            # ones too, so that what drain_committed returns stays contiguous.
            self._note_dropped(skipped + self._n_undrained)
            self._undrained = []
            self._n_undrained = 0
        self._undrained.append((first, scores))
        self._n_undrained += len(scores)
        excess = self._n_undrained - self.max_undrained_slots
        if excess > 0:
            self._note_dropped(excess)
            self._n_undrained -= excess
            while excess > 0:
                s, chunk = self._undrained[0]
                if len(chunk) <= excess:
                    self._undrained.pop(0)
                    excess -= len(chunk)
                else:
                    self._undrained[0] = (s + excess, chunk[excess:])
                    excess = 0

    def _note_dropped(self, n: int) -> None:
        self.dropped_committed_slots += n

    # ------------------------------------------------------------------ decide

    def _reset_decider(self) -> None:
        self._state = "idle"  # idle | active | dip | latched
        self._onset = -1
        self._onset_label = 1
        self._last_active = -1
        self._dip_start = -1
        self._stats = _Stats()
        self._dip = _Stats()

    def _open(self, slot: int, p_me: float, p_mae: float) -> MergerEvent:
        self._state = "active"
        self._onset = self._last_active = slot
        self._stats = _Stats()
        self._stats.add(slot, p_me, p_mae)
        self._onset_label = self._stats.score_label()
        return MergerEvent("onset", self._onset_label, slot, slot, None, p_me + p_mae, self._newest)

    def _final_label(self, n: int, label: int) -> int:
        if label == 1 and n > self.cfg.me_max_frames:
            return 2
        if label == 2 and n < self.cfg.mae_min_frames:
            return 1
        return label

    def _close(self, state: EventState) -> MergerEvent:
        """Close the open interval at ``_last_active`` (a trailing dip is not part of it)."""
        stats = self._stats
        n = self._last_active - self._onset + 1
        if n < self.cfg.min_expression_frames:
            state, label = "cancelled", self._onset_label
        else:
            label = self._final_label(n, stats.score_label())
        event = MergerEvent(
            state,
            label,
            self._onset,
            stats.apex(label),
            self._last_active,
            stats.sum_e / stats.n,
            self._newest,
        )
        self._reset_decider()
        return event

    def _step(self, slot: int, p_me: float, p_mae: float) -> list[MergerEvent] | None:
        cfg = self.cfg
        e = p_me + p_mae
        state = self._state
        if state == "idle":
            return [self._open(slot, p_me, p_mae)] if e >= cfg.on_threshold else None
        if state == "latched":
            if e < cfg.off_threshold:
                self._state = "idle"
            return None
        length = slot - self._onset + 1
        if state == "active":
            if e >= cfg.off_threshold:
                self._stats.add(slot, p_me, p_mae)
                self._last_active = slot
                if length >= cfg.max_expression_frames:
                    ev = self._close("final")
                    self._state = "latched"
                    return [ev]
                return None
            self._state, self._dip_start, self._dip = "dip", slot, _Stats()
        # state is "dip" (possibly just entered)
        if e >= cfg.on_threshold:
            if length > cfg.max_expression_frames:
                # Merging across the dip would exceed the maximum: split instead.
                return [self._close("final"), self._open(slot, p_me, p_mae)]
            self._stats.absorb(self._dip)
            self._stats.add(slot, p_me, p_mae)
            self._last_active = slot
            self._state = "active"
            if length == cfg.max_expression_frames:
                ev = self._close("final")
                self._state = "latched"
                return [ev]
            return None
        self._dip.add(slot, p_me, p_mae)
        long = self._last_active - self._onset + 1 >= cfg.mae_min_frames
        gap = cfg.mae_gap_merge_frames if long else cfg.gap_merge_frames
        if slot - self._dip_start + 1 >= gap:
            return [self._close("final")]
        return None


def merge_offline(
    window_starts: Sequence[int],
    window_probs: Sequence[np.ndarray] | np.ndarray,
    cfg: MergerConfig,
) -> tuple[list[MergerEvent], np.ndarray]:
    """Run one ``IntervalMerger`` over all windows, then ``flush``: exactly what streaming does.

    Returns the events and the fused per-slot scores ``(N, 3)`` float32 indexed by slot, with
    ``N = newest slot + 1``; slots before the first window are neutral (1, 0, 0).
    """
    if len(window_starts) != len(window_probs):
        raise ValueError(
            f"{len(window_starts)} window starts but {len(window_probs)} probability windows"
        )
    merger = IntervalMerger(cfg)
    events: list[MergerEvent] = []
    chunks: list[tuple[int, np.ndarray]] = []
    for start, probs in zip(window_starts, window_probs, strict=True):
        events += merger.update(int(start), probs)
        chunks.append(merger.drain_committed())
    events += merger.flush()
    chunks.append(merger.drain_committed())
    fused = np.tile(NEUTRAL, (merger.newest_slot + 1, 1))
    for first, scores in chunks:
        fused[first : first + len(scores)] = scores
    return events, fused


def events_to_intervals(events: Sequence[MergerEvent]) -> list[tuple[int, int, int]]:
    """(onset, offset, label) of every "final" and "interrupted" event, sorted by onset."""
    out = [
        (e.onset_slot, e.offset_slot, e.label)
        for e in events
        if e.state in ("final", "interrupted") and e.offset_slot is not None
    ]
    return sorted(out)
