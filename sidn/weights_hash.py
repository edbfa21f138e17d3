"""The identity of a model's weights: one sha256 that ties an int8 calibration (sidn/int8/) and
an exported ONNX file (sidn/export.py) to the bundle whose weights they were made from."""

from __future__ import annotations

import hashlib

import torch

CALIBRATION_BUFFERS = ("threshold", "score_threshold")  # NaN = uncalibrated; not part of the weights


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 (hex) of a model's weights: names, dtypes, shapes and values of every state-dict
    entry except the calibration buffers, so recalibrating a bundle keeps its hash.

    Independent of the memory layout (channels_last or not); used to tie an exported ONNX file
    to the bundle it was exported from.
    """
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        if name in CALIBRATION_BUFFERS:
            continue
        t = state_dict[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()
