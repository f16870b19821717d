"""The model tier's host side of a step (model/tier.py runs the steps): what lets the host prepare
step k + 1 while the device still runs step k.

- :class:`HostBuffers`: one step's growable staging tensors by name (crops, row indices,
  geometry vectors, probabilities), pinned on CUDA so copies are asynchronous. The tier keeps two
  sets and steps use them in turn; a set is rewritten only once the step that used it last is
  done (:meth:`PendingStep.collect`), so the host never writes memory a copy still reads.
- :class:`PendingStep`: a submitted step; its windows' probabilities once its device work is done.
- :class:`CropUpload`: on CUDA, a large step's crops go up on a copy stream into a device inbox
  (one per host set), so the upload of step k + 1 overlaps the model work of step k; the model's
  stream waits for the upload before it reads the inbox, and the next upload into the same inbox
  waits until the model's stream has read it (CUDA events both ways).
- :class:`StepMarks`: optional timing of a step's phases (CUDA events, or host clocks on the CPU,
  where a step runs synchronously), for benchmarks.

Ordering argument (CUDA): everything of a step except its crop upload runs on the caller's
current stream in submission order; the crop upload runs on the copy stream, fenced by the two
events. A step's ``done`` event is recorded on the current stream after its last copy to the
host, and the current stream waited for its upload, so ``done`` complete means every transfer of
the step is complete: its host set may be rewritten.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from .tier_plan import StepResult

COPY_STREAM_MIN_CROPS = 64
"""Below this many crops a step uploads them on the model's stream: the copy is short, and the
copy stream's extra device copy and two events would cost more than they hide."""


class HostBuffers:
    """Growable host staging tensors by name (pinned on CUDA, so copies can be asynchronous)."""

    def __init__(self, pinned: bool) -> None:
        self.pinned = pinned
        self._bufs: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        buf = self._bufs.get(name)
        n = shape[0]
        if buf is None or buf.shape[0] < n or buf.shape[1:] != shape[1:] or buf.dtype != dtype:
            cap = max(n, 1, 2 * (buf.shape[0] if buf is not None else 0))
            buf = torch.empty((cap, *shape[1:]), dtype=dtype, pin_memory=self.pinned)
            self._bufs[name] = buf
        return buf[:n]


class StepMarks:
    """Named points in a step's device work (CUDA events with timing) or host clock readings."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.points: dict[str, Any] = {}

    def mark(self, name: str, stream: torch.cuda.Stream | None = None) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record(stream)
            self.points[name] = event
        else:
            self.points[name] = time.perf_counter()

    def between(self, a: str, b: str) -> float | None:
        """Milliseconds from point ``a`` to point ``b`` (None if either was not reached)."""
        if a not in self.points or b not in self.points:
            return None
        if self.cuda:
            return float(self.points[a].elapsed_time(self.points[b]))
        return (self.points[b] - self.points[a]) * 1e3


PHASES = (("encode", "start", "encoded"), ("window", "encoded", "done"),
          ("device", "start", "done"), ("upload", "upload_start", "upload_end"))
"""A step's phases as (name, from point, to point). On CUDA "encode" (geometry writes, waiting
for the crops, the encoder, repeats) and "window" (the window head and the probabilities' copy
to the host) are spans of the model's stream, "device" is the whole of it, and "upload" the
crops' copy on the copy stream (when the step used it)."""


class PendingStep:
    """A submitted step. :meth:`result` waits for its device work and returns its windows'
    probabilities (NaN rows where a window was missing); it can be called any number of times."""

    def __init__(self, probs: torch.Tensor, ok: np.ndarray, done: torch.cuda.Event | None,
                 marks: StepMarks | None = None) -> None:
        self._probs: torch.Tensor | None = probs  # a view of the step's host set
        self._ok = ok
        self._done = done
        self._result: StepResult | None = None
        self.marks = marks

    def ready(self) -> bool:
        """The device work is done (result() will not wait)."""
        return self._result is not None or self._done is None or self._done.query()

    def collect(self) -> None:
        """Wait for the device work and copy the probabilities out of the host set (the tier
        does this before it reuses the set)."""
        if self._result is not None:
            return
        if self._done is not None:
            self._done.synchronize()
        assert self._probs is not None
        probs = self._probs.numpy().copy()
        probs[~self._ok] = np.nan
        self._result = StepResult(probs, ~self._ok)
        self._probs = None

    def result(self) -> StepResult:
        self.collect()
        assert self._result is not None
        return self._result

    def phases_ms(self) -> dict[str, float]:
        """Milliseconds per phase (``PHASES``) of a timed step, once it is done."""
        if self.marks is None:
            return {}
        self.collect()
        spans = {name: self.marks.between(a, b) for name, a, b in PHASES}
        return {k: round(v, 4) for k, v in spans.items() if v is not None}


class CropUpload:
    """Device inboxes (one per host set) filled on a copy stream (module docstring)."""

    def __init__(self, device: torch.device, image_size: int, sets: int = 2) -> None:
        self.device = device
        self.image_size = image_size
        self.stream = torch.cuda.Stream(device)
        self._inbox: list[torch.Tensor | None] = [None] * sets
        self._uploaded = [torch.cuda.Event() for _ in range(sets)]
        self._read = [torch.cuda.Event() for _ in range(sets)]

    def upload(self, i: int, staged: torch.Tensor, marks: StepMarks | None) -> torch.Tensor:
        """``staged`` (m, H, W, 3) pinned crops -> inbox ``i``'s first m rows, copied on the copy
        stream; the current stream waits for the copy before anything it runs next."""
        m, s = staged.shape[0], self.image_size
        inbox = self._inbox[i]
        if inbox is None or inbox.shape[0] < m:
            torch.cuda.synchronize(self.device)  # nothing reads or fills the old inbox any more
            cap = max(m, 2 * (inbox.shape[0] if inbox is not None else 0))
            inbox = torch.empty((cap, s, s, 3), dtype=torch.uint8, device=self.device)
            self._inbox[i] = inbox
        current = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self.stream):
            self.stream.wait_event(self._read[i])  # the model's stream read the last upload
            if marks is not None:
                marks.mark("upload_start", self.stream)
            inbox[:m].copy_(staged, non_blocking=True)
            if marks is not None:
                marks.mark("upload_end", self.stream)
            self._uploaded[i].record(self.stream)
        current.wait_event(self._uploaded[i])
        return inbox[:m]

    def read(self, i: int) -> None:
        """The current stream has queued every read of inbox ``i`` (the next upload waits)."""
        self._read[i].record(torch.cuda.current_stream(self.device))
