"""The model tier: one engine serving many streams, each stream's features kept where the model
runs.

The decisive streaming fact (DESIGN.md) caches a frame's encoder features once per frame. On a GPU
the cache must live on the GPU too: features are 50,176 bytes a slot, and a window of 32 slots
re-uploaded from the host costs 23x the window head itself (measured: docs/GPU.md).
So :class:`ModelTier` holds, per stream, a ring of ``ring_slots`` slots of ``x_prime``,
``x_atten`` and the geometry vector in tensors pre-allocated on the model's device, and callers
send only what is new:

- per slot: its number, the aligned crop (uint8 (H, W, 3)) when it shows a new frame, or no crop
  when it repeats the previous slot's frame (a 30 FPS camera fills two 60 Hz slots per frame),
  and its geometry vector when the network reads the geometry channel;
- per window: the stream and the window's first slot (its reference frame, as everywhere).

:meth:`ModelTier.step` takes one :class:`TierBatch` (any number of streams, slots and windows),
writes the geometry vectors, encodes every new crop in one pass, copies features for repeated
slots on the device, then gathers every window from the rings by index and runs the window head
over all of them; probabilities (B, T, 3) float32 come back to the host. Encodes and windows go
through the model in chunks padded to fixed batch sizes (``buckets``), so a CUDA graph captured
per bucket can replay them (model/tier_run.py: :class:`~.tier_run.CudaGraphRunner`): the rings,
the input crops, the row indices and the output probabilities are static tensors the captured
graphs read and write, and padding rows read and write one spare "trash" row.

:meth:`ModelTier.submit` is the same step without waiting for the device: it queues the work and
returns a :class:`~.tier_host.PendingStep`. Two sets of host buffers are used in turn, so a
caller can stage and submit step k + 1 while the device runs step k (a tick then costs the
larger of the host's and the device's time, not their sum); on CUDA a large step's crops go up on
a copy stream, overlapping the previous step's model work (model/tier_host.py has the ordering
argument). :meth:`ModelTier.step` is ``submit(batch).result()``.

What holds:

- *Same numbers as the per-stream path.* The model functions are the deployable graphs of
  model/graphs.py (``EncoderGraph``, ``WindowGraph``: the softmax inside), the same as every
  backend's; on CPU in fp32 a stream's window probabilities equal those of the per-stream Engine
  and of offline ``inference.spot_video`` up to float summation order (tests/test_tier.py).
- *Slots of a stream.* A stream holds one run of consecutive slots, the newest ``ring_slots``.
  A batch's slots of one stream must be consecutive and together. Slots that continue (or
  overlap) the held run extend it; any other slot number starts a new run there: that is how a
  caller rebuilds a ring the tier lost (a new replica): it re-sends the slots a window needs,
  the first with its crop.
- *Missing, not wrong.* A window whose slots are not all held is not scored: its row of
  ``StepResult.probs`` is NaN and ``StepResult.missing`` marks it; the caller re-sends the slots.
  A batch the tier cannot place (unknown stream, a repeated slot whose previous slot is not
  held, bad shapes) raises :class:`TierError` before anything is written.
- *Streams.* :meth:`ModelTier.open` hands out an int handle (a pre-allocated ring block;
  ``max_streams`` of them), :meth:`ModelTier.reset` starts a new segment (slot numbers may start
  at 0 again), :meth:`ModelTier.close` frees the block.

Not thread-safe: one thread (a per-tick batcher) owns a tier.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Hashable, Sequence
from typing import Protocol

import numpy as np
import torch

from .geometry import GeometryConfig
from .tier_host import COPY_STREAM_MIN_CROPS, CropUpload, HostBuffers, PendingStep, StepMarks
from .tier_plan import StepResult, StreamTable, TierBatch, TierError, TierFull, plan_chunks

__all__ = ["EagerRunner", "ModelTier", "PendingStep", "Runner", "StepResult", "TierBatch",
           "TierError", "TierFull", "TierFunctions"]

HOST_SETS = 2  # steps in flight: the host prepares one while the device runs the other


class TierFunctions(Protocol):
    """The two model functions on device tensors (model/tier_run.py has the implementations)."""

    device: torch.device
    feature_dtype: torch.dtype  # what the rings store (float16 under fp16 autocast)

    def encode(self, crops_u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def window(
        self, x_prime: torch.Tensor, x_atten: torch.Tensor, geom: torch.Tensor | None
    ) -> torch.Tensor: ...


class Runner(Protocol):
    """Runs the tier's two bodies for a batch size: eagerly, or by replaying a CUDA graph."""

    def prepare(
        self, encode: Callable[[int], None], window: Callable[[int], None], buckets: Sequence[int]
    ) -> None: ...

    def encode(self, b: int) -> None: ...

    def window(self, b: int) -> None: ...


