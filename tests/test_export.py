"""ONNX export of the two graphs (vs torch, dynamic shapes, cache), calibration files, and the
parts of the TensorRT path that run without a GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fesnet.model import graphs, onnx_export, quantization_windows, tensorrt_export
from fesnet.model.fesnet import FESNet, FESNetConfig

ATOL = 1e-4


def real_crops(faces_dir: Path, n: int) -> np.ndarray:
    """Shipped real face photos (square face crops) as 112x112 RGB uint8 crops."""
    import cv2

    names = ["door-man.jpg", "single-face.jpg", "f1-su.jpg", "wolfgang.jpg", "astronaut.jpg"]
    crops = []
    for name in names[:n]:
        bgr = cv2.imread(str(faces_dir / name), cv2.IMREAD_COLOR)
        assert bgr is not None, name
        crops.append(cv2.cvtColor(cv2.resize(bgr, (112, 112), interpolation=cv2.INTER_AREA), 4))
    return np.stack(crops)


@pytest.fixture(scope="module")
def net() -> FESNet:
    torch.manual_seed(0)
    return FESNet(FESNetConfig.tiny()).eval()


@pytest.fixture(scope="module")
def onnx_files(net: FESNet, tmp_path_factory) -> onnx_export.OnnxFiles:
    return onnx_export.cached_onnx(net, tmp_path_factory.mktemp("onnx-cache"))


@pytest.fixture(scope="module")
def sessions(onnx_files: onnx_export.OnnxFiles):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return (
        ort.InferenceSession(str(onnx_files.encoder), opts, providers=["CPUExecutionProvider"]),
        ort.InferenceSession(str(onnx_files.window), opts, providers=["CPUExecutionProvider"]),
    )


@pytest.mark.parametrize("n_frames", [1, 5])
def test_encoder_matches_torch_on_real_and_random_frames(
    net, sessions, faces_dir, n_frames
) -> None:
    enc, _ = sessions
    rng = np.random.default_rng(n_frames)
    frames = {
        "real": real_crops(faces_dir, n_frames),
        "random": rng.integers(0, 256, (n_frames, 112, 112, 3), dtype=np.uint8),
    }
    for kind, x in frames.items():
        with torch.no_grad():
            ref = net.encode_frames(torch.from_numpy(x))
        got_p, got_a = enc.run(None, {"frames_u8": x})
        assert got_p.shape == tuple(ref.x_prime.shape), kind
        assert np.abs(got_p - ref.x_prime.numpy()).max() <= ATOL, kind
        assert np.abs(got_a - ref.x_atten.numpy()).max() <= ATOL, kind


@pytest.mark.parametrize("batch", [1, 3])
def test_window_head_returns_probabilities_matching_torch(net, sessions, faces_dir, batch) -> None:
    enc, win = sessions
    t = net.cfg.window_frames
    faces = real_crops(faces_dir, 5)
    x_prime, x_atten = enc.run(None, {"frames_u8": faces})
    rng = np.random.default_rng(batch)
    # window b: real faces in a different order per window, plus a random-feature window
    idx = np.stack([rng.integers(0, len(faces), t) for _ in range(batch)])
    xp, xa = x_prime[idx], x_atten[idx]
    xp[-1] = rng.standard_normal(xp[-1].shape).astype(np.float32)
    with torch.no_grad():
        logits = net.forward_window(torch.from_numpy(xp), torch.from_numpy(xa))
        ref = torch.softmax(logits, dim=-1).numpy()
    (probs,) = win.run(None, {"x_prime": xp, "x_atten": xa})
    assert probs.shape == (batch, t, 3)
    assert np.allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert np.abs(probs - ref).max() <= ATOL


def test_window_length_is_static(sessions, net) -> None:
    enc, win = sessions
    x_prime, x_atten = enc.run(None, {"frames_u8": np.zeros((16, 112, 112, 3), np.uint8)})
    with pytest.raises(Exception, match=r"(?i)dimension|shape"):
        win.run(None, {"x_prime": x_prime[None], "x_atten": x_atten[None]})


def test_verify_reports_disagreement(net, onnx_files) -> None:
    assert onnx_export.verify_onnx(net, onnx_files) <= ATOL
    other = FESNet(net.cfg).eval()  # other weights, same shapes
    with pytest.raises(graphs.ExportError, match="disagree"):
        onnx_export.verify_onnx(other, onnx_files)


def test_cache_hit_does_not_export_again(net, onnx_files, monkeypatch) -> None:
    def no_export(*args, **kwargs):
        raise AssertionError("re-exported although the cache holds the graphs")

    monkeypatch.setattr(onnx_export, "export_onnx", no_export)
    again = onnx_export.cached_onnx(net, onnx_files.encoder.parents[1])
    assert again == onnx_files


def test_cache_key_follows_weights_and_opset(net) -> None:
    other = FESNet(net.cfg)
    with torch.no_grad():
        other.load_state_dict(net.state_dict())
        assert onnx_export.cache_key(other, 18) == onnx_export.cache_key(net, 18)
        next(other.parameters()).add_(1e-3)
    assert onnx_export.cache_key(other, 18) != onnx_export.cache_key(net, 18)
    assert onnx_export.cache_key(net, 19) != onnx_export.cache_key(net, 18)


def test_calibration_file_round_trip_and_errors(tmp_path) -> None:
    windows = np.random.default_rng(0).integers(0, 256, (3, 32, 112, 112, 3), dtype=np.uint8)
    write = quantization_windows.write_calibration_windows
    read = quantization_windows.read_calibration_windows
    path = write(tmp_path / "calib.npz", windows, ["a", "b", "c"])
    assert np.array_equal(read(path, window_frames=32), windows)
    with pytest.raises(quantization_windows.QuantizationDataError, match="want"):
        quantization_windows.read_calibration_windows(path, window_frames=16)
    with pytest.raises(quantization_windows.QuantizationDataError, match="not found"):
        quantization_windows.read_calibration_windows(tmp_path / "nope.npz")
    np.savez(tmp_path / "wrong_key.npz", frames=windows)
    with pytest.raises(quantization_windows.QuantizationDataError, match="expected 'windows'"):
        quantization_windows.read_calibration_windows(tmp_path / "wrong_key.npz")
    np.savez(tmp_path / "float.npz", windows=windows.astype(np.float32))
    with pytest.raises(quantization_windows.QuantizationDataError, match="uint8"):
        quantization_windows.read_calibration_windows(tmp_path / "float.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(quantization_windows.QuantizationDataError, match="cannot read"):
        quantization_windows.read_calibration_windows(tmp_path / "junk.npz")


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the message on a machine without CUDA"
)
def test_tensorrt_reason_names_what_is_missing(net, tmp_path) -> None:
    reason = tensorrt_export.tensorrt_unavailable_reason("fp16")
    assert reason is not None
    assert "CUDA" in reason
    assert "torch_tensorrt" in reason
    assert "nvidia-modelopt" in tensorrt_export.tensorrt_unavailable_reason("int8")
    assert "unknown precision" in tensorrt_export.tensorrt_unavailable_reason("int4")
    with pytest.raises(graphs.ExportError, match="CUDA"):
        tensorrt_export.compile_tensorrt(net, tmp_path)


@pytest.mark.parametrize("geometry", [False, True], ids=["pixels", "geometry"])
def test_tensorrt_graphs_export_with_dynamic_batch_on_cpu(net, geometry: bool) -> None:
    """What torch_tensorrt.dynamo.compile receives: torch.export of both typed graphs at fp32 and
    fp16 (model.half()), float32 at their boundaries, with a dynamic frame/window batch; a
    network with a geometry channel takes geom as the window graph's third input."""
    from fesnet.model.head import with_geometry

    net = with_geometry(net).eval() if geometry else net
    for precision in ("fp32", "fp16"):
        dep, dtype = tensorrt_export.precision_net(net, precision)
        frames, window = graphs.example_inputs(dep)
        names = graphs.window_inputs(dep)
        assert len(names) == len(window) == (3 if geometry else 2)
        n = torch.export.Dim("n_frames", min=1, max=64)
        b = torch.export.Dim("batch", min=1, max=8)
        enc = torch.export.export(
            tensorrt_export.TypedEncoderGraph(dep),
            (frames,),
            dynamic_shapes={"frames_u8": {0: n}},
            strict=False,
        ).module()
        win = torch.export.export(
            tensorrt_export.TypedWindowGraph(dep, dtype),
            window,
            dynamic_shapes={name: {0: b} for name in names},
            strict=False,
        ).module()
        with torch.no_grad():
            ref = net.encode_frames(frames[:1])
            xp, xa = enc(frames[:1])
            probs = win(*(x[:1].repeat(3, *([1] * (x.ndim - 1))) for x in window))
        assert xp.dtype == xa.dtype == probs.dtype == torch.float32, precision
        assert xp.shape == ref.x_prime.shape and probs.shape == (3, net.cfg.window_frames, 3)
        assert torch.allclose(probs.sum(-1), torch.ones(3, net.cfg.window_frames), atol=1e-3)
        scale = ref.x_prime.abs().max()
        tol = 1e-5 if precision == "fp32" else 5e-2
        assert (xp - ref.x_prime).abs().max() <= tol * scale, precision
