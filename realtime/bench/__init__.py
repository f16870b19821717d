"""fesnet-bench: how fast the spotter runs on this machine, as JSON plus a PNG plot.

What it measures (all in one run, so the ratios are comparable even on a noisy shared machine):

- per backend (torch eager, torch.compile on request, ONNX Runtime, TensorRT where available) and
  thread count: encoder latency for one frame (the streaming case), window-head latency for a batch
  of 1..N windows (N streams sharing one call), and the per-frame model cost while streaming at
  ``stride``: encode one frame + 1/stride of a window. Ratios to torch eager (``backends``).
- cached encoder vs naive recompute: a window costs ``stride`` single-frame encodes + the head when
  per-frame features are cached, against encoding all T frames + the head when they are not.
- the optical-flow input stage of most published spotters (TV-L1 and Farneback + optical strain
  on the same aligned crops, see ../optical_flow.py) against our per-frame model cost.
- end to end (with ``--video``, ``end_to_end``): the streaming pipeline's per-stage timings
  (decode, landmarks + align, encode, window, merge, emit; p50/p95/p99), capture -> event
  latency, sustained frames/s and dropped frames for 1..N concurrent streams, ``--pace live``
  replaying the file at its own frame rate (drops then mean "too slow for live"), ``--pace fast``
  as fast as possible.

Timings are medians and tail percentiles of wall-clock calls (``timing``). The model-only items
of one thread count run interleaved (round-robin, about ``--seconds`` each), so every backend and
the flow baseline see the same machine load and their ratios hold even when absolute numbers
drift. ``cli`` holds the command line, the settings (:class:`~.cli.BenchConfig`) and the report;
``plot`` draws it. docs/BENCHMARKS.md has the numbers from the project's 2-core machine and the
command that made them.
"""