class EagerRunner:
    """Calls the bodies directly: any batch size up to the buffers' (CPU; CUDA without graphs)."""

    name = "eager"

    def prepare(
        self, encode: Callable[[int], None], window: Callable[[int], None], buckets: Sequence[int]
    ) -> None:
        self._encode, self._window = encode, window

    def encode(self, b: int) -> None:
        self._encode(b)

    def window(self, b: int) -> None:
        self._window(b)


class ModelTier:
    """Per-stream device rings + batched, bucketed encode and window calls (module docstring).

    ``functions``: the model on its device; ``runner``: how the two bodies run (eager, or CUDA
    graphs per bucket); ``buckets``: padded batch sizes (None: exact sizes, no padding; needs an
    eager runner); ``max_bucket``: the largest model call (more is split into chunks);
    ``max_encode``: the largest encoder call, if smaller (one of ``buckets``): on a CPU a batch of
    crops larger than the cache is slower per crop than one at a time (ONNX Runtime, 1 thread:
    8 crops at once 1.27x the time of 8 calls of one, docs/GPU.md)."""

    def __init__(
        self,
        functions: TierFunctions,
        *,
        window_frames: int,
        image_size: int = 112,
        geometry_dims: int = 0,
        max_streams: int = 64,
        ring_slots: int | None = None,
        buckets: Sequence[int] | None = None,
        max_bucket: int = 64,
        max_encode: int | None = None,
        runner: Runner | None = None,
        geometry: GeometryConfig | None = None,
        name: str = "tier",
    ) -> None:
        ring_slots = 2 * window_frames if ring_slots is None else ring_slots
        self.table = StreamTable(max_streams, ring_slots, window_frames, image_size,
                                 geometry_dims)
        if buckets is not None:
            buckets = tuple(sorted(set(buckets)))
            max_bucket = buckets[-1]
        self.name = name
        self.functions = functions
        self.device = functions.device
        self.window_frames = window_frames
        self.image_size = image_size
        self.geometry_dims = geometry_dims
        self.geometry = geometry  # the GeometryConfig callers compute vectors with, or None
        self.max_streams = max_streams
        self.ring_slots = ring_slots
        self.buckets = buckets
        self.max_bucket = max_bucket
        self.max_encode = min(max_encode or max_bucket, max_bucket)
        if buckets is not None and self.max_encode not in buckets:
            raise ValueError(f"max_encode {self.max_encode} must be one of the buckets {buckets}")
        self.runner: Runner = runner if runner is not None else EagerRunner()
        self.counts: collections.Counter[str] = collections.Counter()
        self._cuda = self.device.type == "cuda"
        self._sets = [HostBuffers(pinned=self._cuda) for _ in range(HOST_SETS)]
        self._last: list[PendingStep | None] = [None] * HOST_SETS  # the last step of each set
        self._seq = 0  # steps submitted
        self._upload = CropUpload(self.device, image_size, HOST_SETS) if self._cuda else None
        self.timed = False  # record each step's phases (PendingStep.phases_ms): benchmarks
        self._allocate()
        self.runner.prepare(self._encode_body, self._window_body,
                            buckets if buckets is not None else (max_bucket,))

    # -- device buffers and the two bodies (what a CUDA graph captures) --------------------------
    @torch.no_grad()
    def _allocate(self) -> None:
        dev, s, t = self.device, self.image_size, self.window_frames
        xp, xa = self.functions.encode(torch.zeros((1, s, s, 3), dtype=torch.uint8, device=dev))
        trash = self.table.trash_row
        dtype = self.functions.feature_dtype
        self.x_prime = torch.zeros((trash + 1, *xp.shape[1:]), dtype=dtype, device=dev)
        self.x_atten = torch.zeros((trash + 1, *xa.shape[1:]), dtype=dtype, device=dev)
        self.geom = (torch.zeros((trash + 1, self.geometry_dims), dtype=torch.float32, device=dev)
                     if self.geometry_dims else None)
        m = self.max_bucket
        self.crops_in = torch.zeros((m, s, s, 3), dtype=torch.uint8, device=dev)
        self.encode_rows = torch.full((m,), trash, dtype=torch.int64, device=dev)
        self.window_rows = torch.full((m, t), trash, dtype=torch.int64, device=dev)
        self.probs_out = torch.zeros((m, t, 3), dtype=torch.float32, device=dev)

    @property
    def ring_bytes(self) -> int:
        """Device memory of the rings (every stream block and the trash row)."""
        tensors = [self.x_prime, self.x_atten] + ([] if self.geom is None else [self.geom])
        return int(sum(x.numel() * x.element_size() for x in tensors))

    def _encode_body(self, b: int) -> None:
        """Encode ``crops_in[:b]`` into the rings at ``encode_rows[:b]``."""
        xp, xa = self.functions.encode(self.crops_in[:b])
        rows = self.encode_rows[:b]
        self.x_prime.index_copy_(0, rows, xp.to(self.x_prime.dtype))
        self.x_atten.index_copy_(0, rows, xa.to(self.x_atten.dtype))

    def _window_body(self, b: int) -> None:
        """Windows whose slots' rows are ``window_rows[:b]`` -> ``probs_out[:b]``."""
        t = self.window_frames
        rows = self.window_rows[:b].reshape(-1)  # (b*T,)
        xp = self.x_prime.index_select(0, rows).reshape(b, t, *self.x_prime.shape[1:])
        xa = self.x_atten.index_select(0, rows).reshape(b, t, *self.x_atten.shape[1:])
        g = None
        if self.geom is not None:
            g = self.geom.index_select(0, rows).reshape(b, t, self.geometry_dims)
        self.probs_out[:b].copy_(self.functions.window(xp, xa, g))

    # -- streams -------------------------------------------------------------------------------
    def open(self, key: Hashable = None) -> int:
        """A new stream (nothing held): its handle. ``key``: the caller's name for it."""
        return self.table.open(key)

    def reset(self, handle: int) -> None:
        """A new segment: every held slot is forgotten; slot numbers may start again."""
        self.table.reset(handle)

    def close(self, handle: int) -> None:
        """The stream ended: its ring block is free for another."""
        self.table.close(handle)

    def held(self, handle: int) -> tuple[int, int]:
        """The slots ``[first, end)`` this stream's ring holds (first == end: none)."""
        return self.table.held(handle)

    def synchronize(self) -> None:
        """Wait for every step's device work (a step without windows returns before it ends)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # -- a step --------------------------------------------------------------------------------
    def staging(self, n: int) -> np.ndarray:
        """A writable (n, H, W, 3) uint8 host array for the next submitted step's crops: a batch
        whose ``crops`` is (a leading part of) this array is uploaded without another host copy
        (pinned memory on CUDA). Valid until that step is submitted. Waits, if need be, for the
        step before the last one, which used the same host buffers."""
        s = self.image_size
        return self._claim().get("crops", (n, s, s, 3), torch.uint8).numpy()

    def step(self, batch: TierBatch) -> StepResult:
        """Write the batch's slots into the rings, then score its windows (module docstring)."""
        return self.submit(batch).result()

    @torch.no_grad()
    def submit(self, batch: TierBatch) -> PendingStep:
        """:meth:`step` without waiting: the device work is queued and the step's result comes
        from :meth:`PendingStep.result`. Steps run in submission order; the rings are updated
        for the next submit at once (its bookkeeping is the host's), so step k + 1 may be
        staged and submitted while the device still runs step k."""
        plan = self.table.plan(batch)
        host = self._claim()
        marks = StepMarks(self._cuda) if self.timed else None
        if marks is not None:
            marks.mark("start", self._stream())
        if self.geom is not None and len(plan.rows):
            vectors = self._to_device(host, "geom", np.asarray(batch.geom, np.float32),
                                      torch.float32)
            self.geom.index_copy_(0, self._to_device(host, "geom_rows", plan.rows), vectors)
        self._encode(host, batch.crops, plan.encode_rows, marks)
        if len(plan.copy_dst):
            src = self._to_device(host, "copy_src", plan.copy_src)
            dst = self._to_device(host, "copy_dst", plan.copy_dst)
            for ring in (self.x_prime, self.x_atten):
                ring.index_copy_(0, dst, ring.index_select(0, src))
        self.table.commit(plan)
        self.counts["slots"] += len(plan.rows)
        self.counts["encoded"] += len(plan.encode_rows)
        self.counts["copied"] += len(plan.copy_dst)
        self.counts["steps"] += 1
        if marks is not None:
            marks.mark("encoded", self._stream())
        pending = self._windows(host, batch.window_streams, batch.window_starts, marks)
        self._last[self._seq % HOST_SETS] = pending
        self._seq += 1
        return pending

    def _stream(self) -> torch.cuda.Stream | None:
        return torch.cuda.current_stream(self.device) if self._cuda else None

    def _claim(self) -> HostBuffers:
        """The host buffers of the next step, free: the step that used them last is done."""
        i = self._seq % HOST_SETS
        last = self._last[i]
        if last is not None:
            last.collect()
            self._last[i] = None
        return self._sets[i]

    def _to_device(self, host: HostBuffers, name: str, array: np.ndarray,
                   dtype: torch.dtype = torch.int64) -> torch.Tensor:
        """``array`` on the device: through the step's pinned buffer on CUDA (an asynchronous
        copy on the current stream), as is on the CPU."""
        if not self._cuda:
            return torch.from_numpy(np.ascontiguousarray(array))
        buf = host.get(name, array.shape, dtype)
        buf.numpy()[...] = array
        return buf.to(self.device, non_blocking=True)

    def _encode(self, host: HostBuffers, crops: np.ndarray, rows: np.ndarray,
                marks: StepMarks | None) -> None:
        m = len(rows)
        if m == 0:
            return
        s = self.image_size
        if self._cuda:
            staged = host.get("crops", (m, s, s, 3), torch.uint8)
            if staged.data_ptr() != crops.ctypes.data:  # not written into staging() already
                np.copyto(staged.numpy(), crops)
        else:
            staged = torch.from_numpy(np.ascontiguousarray(crops))
        i = self._seq % HOST_SETS
        upload = self._upload if m >= COPY_STREAM_MIN_CROPS else None
        source = staged if upload is None else upload.upload(i, staged, marks)
        chunks = plan_chunks(m, self.buckets, self.max_encode)
        padded = self._padded(host, "encode_rows", rows[:, None], chunks)[:, 0]
        at = 0
        for off, cnt, size in chunks:
            self.crops_in[:cnt].copy_(source[off : off + cnt], non_blocking=True)
            self.encode_rows[:size].copy_(padded[at : at + size], non_blocking=True)
            self.runner.encode(size)
            at += size
        if upload is not None:
            upload.read(i)
        self.counts["encode_calls"] += len(chunks)
        self.counts["encode_padding"] += at - m

    def _padded(self, host: HostBuffers, name: str, rows: np.ndarray,
                chunks: list[tuple[int, int, int]]) -> torch.Tensor:
        """(sum of padded sizes, k) host rows: each chunk's rows, then the trash row."""
        total = sum(size for _, _, size in chunks)
        out = host.get(name, (total, rows.shape[1]), torch.int64)
        arr = out.numpy()
        if len(chunks) == 1 and chunks[0][1] == len(rows):  # the usual step: one chunk
            arr[: len(rows)] = rows
            arr[len(rows) :] = self.table.trash_row
            return out
        at = 0
        for off, cnt, size in chunks:
            arr[at : at + cnt] = rows[off : off + cnt]
            arr[at + cnt : at + size] = self.table.trash_row
            at += size
        return out

    def _windows(self, host: HostBuffers, handles: np.ndarray, starts: np.ndarray,
                 marks: StepMarks | None) -> PendingStep:
        t, b = self.window_frames, len(starts)
        out = host.get("probs", (b, t, 3), torch.float32)
        ok = np.zeros(0, bool)
        if b:
            rows, ok = self.table.window_rows(handles, starts)
            chunks = plan_chunks(b, self.buckets, self.max_bucket)
            padded = self._padded(host, "window_rows", rows, chunks)
            at = 0
            for off, cnt, size in chunks:
                self.window_rows[:size].copy_(padded[at : at + size], non_blocking=True)
                self.runner.window(size)
                out[off : off + cnt].copy_(self.probs_out[:cnt], non_blocking=True)
                at += size
            self.counts["windows"] += int(ok.sum())
            self.counts["missing"] += int((~ok).sum())
            self.counts["window_calls"] += len(chunks)
            self.counts["window_padding"] += at - b
        if marks is not None:
            marks.mark("done", self._stream())
        done = None
        if self._cuda:
            done = torch.cuda.Event()
            done.record(torch.cuda.current_stream(self.device))
        return PendingStep(out, ok, done, marks)
