"""Affine uint8 quantisation, range observation and the deconvolution-as-convolution rewrite (see :mod:`sidn.int8`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

QP = tuple[float, int]  # (scale, zero point)


def qparams(lo: float, hi: float, levels: int = 255) -> QP:
    """(scale, zero point) of unsigned affine quantisation to ``0..levels`` covering [lo, hi] and 0."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = (hi - lo) / levels
    if not (scale > 0 and math.isfinite(scale)):
        scale = 1.0
    return scale, int(min(levels, max(0, round(-lo / scale))))


def quantize(x: Tensor, q: QP, levels: int = 255) -> Tensor:
    """float -> uint8 (channels_last) with ``q``, clamped to ``0..levels``."""
    s, zp = q
    y = torch.clamp(torch.round(x * (1.0 / s)) + zp, 0, levels).to(torch.uint8)
    return y.contiguous(memory_format=torch.channels_last)


def dequantize(q: Tensor, qp: QP) -> Tensor:
    s, zp = qp
    return (q.float() - zp) * s


def deconv_as_conv(weight: Tensor) -> Tensor:
    """Weight ``[ci, co, 4, 4]`` of ``ConvTranspose2d(k=4, s=2, p=1)`` -> ``[4co, ci, 2, 2]`` of its phase conv.

    ``deconv(x)[:, o, 2m+ry, 2n+rx] = conv2d(x, W, padding=1)[:, (2ry+rx)co + o, m+ry, n+rx]`` with
    ``W[(2ry+rx)co + o, c, a, b] = weight[c, o, 3-2a-ry, 3-2b-rx]`` (:func:`interleave` reassembles).
    """
    ci, co, kh, kw = weight.shape
    if (kh, kw) != (4, 4):
        raise ValueError(f"deconv_as_conv: expected a 4x4 kernel, got {kh}x{kw}")
    w = torch.empty(4 * co, ci, 2, 2, dtype=weight.dtype)
    for ry in (0, 1):
        for rx in (0, 1):
            p = 2 * ry + rx
            for a in (0, 1):
                for b in (0, 1):
                    w[p * co:(p + 1) * co, :, a, b] = weight[:, :, 3 - 2 * a - ry, 3 - 2 * b - rx].t()
    return w


def interleave(y: Tensor, co: int) -> Tensor:
    """``[B, 4co, H+1, W+1]`` phase outputs (:func:`deconv_as_conv`) -> ``[B, co, 2H, 2W]``, channels_last."""
    b, _, h1, w1 = y.shape
    h, w = h1 - 1, w1 - 1
    yn = y.permute(0, 2, 3, 1)  # NHWC view (y is channels_last)
    out = torch.empty((b, h, 2, w, 2, co), dtype=y.dtype, device=y.device)
    for ry in (0, 1):
        for rx in (0, 1):
            p = 2 * ry + rx
            out[:, :, ry, :, rx, :] = yn[:, ry:ry + h, rx:rx + w, p * co:(p + 1) * co]
    return out.view(b, 2 * h, 2 * w, co).permute(0, 3, 1, 2)


class Observer:
    """Running min/max of named float32 tensors (the calibration of the activation ranges).

    ``method="mse"`` also keeps a random sample of each tensor's values and :attr:`ranges`
    then gives, per tensor, the range (min/max shrunk towards 0) with the least quantisation
    error on the sample for ``levels``.
    """

    def __init__(self, method: str = "minmax", levels: int = 255, per_call: int = 32768, seed: int = 0) -> None:
        if method not in ("minmax", "mse"):
            raise ValueError(f"Observer method must be 'minmax' or 'mse', got {method!r}")
        self.method, self.levels, self.per_call = method, levels, per_call
        self.minmax: dict[str, list[float]] = {}
        self.samples: dict[str, list[Tensor]] = {}
        self._gen = torch.Generator().manual_seed(seed)

    def __call__(self, name: str, x: Tensor) -> Tensor:
        lo, hi = float(x.min()), float(x.max())
        r = self.minmax.setdefault(name, [lo, hi])
        r[0], r[1] = min(r[0], lo), max(r[1], hi)
        if self.method == "mse":
            flat = x.detach().reshape(-1).float()
            if flat.numel() > self.per_call:
                flat = flat[torch.randint(flat.numel(), (self.per_call,), generator=self._gen)]
            self.samples.setdefault(name, []).append(flat.clone())
        return x

    @property
    def ranges(self) -> dict[str, list[float]]:
        if self.method == "minmax":
            return {k: list(v) for k, v in self.minmax.items()}
        return {k: mse_range(torch.cat(self.samples[k]), v, self.levels) for k, v in self.minmax.items()}


def _qerr(x: Tensor, lo: float, hi: float, levels: int) -> float:
    s, zp = qparams(lo, hi, levels)
    return float(((torch.clamp(torch.round(x / s) + zp, 0, levels) - zp) * s - x).pow(2).mean())


def mse_range(x: Tensor, minmax: Sequence[float], levels: int = 255) -> list[float]:
    """The range [lo, hi] (``minmax`` shrunk towards 0) with the least rounding + clipping MSE on ``x``."""
    lo0, hi0 = min(float(minmax[0]), 0.0), max(float(minmax[1]), 0.0)
    best, best_err = [lo0, hi0], _qerr(x, lo0, hi0, levels)
    for f in (0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5):
        for lo, hi in ((lo0 * f, hi0 * f), (lo0, hi0 * f), (lo0 * f, hi0)):
            e = _qerr(x, lo, hi, levels)
            if e < best_err:
                best, best_err = [lo, hi], e
    return best

