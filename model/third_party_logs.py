"""Known third-party start-up noise, silenced where it starts; every other warning still shows.

A first ``fesnet-spot`` printed about 15 lines before its first event that no user can act on:

- the ONNX exporter (torch 2.13) logs that torchvision is missing (it only registers
  torchvision's detection ops, which FESNet does not use), a FutureWarning about pytree's
  ``LeafSpec`` and a UserWarning about a dynamic axis name it merges;
- mediapipe's native graph, on its first frame, prints TensorFlow Lite's XNNPACK INFO line, an
  absl banner and one "Feedback manager" warning per model, straight to file descriptor 2
  (no environment variable turns these off in mediapipe 0.10.14);
- mediapipe's Python side triggers protobuf's ``SymbolDatabase.GetPrototype()`` deprecation;
- ONNX Runtime's quantizer logs on the root logger: a line per tensor it leaves alone (INFO)
  and a hint to pre-process the graph first, which only matters for static quantization's
  shape inference (:func:`quiet_quantize`);
- the ONNX exporter's graph passes (``onnx_ir``, ``onnxscript``) log about 116 INFO lines per
  export, shown wherever logging is at INFO (the viewers' servers);
- Ray, in cluster mode (:func:`quiet_ray`): Serve's INFO lines, Ray Client's note on the
  arguments it forwards, the notice that token authentication is on (the disabled warning
  still shows), "SIGTERM handler is not set" for a join off the main thread, the long-poll
  client's "connection failed" at our own disconnect, and a local cluster's "Overwriting
  previous Ray address" when another Ray on the machine wrote its address file first (it
  concerns a ``ray.init()`` without an address, which no command of ours makes). Ray Client
  also streams the log lines of the driver it runs for us on the cluster into this process,
  at any time during the connection; that driver starts on a gRPC thread and always says
  "SIGTERM handler is not set"; and Ray Client warns once that more than 10 MB of calls are
  slow over a client, which a server streaming cameras to the model tier always sends
  (:func:`quiet_ray_client_log`, both for the life of the process);
- FFmpeg naming what it could not find in a file OpenCV then fails to open ("moov atom not
  found"): the source's own error says which file and why (:data:`FFMPEG_OPEN_NOISE`).

Each is matched by its exact text, only around the code that causes it
(:func:`quiet_onnx_export`, :func:`native_stderr_filtered`, :func:`quiet_ray`) or, for the
protobuf deprecation that fires whenever mediapipe returns its first face, by a message filter
(:func:`ignore_known_warnings`). Anything else written meanwhile is passed on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence

NATIVE_NOISE = (
    re.compile(r"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.$"),
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called are "
               r"written to STDERR$"),
    re.compile(r"^W\d{4} [\d:. ]+\d+ inference_feedback_manager\.cc:\d+\] Feedback manager "
               r"requires a model with a single signature inference\. Disabling support for "
               r"feedback tensors\.$"),
)
EXPORT_WARNINGS = (
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
    (UserWarning, r"# The axis name: .* will not be used, since it shares the same shape "),
)
EXPORT_LOGGERS = ("torch.onnx._internal.exporter._registration",)  # "torchvision is not installed"
EXPORT_PASS_LOGGERS = ("onnx_ir", "onnxscript")  # INFO per graph pass; warnings still show
FFMPEG_OPEN_NOISE = (
    re.compile(r"^\[mov,mp4,m4a,3gp,3g2,mj2 @ 0x[0-9a-f]+\] moov atom not found$"),
)
RAY_INFO_LOGGERS = ("ray.serve", "ray.client_builder")
RAY_NOISE = {
    "ray._private.authentication.authentication_token_setup": re.compile(
        r"^Token authentication is enabled for this Ray cluster\. "
    ),
    "ray._private.worker": re.compile(
        r"^SIGTERM handler is not set because current thread is not the main thread\.$"
    ),
    "ray.serve": re.compile(r"^LongPollClient connection failed, shutting down\.$"),
    "ray._private.utils": re.compile(r"^Overwriting previous Ray address \("),
}
RAY_CLIENT_LOG = "ray.util.client.logsclient"  # the cluster-side driver's lines, streamed here
RAY_CLIENT_VOLUME_WARNING = r"More than 10MB of messages have been created to schedule tasks "
QUANTIZE_NOISE = re.compile(r"^Please consider to run pre-processing before quantization\.")


def ignore_known_warnings() -> None:
    """Process-wide: protobuf's deprecation of an API that mediapipe 0.10.14 calls."""
    warnings.filterwarnings(
        "ignore", r"SymbolDatabase\.GetPrototype\(\) is deprecated", UserWarning
    )


