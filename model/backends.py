"""Inference backends: one interface over torch, ONNX Runtime and TensorRT.

A backend exposes the model's two functions on numpy arrays, batch-shaped so that frames and
windows from several streams can share one call (and so the model tier can later move to an
inference server as just another backend):

    encode(frames_u8 (N,112,112,3) uint8) -> (x_prime (N,...), x_atten (N,...)) float32
    window(x_prime (B,T,...), x_atten (B,T,...)) -> probs (B,T,3) float32 (softmax)

Offline evaluation, training-time validation and the streaming engine all call these, so every
path shares the same model functions.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from .fesnet import FESNet


class Backend(Protocol):
    name: str

    def encode(self, frames_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def window(self, x_prime: np.ndarray, x_atten: np.ndarray) -> np.ndarray: ...


class TorchBackend:
    """Eager (or torch.compile'd) PyTorch on CPU or CUDA."""

    def __init__(
        self, net: FESNet, device: str = "cpu", compile: bool = False, threads: int | None = None
    ) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        self.name = "torch-compile" if compile else "torch"
        self.net = net.to(device).eval()
        self.device = device
        self._encode = self.net.encode_frames
        self._window = self.net.forward_window
        if compile:
            self._encode = torch.compile(self.net.encode_frames)
            self._window = torch.compile(self.net.forward_window)

    @torch.inference_mode()
    def encode(self, frames_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(frames_u8)).to(self.device)
        f = self._encode(x)
        return f.x_prime.float().cpu().numpy(), f.x_atten.float().cpu().numpy()

    @torch.inference_mode()
    def window(self, x_prime: np.ndarray, x_atten: np.ndarray) -> np.ndarray:
        xp = torch.from_numpy(np.ascontiguousarray(x_prime)).to(self.device)
        xa = torch.from_numpy(np.ascontiguousarray(x_atten)).to(self.device)
        logits = self._window(xp, xa)
        return torch.softmax(logits.float(), dim=-1).cpu().numpy()
