"""Known third-party start-up noise is dropped; every other line and warning still shows."""

from __future__ import annotations

import subprocess
import sys
import warnings

from fesnet.model.third_party_logs import ignore_known_warnings, quiet_onnx_export, quiet_quantize

NATIVE = """
import os, sys
from fesnet.model.third_party_logs import native_stderr_filtered
with native_stderr_filtered():
    os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n")
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are "
                b"written to STDERR\\n")
    os.write(2, b"W0000 00:00:1795646855.542431    4648 inference_feedback_manager.cc:114] "
                b"Feedback manager requires a model with a single signature inference. "
                b"Disabling support for feedback tensors.\\n")
    os.write(2, b"E0000 graph.cc:1] a real native error\\n")
    print("a python warning line", file=sys.stderr)
print("after", file=sys.stderr)
"""


def test_native_noise_is_dropped_and_real_lines_are_kept() -> None:
    err = subprocess.run([sys.executable, "-c", NATIVE], capture_output=True, text=True,
                         check=True).stderr
    assert err.splitlines() == ["E0000 graph.cc:1] a real native error", "a python warning line",
                                "after"]


def test_a_line_cut_off_by_a_file_size_limit_does_not_run_into_the_next() -> None:
    """``ulimit -f 200``: the held output stops inside the third noise line, which then matches
    nothing and is passed on, cut off; the next line written to stderr starts a line of its own
    (before: "...inference_feedback_fesnet-spot: error: ...")."""
    import resource

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))

    # Native loggers ignore a failed write (EFBIG past the limit); so does this stand-in.
    native = NATIVE.replace("os.write(2, ", "write(").replace(
        "with native_stderr_filtered():",
        "def write(data):\n    try:\n        os.write(2, data)\n    except OSError:\n"
        "        pass\nwith native_stderr_filtered():",
    ).replace('    print("a python warning line", file=sys.stderr)\n', "")
    err = subprocess.run([sys.executable, "-c", native], capture_output=True, text=True,
                         check=True, preexec_fn=small_files).stderr
    lines = err.splitlines()
    assert lines[-1] == "after" and lines[0].startswith("W0000 ")
    assert "inference_feedback_manager.cc" not in err  # cut off at the limit


def test_export_noise_is_dropped_only_inside_the_export() -> None:
    import logging

    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_onnx_export():
            assert registration.getEffectiveLevel() == logging.ERROR
            warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...",
                          FutureWarning, stacklevel=1)
            warnings.warn("a real problem", UserWarning, stacklevel=1)
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning,
                      stacklevel=1)
    assert [str(w.message) for w in seen] == [
        "a real problem",
        "`isinstance(treespec, LeafSpec)` is deprecated",
    ]
    assert registration.level == logging.NOTSET