@contextlib.contextmanager
def loggers_at(level: int, *names: str) -> Iterator[None]:
    """These loggers at ``level`` for the block, their own levels back after it (a library runs
    inside other programs and test sessions: it must not change their logging for good)."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, old in zip(loggers, levels, strict=True):
            lg.setLevel(old)


@contextlib.contextmanager
def quiet_onnx_export() -> Iterator[None]:
    """Around a torch.onnx export: its known log lines and warnings are dropped."""
    with (
        warnings.catch_warnings(),
        loggers_at(logging.ERROR, *EXPORT_LOGGERS),
        loggers_at(logging.WARNING, *EXPORT_PASS_LOGGERS),
    ):
        for category, message in EXPORT_WARNINGS:
            warnings.filterwarnings("ignore", message, category)
        yield


def _drop_matching(known: re.Pattern[str]) -> Callable[[logging.LogRecord], bool]:
    return lambda record: not known.match(record.getMessage())


@contextlib.contextmanager
def quiet_ray() -> Iterator[None]:
    """Around joining or starting Ray, deploying on Serve and leaving: Ray's known lines
    (module docstring) are dropped, each matched by its logger and text; every other warning
    of Ray still shows."""

    filters = [(logging.getLogger(name), _drop_matching(p)) for name, p in RAY_NOISE.items()]
    for lg, f in filters:
        lg.addFilter(f)
    try:
        with loggers_at(logging.WARNING, *RAY_INFO_LOGGERS):
            yield
    finally:
        for lg, f in filters:
            lg.removeFilter(f)


@contextlib.contextmanager
def quiet_quantize() -> Iterator[None]:
    """Around ``onnxruntime.quantization``: its root-logger INFO lines and its pre-processing
    hint are dropped."""

    def keep(record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO and not QUANTIZE_NOISE.match(record.getMessage())

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


_RAY_CLIENT_FILTER = _drop_matching(RAY_NOISE["ray._private.worker"])


def quiet_ray_client_log() -> None:
    """Drop the "SIGTERM handler is not set" line that Ray Client's log stream brings over
    from the cluster-side driver (module docstring), and Ray Client's warning, once 10 MB of
    calls have gone to the cluster, that many fine-grained tasks are slow over a client (a
    server's cameras send every frame and window to the model tier that way: nothing to act
    on). Both come at any time during the connection, so the filters stay (installed once;
    other lines and warnings still show)."""
    log = logging.getLogger(RAY_CLIENT_LOG)
    if _RAY_CLIENT_FILTER not in log.filters:
        log.addFilter(_RAY_CLIENT_FILTER)
    warnings.filterwarnings("ignore", RAY_CLIENT_VOLUME_WARNING, UserWarning,
                            r"ray\.util\.client\.worker")


_STDERR_HELD = threading.RLock()


@contextlib.contextmanager
def native_stderr_filtered(known: Sequence[re.Pattern[str]] = NATIVE_NOISE) -> Iterator[None]:
    """What native code writes to file descriptor 2 inside the block is held in a temporary
    file; afterwards every line that is not ``known`` noise is written to stderr (delayed, never
    lost; under a file size limit, ``ulimit -f``, the held text stops at the limit). What is
    passed on always ends with a newline, so a line cut off in the middle never runs into the
    next thing written to stderr. Where stderr has no file descriptor (a captured stream),
    nothing is filtered.

    File descriptor 2 belongs to the whole process, so one block holds it at a time (a lock:
    blocks on other threads wait; a nested one on the same thread holds it inside the outer
    one). Two streams starting their aligners at once would otherwise each restore the other's
    temporary file as stderr, and every later error of the process would go to a deleted file."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    with _STDERR_HELD:
        yield from _held_stderr(fd, known)


def _held_stderr(fd: int, known: Sequence[re.Pattern[str]]) -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as held:  # a file, not a pipe: it cannot fill up and block
        os.dup2(held.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode("utf-8", "replace").splitlines(keepends=True)
            kept = [ln for ln in lines if not any(p.match(ln.rstrip("\n")) for p in known)]
            if kept:
                text = "".join(kept)
                sys.stderr.write(text if text.endswith("\n") else text + "\n")
                sys.stderr.flush()
