"""make_backend: names, the ONNX Runtime backend against torch, and TensorRT's error path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fesnet.model import checkpoint
from fesnet.model.backends import (
    BackendUnavailable,
    OnnxBackend,
    TorchBackend,
    available_backends,
    make_backend,
)
from fesnet.model.fesnet import FESNet, FESNetConfig


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> checkpoint.Checkpoint:
    torch.manual_seed(1)
    path = checkpoint.save(tmp_path_factory.mktemp("ckpt") / "tiny.pt", FESNet(FESNetConfig.tiny()))
    return checkpoint.load(path)


@pytest.fixture(scope="module")
def onnx_backend(ckpt, tmp_path_factory) -> OnnxBackend:
    return make_backend("onnx", ckpt, cache_dir=tmp_path_factory.mktemp("cache"), threads=1)


def test_unknown_backend_name(ckpt) -> None:
    with pytest.raises(ValueError, match=r"unknown backend 'tensorflow'.*onnx"):
        make_backend("tensorflow", ckpt)


def test_torch_and_onnx_backends_agree_with_dynamic_batch(ckpt, onnx_backend) -> None:
    torch_backend = make_backend("torch", ckpt)
    assert isinstance(torch_backend, TorchBackend) and onnx_backend.name == "onnx"
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (35, 112, 112, 3), dtype=np.uint8)
    ref_p, ref_a = torch_backend.encode(frames)
    got_p, got_a = onnx_backend.encode(frames)
    assert got_p.dtype == got_a.dtype == np.float32
    assert np.abs(got_p - ref_p).max() <= 1e-4 and np.abs(got_a - ref_a).max() <= 1e-4
    t = ckpt.config.window_frames
    for batch in (1, 3):
        idx = np.arange(batch)[:, None] + np.arange(t)[None, :]
        ref = torch_backend.window(ref_p[idx], ref_a[idx])
        got = onnx_backend.window(got_p[idx], got_a[idx])
        assert got.shape == (batch, t, 3)
        assert np.abs(got - ref).max() <= 1e-4


def test_a_geometry_network_exports_and_runs_the_same_on_onnx(tmp_path) -> None:
    """The window graph of a network with a geometry channel takes geom as a third input;
    ONNX Runtime agrees with torch, both say which geometry they read, and geom is required."""
    from fesnet.model.geometry import GEOMETRY_DIMS, GeometryConfig
    from fesnet.model.head import with_geometry

    torch.manual_seed(2)
    net = with_geometry(FESNet(FESNetConfig.tiny()))
    torch.nn.init.normal_(net.mtam.inp.weight, std=0.3)  # let the geometry reach the output
    gcfg = GeometryConfig(neutral_s=6.0)
    ck = checkpoint.load(checkpoint.save(tmp_path / "geo.pt", net, {"geometry": gcfg.to_dict()}))
    ref_backend = make_backend("torch", ck)
    onnx = make_backend("onnx", ck, cache_dir=tmp_path / "cache", threads=1)
    assert ref_backend.geometry == onnx.geometry == gcfg
    rng = np.random.default_rng(0)
    xp, xa = ref_backend.encode(rng.integers(0, 256, (32, 112, 112, 3), dtype=np.uint8))
    geom = rng.normal(0, 1, (2, 32, GEOMETRY_DIMS)).astype(np.float32)
    xp, xa = np.stack([xp, xp]), np.stack([xa, xa])
    ref = ref_backend.window(xp, xa, geom)
    assert np.abs(onnx.window(xp, xa, geom) - ref).max() <= 1e-4
    assert not np.array_equal(ref[0], ref[1])  # the geometry reaches the output
    with torch.no_grad():
        out = net.eval().forward_window(torch.from_numpy(xp), torch.from_numpy(xa),
                                        torch.from_numpy(geom), return_all=True)
    temporal = out.proposals[1]  # the MTAM's temporal proposal reads the geometry directly
    assert (temporal[0] - temporal[1]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="geom"):
        onnx.window(xp, xa)


def test_onnx_backend_checks_its_inputs(onnx_backend) -> None:
    with pytest.raises(ValueError, match="uint8"):
        onnx_backend.encode(np.zeros((1, 112, 112, 3), np.float32))
    x_prime, x_atten = onnx_backend.encode(np.zeros((8, 112, 112, 3), np.uint8))
    with pytest.raises(ValueError, match="T=32"):
        onnx_backend.window(x_prime[None], x_atten[None])


def test_onnx_restart_reuses_the_cached_export(ckpt, onnx_backend, monkeypatch) -> None:
    from fesnet.model import onnx_export

    monkeypatch.setattr(onnx_export, "export_onnx", lambda *a, **k: pytest.fail("exported again"))
    cache = onnx_backend.encoder_path.parents[1]
    again = make_backend("onnx", ckpt, cache_dir=cache)
    assert again.encoder_path == onnx_backend.encoder_path
    frames = np.zeros((2, 112, 112, 3), np.uint8)
    assert np.array_equal(again.encode(frames)[0], onnx_backend.encode(frames)[0])


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the message on a machine without CUDA"
)
def test_tensorrt_unavailable_names_what_is_missing(ckpt) -> None:
    with pytest.raises(BackendUnavailable) as err:
        make_backend("tensorrt", ckpt, precision="fp16")
    msg = str(err.value)
    assert "no CUDA device" in msg
    assert "torch_tensorrt cannot be imported" in msg
    assert "tensorrt" not in available_backends()
    assert {"torch", "onnx", "onnx-int8"} <= set(available_backends())


def test_onnx_int8_quantizes_the_encoders_matmuls_once(
    ckpt, onnx_backend, still_aligner, faces_dir, monkeypatch, caplog
) -> None:
    """Real ONNX Runtime on real aligned faces: every MatMul of the encoder with weights is INT8
    (the attention's activation x activation products stay float), its convolutions stay
    float, its windows score close to the float graph's, and a restart reuses the file."""
    import cv2
    import onnx
    from onnxruntime import quantization

    int8 = make_backend("onnx-int8", ckpt, cache_dir=onnx_backend.encoder_path.parents[1])
    assert int8.name == "onnx-int8" and int8.encoder_path.name == "encoder.int8.onnx"
    assert int8.window_path == onnx_backend.window_path
    fp32 = onnx.load(str(onnx_backend.encoder_path)).graph
    weights = {w.name for w in fp32.initializer}
    with_weights = [n for n in fp32.node if n.op_type == "MatMul" and n.input[1] in weights]
    ops = [n.op_type for n in onnx.load(str(int8.encoder_path)).graph.node]
    assert with_weights and ops.count("MatMulInteger") == len(with_weights)
    assert ops.count("Conv") == [n.op_type for n in fp32.node].count("Conv")
    crops = []
    for path in sorted(faces_dir.glob("*.jpg"))[:4]:
        still_aligner.reset()
        crop = still_aligner.align(cv2.imread(str(path))).crop
        assert crop is not None
        crops.append(crop)
    frames = np.stack([crops[i % len(crops)] for i in range(32)])
    want = onnx_backend.window(*(x[None] for x in onnx_backend.encode(frames)))
    got = int8.window(*(x[None] for x in int8.encode(frames)))
    assert np.abs(got - want).max() < 0.05
    assert not [r for r in caplog.records if r.name == "root"]  # the quantizer's hint is dropped

    monkeypatch.setattr(quantization, "quantize_dynamic", lambda *a, **k: pytest.fail("again"))
    again = make_backend("onnx-int8", ckpt, cache_dir=onnx_backend.encoder_path.parents[1])
    assert np.array_equal(again.encode(frames)[0], int8.encode(frames)[0])
