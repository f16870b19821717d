"""The one loader: every program gets the same checkpoint, backend, merger config, stride and
profile from the same settings, and ``window_frames`` has one owner (the model config)."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fesnet.model import checkpoint
from fesnet.model.backends import BACKENDS
from fesnet.model.fesnet import FESNet, FESNetConfig
from fesnet.model.merger import MergerConfig
from fesnet.model.runtime import (
    AUTO,
    BACKEND_CHOICES,
    LoadError,
    RuntimeConfig,
    add_runtime_arguments,
    load_runtime,
    merger_config,
    runtime_config,
)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    meta = {"merger": {"on_threshold": 0.7, "off_threshold": 0.4}, "stride_frames": 4}
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    return checkpoint.save(path, FESNet(FESNetConfig.tiny()), meta)


class Stricter:
    """A stand-in profile: raises both thresholds by 0.1."""

    name = "stricter"

    def apply(self, base: MergerConfig) -> MergerConfig:
        return replace(base, on_threshold=base.on_threshold + 0.1,
                       off_threshold=base.off_threshold + 0.1)


def test_the_checkpoint_gives_merger_stride_and_window_length(tiny_ckpt: Path) -> None:
    rt = load_runtime(RuntimeConfig(tiny_ckpt, "torch"))
    assert rt.backend.name == "torch"
    assert (rt.merger.on_threshold, rt.merger.off_threshold) == (0.7, 0.4)
    assert rt.stride_frames == 4 and rt.merger == rt.base_merger and rt.profile is None
    assert rt.window_frames == rt.merger.window_frames == FESNetConfig.tiny().window_frames
    assert load_runtime(RuntimeConfig(tiny_ckpt, "torch", stride_frames=16)).stride_frames == 16


def test_the_quick_latency_takes_the_checkpoints_quick_merger_and_stride(
    tiny_ckpt: Path, tmp_path: Path
) -> None:
    """``--latency quick``: the checkpoint's ``"quick"`` entry (merger and stride fitted for
    quicker events); an explicit stride or merger JSON still wins; a checkpoint without the
    entry, and the fused method (one merger), refuse it with a line that says what to do."""
    quick = tmp_path / "quick.pt"
    checkpoint.save(quick, checkpoint.load(tiny_ckpt).net, {
        "merger": {"on_threshold": 0.7, "off_threshold": 0.4}, "stride_frames": 8,
        "quick": {"merger": {"on_threshold": 0.9, "off_threshold": 0.6}, "stride_frames": 2},
    })
    accurate = load_runtime(RuntimeConfig(quick, "torch"))
    assert (accurate.stride_frames, accurate.merger.on_threshold) == (8, 0.7)
    rt = load_runtime(RuntimeConfig(quick, "torch", latency="quick"))
    assert (rt.stride_frames, rt.merger.on_threshold, rt.merger.off_threshold) == (2, 0.9, 0.6)
    assert rt.window_frames == rt.merger.window_frames
    assert load_runtime(RuntimeConfig(quick, "torch", stride_frames=4,
                                      latency="quick")).stride_frames == 4
    with pytest.raises(LoadError, match=r"has no quick merger.*latency_sweep\.py --quick"):
        load_runtime(RuntimeConfig(tiny_ckpt, "torch", latency="quick"))
    with pytest.raises(LoadError, match="drop --latency quick"):
        load_runtime(RuntimeConfig(quick, "torch", latency="quick", method="fused"))
    with pytest.raises(LoadError, match="unknown latency"):
        load_runtime(RuntimeConfig(quick, "torch", latency="fast"))
    parser = argparse.ArgumentParser()
    add_runtime_arguments(parser)
    assert runtime_config(parser.parse_args(["--latency", "quick"])).latency == "quick"
    assert runtime_config(parser.parse_args([])).latency == "accurate"


def test_a_merger_json_and_a_profile_come_after_the_checkpoint(
    tiny_ckpt: Path, tmp_path: Path
) -> None:
    path = tmp_path / "merger.json"
    path.write_text(json.dumps({"on_threshold": 0.8, "off_threshold": 0.5}))
    rt = load_runtime(RuntimeConfig(tiny_ckpt, "torch", merger_config=path), Stricter())
    assert rt.base_merger.on_threshold == 0.8
    assert rt.merger.on_threshold == pytest.approx(0.9)
    assert rt.merger.off_threshold == pytest.approx(0.6)


def test_window_frames_has_one_owner(tiny_ckpt: Path, tmp_path: Path) -> None:
    ck = checkpoint.load(tiny_ckpt)
    t = ck.config.window_frames
    bad = tmp_path / "merger.json"
    bad.write_text(json.dumps({"window_frames": t // 2}))
    with pytest.raises(LoadError, match="the checkpoint owns the window length"):
        merger_config(ck, bad)
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps({"window_frames": t, "on_threshold": 0.6}))
    assert merger_config(ck, ok).window_frames == t
    short = replace(ck, config=FESNetConfig.from_dict({**ck.config.to_dict(), "window_frames": 16}))
    assert merger_config(short).window_frames == 16  # set from the model, not the default 32


def test_loading_errors_say_what_to_do(tiny_ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(LoadError, match=r"missing\.pt not found"):
        load_runtime(RuntimeConfig(tmp_path / "missing.pt"))
    typo = tmp_path / "typo.json"
    typo.write_text('{"on_treshold": 0.5}')
    with pytest.raises(LoadError, match="on_treshold"):
        load_runtime(RuntimeConfig(tiny_ckpt, "torch", merger_config=typo))
    with pytest.raises(LoadError, match="unknown backend"):
        load_runtime(RuntimeConfig(tiny_ckpt, "jax"))
    with pytest.raises(LoadError, match=">= 1"):
        load_runtime(RuntimeConfig(tiny_ckpt, "torch", stride_frames=0))
    if not torch.cuda.is_available():  # asked for by name, never replaced by another backend
        with pytest.raises(LoadError, match="try --backend torch"):
            load_runtime(RuntimeConfig(tiny_ckpt, "tensorrt"))


def test_auto_falls_back_to_torch_only_when_onnx_cannot_run(
    tiny_ckpt: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from fesnet.model import backends

    def no_onnx(*args, **kwargs):
        raise backends.BackendUnavailable("onnx backend needs onnxruntime: not installed")

    monkeypatch.setattr(backends.OnnxBackend, "from_net", no_onnx)
    rt = load_runtime(RuntimeConfig(tiny_ckpt, AUTO, threads=1))
    assert rt.backend.name == "torch"
    assert "ONNX Runtime backend unavailable" in caplog.text
    with pytest.raises(LoadError, match="needs onnxruntime"):
        load_runtime(RuntimeConfig(tiny_ckpt, "onnx"))


def test_every_command_line_spells_the_config_the_same_way(tiny_ckpt: Path) -> None:
    assert (AUTO, *BACKENDS) == BACKEND_CHOICES
    parser = argparse.ArgumentParser()
    add_runtime_arguments(parser)
    args = parser.parse_args(["--checkpoint", str(tiny_ckpt), "--backend", "torch",
                              "--stride", "2"])
    assert runtime_config(args) == RuntimeConfig(tiny_ckpt, "torch", 1, None, 2)
    assert parser.parse_args([]).backend == AUTO


class RecordingPlacement:
    """A placement (the role of the Ray model tier): records each time it is asked to place the
    network, and places it here."""

    def __init__(self) -> None:
        self.asked: list[RuntimeConfig] = []

    def backend(self, ckpt: checkpoint.Checkpoint, config: RuntimeConfig):
        from fesnet.model.backends import TorchBackend

        self.asked.append(config)
        return TorchBackend(ckpt.net)


def test_a_placed_model_follows_the_same_rules_before_anything_is_placed(tiny_ckpt: Path) -> None:
    """In-process and on a cluster, one loader: the stride is checked against the window (and the
    method against the placement) before the network is placed anywhere."""
    placement = RecordingPlacement()
    with pytest.raises(LoadError, match="longer than a window"):
        load_runtime(RuntimeConfig(tiny_ckpt, "torch", stride_frames=40), placement=placement)
    with pytest.raises(LoadError, match="in this process only"):
        load_runtime(RuntimeConfig(tiny_ckpt, method="landmarks"), placement=placement)
    assert placement.asked == []
    placed = load_runtime(RuntimeConfig(tiny_ckpt, "torch"), Stricter(), placement)
    here = load_runtime(RuntimeConfig(tiny_ckpt, "torch"), Stricter())
    assert len(placement.asked) == 1
    assert (placed.stride_frames, placed.merger, placed.base_merger, placed.window_frames) == (
        here.stride_frames, here.merger, here.base_merger, here.window_frames)


def test_the_cluster_command_line_refuses_a_stride_longer_than_a_window(
    tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``run --cluster auto --stride 40`` is refused as in-process is (exit 2, one line), before
    any Ray process starts."""
    from fesnet.realtime.cli import main

    rc = main(["run", "--cluster", "auto", "--stride", "40", "--checkpoint", str(tiny_ckpt),
               "--backend", "torch", "--source", str(tmp_path / "any.mp4")])
    err = capsys.readouterr().err
    assert rc == 2 and "longer than a window" in err and "Traceback" not in err