def test_the_protobuf_deprecation_is_ignored_and_others_are_not() -> None:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ignore_known_warnings()
        warnings.warn("SymbolDatabase.GetPrototype() is deprecated. Please use ...", UserWarning,
                      stacklevel=1)
        warnings.warn("something else is deprecated", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["something else is deprecated"]


def test_the_quantizer_noise_is_dropped_only_while_quantizing(caplog) -> None:
    import logging

    hint = "Please consider to run pre-processing before quantization. Refer to example: ..."
    with caplog.at_level(logging.INFO), quiet_quantize():
        logging.info("Ignore MatMul due to non constant B: /[node_MatMul_362]")
        logging.warning(hint)
        logging.warning("a real quantizer problem")
    logging.warning(hint)
    assert [r.getMessage() for r in caplog.records] == ["a real quantizer problem", hint]


CONCURRENT = """
import os, sys, threading, time
from fesnet.model.third_party_logs import native_stderr_filtered
NOISE = (b"W0000 00:00:1795646855.542431    4648 inference_feedback_manager.cc:114] Feedback "
         b"manager requires a model with a single signature inference. Disabling support for "
         b"feedback tensors.\\n")
def stream(delay_s):
    time.sleep(delay_s)
    with native_stderr_filtered():
        time.sleep(0.2)
        os.write(2, NOISE)
        time.sleep(0.2)
threads = [threading.Thread(target=stream, args=(d,)) for d in (0.0, 0.1, 0.15)]
for t in threads:
    t.start()
for t in threads:
    t.join()
os.write(2, b"an error after start-up\\n")
"""


def test_streams_starting_at_once_drop_their_noise_and_keep_stderr() -> None:
    """Several streams start their aligners at once (a multi-stream run): before, the blocks
    restored each other's temporary file as stderr, so noise leaked or every later error of
    the process went into a deleted file."""
    err = subprocess.run([sys.executable, "-c", CONCURRENT], capture_output=True, text=True,
                         check=True, timeout=60).stderr
    assert err.splitlines() == ["an error after start-up"]


def test_the_exporter_graph_passes_are_quiet_at_info(tmp_path, caplog) -> None:
    """The viewers log at INFO: a fresh ONNX cache printed ~116 lines of onnx_ir / onnxscript
    passes (``fesnet-spot run``, at WARNING, printed none)."""
    import logging

    import torch

    from fesnet.model.fesnet import FESNet, FESNetConfig
    from fesnet.model.onnx_export import cached_onnx

    torch.manual_seed(0)
    with caplog.at_level(logging.INFO):
        cached_onnx(FESNet(FESNetConfig.tiny()).eval(), cache_dir=tmp_path)
    chatty = [r.name for r in caplog.records if r.name.startswith(("onnx_ir", "onnxscript"))]
    assert chatty == []
    assert any(r.name == "fesnet.model.onnx_export" for r in caplog.records)  # ours still shows
    assert logging.getLogger("onnx_ir").level == logging.NOTSET  # put back after the export


def test_ray_noise_is_dropped_only_inside_and_other_lines_show() -> None:
    """Records are caught on the very loggers Ray uses (Ray may have set them not to propagate,
    when another test imported it first)."""
    import logging

    from fesnet.model.third_party_logs import loggers_at, quiet_ray

    lines = [
        ("ray._private.authentication.authentication_token_setup", logging.WARNING,
         "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled "
         "to opt out. For more information, see https://docs.ray.io/..."),
        ("ray._private.authentication.authentication_token_setup", logging.WARNING,
         "Token authentication is disabled for this Ray cluster. Anyone with network access"),
        ("ray._private.worker", logging.WARNING,
         "SIGTERM handler is not set because current thread is not the main thread."),
        ("ray.serve", logging.INFO, 'Started Serve in namespace "serve".'),
        ("ray.client_builder", logging.INFO,
         "Passing the following kwargs to ray.init() on the server: log_to_driver"),
        ("ray.serve", logging.WARNING, "LongPollClient connection failed, shutting down."),
        ("ray.serve", logging.WARNING, "Failed to get queue length from Replica(...)"),
        ("ray._private.utils", logging.INFO,
         "Overwriting previous Ray address (127.0.0.1:46193). Running ray.init() on this node "
         "will now connect to the new instance at 127.0.0.1:36825."),
    ]
    seen: list[str] = []
    catch = logging.Handler()
    catch.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    names = sorted({name for name, _, _ in lines})

    def emit() -> list[str]:
        seen.clear()
        for name, level, message in lines:
            logging.getLogger(name).log(level, message)
        return list(seen)

    for name in names:
        logging.getLogger(name).addHandler(catch)
    try:
        with loggers_at(logging.INFO, *names):
            with quiet_ray():
                inside = emit()
            outside = emit()
    finally:
        for name in names:
            logging.getLogger(name).removeHandler(catch)
    assert inside == [lines[1][2], lines[6][2]]
    assert outside == [message for _, _, message in lines]


def test_the_cluster_side_drivers_sigterm_notice_is_dropped_from_ray_clients_log() -> None:
    """Ray Client streams its cluster-side driver's lines here for the whole connection (a
    run printed "SIGTERM handler is not set ..." now and then, after its own output began)."""
    import logging

    from fesnet.model.third_party_logs import RAY_CLIENT_LOG, quiet_ray_client_log

    seen: list[str] = []
    catch = logging.Handler()
    catch.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    log = logging.getLogger(RAY_CLIENT_LOG)
    log.addHandler(catch)
    try:
        quiet_ray_client_log()
        quiet_ray_client_log()  # once is enough: installing it twice changes nothing
        log.warning("SIGTERM handler is not set because current thread is not the main thread.")
        log.warning("a real warning from the cluster-side driver")
    finally:
        log.removeHandler(catch)
    assert seen == ["a real warning from the cluster-side driver"]
    assert len(log.filters) == 1


def test_ray_clients_message_volume_warning_is_dropped_and_others_show() -> None:
    """A server on ``ray://`` sends every camera's frames and windows to the model tier over
    Ray Client, which warns once past 10 MB that fine-grained tasks are slow over a client."""
    import warnings

    from fesnet.model.third_party_logs import quiet_ray_client_log

    volume = ("More than 10MB of messages have been created to schedule tasks on the server. "
              "This can be slow on Ray Client due to communication overhead over the network.")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_ray_client_log()
        warnings.warn_explicit(volume, UserWarning, "worker.py", 696,
                               module="ray.util.client.worker")
        warnings.warn_explicit(volume, UserWarning, "elsewhere.py", 1, module="elsewhere")
        warnings.warn_explicit("another warning", UserWarning, "worker.py", 700,
                               module="ray.util.client.worker")
    assert [w.filename for w in caught] == ["elsewhere.py", "worker.py"]
    assert str(caught[1].message) == "another warning"
