"""int8 inference of SIDN on the CPU (oneDNN): the fast mode that needs no bf16 hardware (issue 11).

:func:`make_int8` turns a :class:`~sidn.model.sidn.SIDN` and an :class:`Int8Calibration` into an
:class:`Int8SIDN`: an inference-only copy that returns the model's :class:`SIDNOutput` (float32
tensors) and runs the convolutions as oneDNN int8 primitives (``torch.ops.onednn.qconv2d_pointwise``,
the kernels ``torch.compile`` emits for PT2E-quantised models on x86, called directly, so nothing
is compiled). What is int8 and what is not:

* every FEM/FSEM convolution (BatchNorm folded in): uint8 activations, int8 weights (per output
  channel, symmetric), int32 accumulation, with the ReLU and, in a residual block, the skip
  addition fused into the primitive (oneDNN ``sum`` post-op), re-quantised to uint8 on output;
* the SM deconvolutions (``ConvTranspose2d(k=4, s=2, p=1)``): PyTorch has no int8 transposed
  convolution with per-channel weights, so each one runs as the equivalent 2x2 int8 convolution
  to the four output phases followed by an interleave (:func:`deconv_as_conv`; same MACs);
* kept in float32: the FEM stem (one input channel, 0.3 % of the MACs; its output is written
  as uint8 by the same oneDNN call, :class:`FloatStem`), the GSRM (its softmax over unscaled
  centre similarities turns small errors into a different centre) and, per ``tail``
  (:data:`TAILS`), the end of the SM: ``"block"`` the last
  deconvolution block and the head, ``"head"`` (default) only the head, the last block's int8
  result being read out in float32 without re-quantisation, ``"none"`` nothing (the head is
  an int8 convolution with float32 output). The sigmoids and the fusion of eq. (26) are float32.

Schemes (:func:`int8_scheme`). CPUs with VNNI (AVX512-VNNI, AVX-VNNI) or AMX multiply uint8 by
int8 exactly (``u8s8``). Without VNNI (AVX2, AVX-512 without VNNI) oneDNN multiplies with
``vpmaddubsw``, whose 16-bit pair sums saturate for 8-bit activations times 8-bit weights (seen
under ``ONEDNN_MAX_CPU_ISA=AVX2``: fused map 0.2 off). There the activations are quantised to 7
bits (``u7s8``: 0..127), which cannot saturate, so the integer results are exact on every ISA.
7-bit *weights* would do the same but cost 4x the error (FSEM output 7 % instead of 1.6 % rms
on a trained model), hence 7-bit activations. The scheme is found by running one probe
convolution (:func:`int8_scheme`), which also honours ``ONEDNN_MAX_CPU_ISA``.

Calibration (:func:`calibrate_int8`): activation ranges (min/max) are observed on the float32
model (BN folded) over held-out good images and the DGM validation set
(:func:`sidn.data.dgm.make_validation_set`), never a test split; then the int8 model is judged
against float32 on what users see (:func:`parity_report`): pixel AUROC and image AUROC on the
DGM validation set within :data:`AUROC_TOL` (0.005), and the same number of false alarms on the
good images at the calibrated threshold (the model's, else the one ``sidn calibrate`` would pick
from the float32 maps); the max |diff| of the fused map is reported. Each scheme that computes
exactly on this machine is judged (``u7s8`` always, ``u8s8`` on VNNI/AMX machines).

A caveat found on the small models this was tested on: the GSRM's softmax over *unscaled*
centre similarities (``gsrm_scale = 1``) is nearly one-hot, so where two centres are almost
equally close a small change of the FSEM output picks the other centre and the map jumps
there (a 64 px leather model: 0.25 % of the texture positions switch centre under u8s8, none
under bf16; max |diff| of the fused map 0.18 against 0.03). Pixel AUROC does not notice, but
the image score (the map's maximum) of a few images moves, and image AUROC on a DGM validation
set can then miss the 0.005 (on the same model bf16 itself was 0.0064 off). Hence the
variants (:func:`variants`): if int8 FSEM branches miss parity, the FSEM runs in float (bf16
where native, else fp32: ``+bf16fsem`` / ``+fp32fsem``; the FEM and SM stay int8), and if
that misses too the float fast mode is served. Which one passes depends on the model.

Measured on the 2-core AMD EPYC (Zen 4: AVX512-VNNI/BF16, no AMX) this was written on, under
other people's load (1-min load 4.8-6 on 2 CPUs), batch 1, 256x256, best of 20 interleaved
runs, one thread (two threads were slower than one at that load): fp32 79 ms, bf16 fast mode
40, int8 ``u8s8`` 26 (``u7s8`` 25, float FSEM 32, ``tail="block"`` 29); with
``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` (onednn's kernels and ATen's, so an AVX2
machine as far as these ops go): fp32 77, float fast mode 69, int8 ``u7s8`` 41 (fp32 FSEM 56).
Batch 16 is run in chunks of :data:`CHUNK` images (per image 37.6 -> 25.6 ms, cache).

Alternatives tried (issue 11): onnxruntime 1.32 ``quantize_static`` (QDQ, per-channel,
calibration reader) leaves ``ConvTranspose`` in fp32 and did not fold the SM's BatchNorms;
at batch 1, 256 px, 2 threads it ran 101-140 ms against 127 ms for its own fp32 and 49 ms for
the bf16 fast mode here, and its MLAS kernels pick their ISA from CPUID (no way to emulate an
AVX2 machine; U8S8 on AVX2 has the same ``vpmaddubsw`` saturation). PyTorch's eager
``quantized::conv_transpose2d`` refuses per-channel weights (and quantized tensors are
deprecated); PT2E + ``torch.compile`` would emit these same oneDNN kernels after 10-65 s of
compilation per process.

The result, an :class:`Int8Calibration` (primitives only), ties itself to the weights by
:func:`sidn.weights_hash.weights_sha256` and can live in a bundle's ``extra``
(:func:`sidn.bundle.store_int8_calibration`, :func:`from_bundle_extra`). :func:`attach` hangs it on a model; :func:`sidn.fast_model.make_fast`
(and so ``Predictor(fast=True)``) then serves int8 when the calibration passed for this CPU's
scheme, and otherwise falls back to the float fast mode and says why (``note``).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sidn.device import bf16_autocast_supported
from sidn.fast_model import FastForm, GemmHead, fold_batchnorm, fuse_onednn
from sidn.model.fem import ResidualBlock
from sidn.model.sidn import SIDN, SIDNOutput, check_input_shape
from sidn.weights_hash import weights_sha256

INT8_FORMAT = "sidn-int8/1"
SCHEMES = ("u8s8", "u7s8")  # activation levels 255 / 127, int8 weights
_LEVELS = {"u8s8": 255, "u7s8": 127}
TAILS = ("block", "head", "none")
FSEMS = ("int8", "float")  # the FSEM branches in int8, or in float (bf16 where native, else fp32)
DEFAULT_TAIL = "head"
W_QMAX = 127  # int8 weights, symmetric per output channel
CHUNK = 4  # Int8SIDN runs larger batches in chunks of this many images
AUROC_TOL = 0.005  # |int8 - fp32| allowed for pixel and image AUROC (issue 11)
BUNDLE_KEY = "int8"  # key of the calibration in a bundle's extra

QP = tuple[float, int]  # (scale, zero point)


# ------------------------------------------------------------------------------ CPU support


def _onednn_int8_ops() -> bool:
    ops = torch.ops.onednn
    return torch.backends.mkldnn.is_available() and all(
        hasattr(ops, n) for n in ("qconv_prepack", "qconv2d_pointwise"))


@functools.lru_cache(maxsize=None)
def _exact_at(levels: int) -> bool:
    """True if a oneDNN int8 conv of ``levels`` x 127 products sums exactly here (no saturation)."""
    try:
        ci = 8
        x = torch.full((1, ci, 2, 2), levels, dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
        w = torch.full((4, ci, 1, 1), W_QMAX, dtype=torch.int8).contiguous(memory_format=torch.channels_last)
        ws, wzp = torch.ones(4), torch.zeros(4, dtype=torch.int32)
        packed = torch.ops.onednn.qconv_prepack(w, ws, 1.0, 0, [1, 1], [0, 0], [1, 1], 1, [1, ci, 2, 2])
        y = torch.ops.onednn.qconv2d_pointwise(x, 1.0, 0, packed, ws, wzp, None, [1, 1], [0, 0], [1, 1], 1, 1.0, 0,
                                               torch.float32, "none", [], "")
        return bool((y == float(ci * levels * W_QMAX)).all())
    except Exception:  # no oneDNN int8 kernels for this CPU / build
        return False


def int8_scheme(device: torch.device | str = "cpu") -> str | None:
    """The int8 scheme ``device`` runs exactly: ``"u8s8"`` (VNNI/AMX), ``"u7s8"`` (other x86), None (no int8).

    Only the CPU with oneDNN int8 kernels qualifies. Found with a probe convolution (cached), so
    ``ONEDNN_MAX_CPU_ISA`` (e.g. ``AVX2`` to emulate an older CPU) is honoured.
    """
    if torch.device(device).type != "cpu" or not _onednn_int8_ops():
        return None
    if _exact_at(255):
        return "u8s8"
    return "u7s8" if _exact_at(127) else None


def checkable_schemes(device: torch.device | str = "cpu") -> list[str]:
    """Schemes whose int8 results this machine computes exactly (as any CPU would), best first."""
    s = int8_scheme(device)
    return [] if s is None else list(SCHEMES[SCHEMES.index(s):])


def _float_dtype(device: torch.device | str = "cpu") -> torch.dtype:
    """bf16 where the CPU computes it natively, else float32: the precision of a float FSEM."""
    return torch.bfloat16 if bf16_autocast_supported(device, require_native=True) else torch.float32


def int8_mode_name(scheme: str, tail: str = DEFAULT_TAIL, fsem: str = "int8") -> str:
    """Mode string of an :class:`Int8SIDN` (steps joined by ``+``, as :func:`sidn.fast_model.fast_mode`)."""
    parts = ["foldbn", "int8"]
    if scheme == "u7s8":
        parts.append("u7")
    if fsem == "float":
        parts.append("bf16fsem" if _float_dtype() == torch.bfloat16 else "fp32fsem")
    parts += {"block": ["fp32tail"], "head": ["fp32head"], "none": []}[tail]
    return "+".join(parts + ["channels_last", "onednn"])


def variant_name(scheme: str, fsem: str = "int8") -> str:
    """Key of a scheme + FSEM precision in :attr:`Int8Calibration.parity`: ``u8s8``, ``u8s8+floatfsem``, ..."""
    return scheme if fsem == "int8" else f"{scheme}+floatfsem"


def variants(device: torch.device | str = "cpu") -> list[tuple[str, str]]:
    """``(scheme, fsem)`` pairs this machine computes exactly, fastest first (int8 FSEM before float FSEM)."""
    schemes = checkable_schemes(device)
    return [(s, "int8") for s in schemes] + [(s, "float") for s in schemes]


# ------------------------------------------------------------------------------ quantisation


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


class QConv(nn.Module):
    """``relu?(conv(x) [+ accum])`` as one oneDNN int8 primitive; float32 in :meth:`observe`.

    Input uint8 with ``in_q``; output uint8 with ``out_q`` or, if ``out_q`` is None, float32.
    ``accum`` (uint8, ``accum_q``) is added before the ReLU (the residual skip); oneDNN writes
    the result over it, so it must not be used afterwards.
    """

    def __init__(self, name: str, weight: Tensor, bias: Tensor | None, padding: int, relu: bool,
                 stride: int = 1) -> None:
        super().__init__()
        self.name = name
        self.weight = weight.detach().float().clone()
        self.bias = (torch.zeros(weight.shape[0]) if bias is None else bias.detach().float()).clone()
        self.stride, self.padding, self.relu = [stride, stride], [padding, padding], relu
        self.packed: Tensor | None = None

    @classmethod
    def of(cls, name: str, conv: nn.Conv2d, relu: bool) -> "QConv":
        if conv.groups != 1 or tuple(conv.dilation) != (1, 1) or len(set(conv.stride)) != 1 \
                or len(set(conv.padding)) != 1 or conv.padding_mode != "zeros":
            raise ValueError(f"{name}: unsupported convolution {conv}")
        return cls(name, conv.weight, conv.bias, conv.padding[0], relu, conv.stride[0])

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    def observe(self, x: Tensor, obs: Observer, accum: Tensor | None = None) -> Tensor:
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding)
        if accum is not None:
            y = y + accum
        if self.relu:
            y = torch.relu(y)
        return obs(self.name, y)

    def prepare(self, in_q: QP, out_q: QP | None, in_shape: Sequence[int], accum_q: QP | None = None) -> None:
        w = self.weight
        ws = (w.abs().amax(dim=(1, 2, 3)) / W_QMAX).clamp_min(1e-12)
        wq = torch.round(w / ws[:, None, None, None]).clamp(-W_QMAX, W_QMAX).to(torch.int8)
        self.in_q, self.out_q, self.accum_q = in_q, out_q, accum_q
        self.w_scale = ws.float()
        self.w_zp = torch.zeros(w.shape[0], dtype=torch.int32)
        self.packed = torch.ops.onednn.qconv_prepack(
            wq.contiguous(memory_format=torch.channels_last), self.w_scale, in_q[0], in_q[1], self.stride,
            self.padding, [1, 1], 1, list(in_shape))

    def forward(self, qx: Tensor, accum: Tensor | None = None) -> Tensor:
        if self.out_q is None:
            os_, ozp, odt = 1.0, 0, torch.float32
        else:
            os_, ozp, odt = self.out_q[0], self.out_q[1], None
        act = "relu" if self.relu else "none"
        if accum is not None:
            return torch.ops.onednn.qconv2d_pointwise.binary(
                qx, self.in_q[0], self.in_q[1], self.packed, self.w_scale, self.w_zp, accum, self.bias,
                self.stride, self.padding, [1, 1], 1, os_, ozp, odt, self.accum_q[0], self.accum_q[1], "sum", 1.0,
                act, [], "")
        return torch.ops.onednn.qconv2d_pointwise(
            qx, self.in_q[0], self.in_q[1], self.packed, self.w_scale, self.w_zp, self.bias, self.stride,
            self.padding, [1, 1], 1, os_, ozp, odt, act, [], "")


class FloatStem(nn.Module):
    """The FEM stem (one input channel) as a float32 oneDNN conv whose output is uint8.

    int8 weights would cost this layer most of the model's error: its 9-tap filters on smooth
    gray images respond with small differences of large sums, which rounding the weights
    shifts (fused map 0.04 instead of 0.019 off on a trained model). In float32 it costs ~0.5 ms
    more per 256 px image: the 1/scale, the rounding offset and the clip to the uint8 range are
    folded into the weights, the bias and a fused ``hardtanh`` (which is also the ReLU), so only
    the final conversion to uint8 is an extra pass.
    """

    def __init__(self, name: str, conv: nn.Conv2d) -> None:
        super().__init__()
        self.inner = QConv.of(name, conv, relu=True)  # weights, geometry and the float32 observe
        self.name = name

    @property
    def out_channels(self) -> int:
        return self.inner.out_channels

    def observe(self, x: Tensor, obs: Observer) -> Tensor:
        return self.inner.observe(x, obs)

    def prepare(self, out_q: QP, in_shape: Sequence[int], levels: int) -> None:
        c = self.inner
        s, zp = out_q
        w = (c.weight / s).contiguous(memory_format=torch.channels_last)
        self.bias = c.bias / s + zp + 0.5  # + 0.5: the conversion to uint8 truncates
        self.clip = [0.0, levels + 0.499]
        self.out_q = out_q
        self.packed = torch.ops.mkldnn._reorder_convolution_weight(w, c.padding, c.stride, [1, 1], 1, list(in_shape))

    def forward(self, x: Tensor) -> Tensor:
        c = self.inner
        y = torch.ops.mkldnn._convolution_pointwise(
            x.float().contiguous(memory_format=torch.channels_last), self.packed, self.bias, c.padding, c.stride,
            [1, 1], 1, "hardtanh", self.clip, "")
        return y.to(torch.uint8)


class QDeconv(nn.Module):
    """``ConvTranspose2d(k=4, s=2, p=1)`` [+ ReLU] in int8: a 2x2 conv to the 4 phases + :func:`interleave`."""

    def __init__(self, name: str, deconv: nn.ConvTranspose2d, relu: bool) -> None:
        super().__init__()
        if tuple(deconv.kernel_size) != (4, 4) or tuple(deconv.stride) != (2, 2) or tuple(deconv.padding) != (1, 1) \
                or tuple(deconv.output_padding) != (0, 0) or deconv.groups != 1 or tuple(deconv.dilation) != (1, 1):
            raise ValueError(f"{name}: only ConvTranspose2d(k=4, s=2, p=1) is supported, got {deconv}")
        self.name = name
        self.co = deconv.out_channels
        bias = None if deconv.bias is None else deconv.bias.detach().repeat(4)
        self.conv = QConv(name, deconv_as_conv(deconv.weight.detach()), bias, 1, relu)

    def observe(self, x: Tensor, obs: Observer) -> Tensor:
        y = F.conv2d(x, self.conv.weight, self.conv.bias, 1, 1)
        if self.conv.relu:
            y = torch.relu(y)
        return obs(self.name, interleave(y.contiguous(memory_format=torch.channels_last), self.co))

    def prepare(self, in_q: QP, out_q: QP | None, in_shape: Sequence[int]) -> list[int]:
        self.conv.prepare(in_q, out_q, in_shape)
        return [in_shape[0], self.co, 2 * in_shape[2], 2 * in_shape[3]]

    def forward(self, qx: Tensor) -> Tensor:
        return interleave(self.conv(qx), self.co)


class QResidualBlock(nn.Module):
    """:class:`~sidn.model.fem.ResidualBlock` (BN folded) in int8: ``relu(conv2(relu(conv1 x)) + skip x)``."""

    def __init__(self, name: str, block: ResidualBlock) -> None:
        super().__init__()
        self.name = name
        self.conv1 = QConv.of(name + ".conv1", block.conv1, relu=True)
        self.conv2 = QConv.of(name + ".out", block.conv2, relu=True)
        self.skip = QConv.of(name + ".skip", block.skip[0], relu=False) if isinstance(block.skip, nn.Sequential) \
            else None

    def observe(self, x: Tensor, obs: Observer) -> Tensor:
        a = self.conv1.observe(x, obs)
        s = x if self.skip is None else self.skip.observe(x, obs)
        return self.conv2.observe(a, obs, accum=s)

    def prepare(self, in_q: QP, ranges: dict[str, list[float]], in_shape: Sequence[int],
                levels: int) -> tuple[QP, list[int]]:
        q1 = qparams(*ranges[self.conv1.name], levels)
        self.conv1.prepare(in_q, q1, in_shape)
        st = self.conv1.stride[0]
        out_shape = [in_shape[0], self.conv1.out_channels, -(-in_shape[2] // st), -(-in_shape[3] // st)]
        acc_q = in_q
        if self.skip is not None:
            acc_q = qparams(*ranges[self.skip.name], levels)
            self.skip.prepare(in_q, acc_q, in_shape)
        out_q = qparams(*ranges[self.conv2.name], levels)
        self.conv2.prepare(q1, out_q, out_shape, accum_q=acc_q)
        return out_q, out_shape

    def forward(self, q: Tensor) -> Tensor:
        a = self.conv1(q)
        # oneDNN's sum post-op overwrites its accumulator: with an identity skip that is ``q``, the
        # block's input, which no other layer of Int8SIDN reads (the FSEM branches start with a projection)
        acc = q if self.skip is None else self.skip(q)
        return self.conv2(a, accum=acc)


# ------------------------------------------------------------------------------ the int8 model


class Int8SIDN(FastForm):
    """Inference-only int8 stand-in for a SIDN (CPU), built by :func:`make_int8`.

    ``forward(x [B,1,H,W] in [0,1])`` returns a :class:`SIDNOutput` of float32 tensors, like the
    model's (``z_t``/``z_d`` dequantised). ``mode`` names it (:func:`int8_mode_name`),
    ``calibration`` is the :class:`Int8Calibration` it was built from. Any batch and size
    (multiple of 16) works; the weights are laid out for ``shape`` (default: batch 1 at the
    calibration's image size).
    """

    def __init__(self, model: SIDN, ranges: dict[str, list[float]] | None = None, scheme: str = "u8s8",
                 tail: str = DEFAULT_TAIL, fsem: str = "int8") -> None:
        super().__init__()
        if not isinstance(model, SIDN):
            raise TypeError(f"Int8SIDN needs a SIDN, got {type(model).__name__}")
        if scheme not in SCHEMES:
            raise ValueError(f"int8 scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
        if tail not in TAILS:
            raise ValueError(f"int8 tail must be one of {', '.join(TAILS)}, got {tail!r}")
        if fsem not in FSEMS:
            raise ValueError(f"int8 fsem must be one of {', '.join(FSEMS)}, got {fsem!r}")
        net = fold_batchnorm(model).cpu().float()
        self.cfg = model.cfg
        self.scheme, self.tail, self.fsem = scheme, tail, fsem
        self.variant = variant_name(scheme, fsem)
        self.levels = _LEVELS[scheme]
        self.mode = int8_mode_name(scheme, tail, fsem)
        self.calibration: Int8Calibration | None = None
        fem = net.fem
        self.stem = FloatStem("fem.stem", fem.stem[0])
        self.fem_blocks = nn.ModuleList([QResidualBlock(f"fem.block{i}", getattr(fem, f"block{i}")) for i in (1, 2, 3)])
        branches = (("t", "texture"), ("d", "defect"))
        if fsem == "int8":
            self.branches = nn.ModuleDict({
                k: nn.ModuleList([QResidualBlock(f"fsem.{name}.{i}", b) for i, b in enumerate(getattr(net.fsem, name))])
                for k, name in branches})
        else:  # float FSEM: fp32 for observing, oneDNN-fused (bf16 where native) for inference
            self.fsem_dtype = _float_dtype()
            self.fsem_obs = nn.ModuleDict({k: getattr(net.fsem, name) for k, name in branches})
            self.fsem_run = nn.ModuleDict({
                k: fuse_onednn(copy.deepcopy(getattr(net.fsem, name)).to(self.fsem_dtype).to(
                    memory_format=torch.channels_last)) for k, name in branches})
        self.gsrm = nn.ModuleDict({k: g for k, g in (("t", net.gsrm_t), ("d", net.gsrm_d)) if g is not None})
        for g in self.gsrm.values():
            g.to(memory_format=torch.channels_last)
            fuse_onednn(g)
        self.centres = {"t": net.fsem.centres_t.detach().clone(), "d": net.fsem.centres_d.detach().clone()}
        n_int8 = 3 if tail == "block" else 4
        self.sm_q, self.sm_f = nn.ModuleDict(), nn.ModuleDict()
        self.head_q: dict[str, QConv] = {}
        for k in ("t", "d"):
            sm = getattr(net, f"sm_{k}")
            self.sm_q[k] = nn.ModuleList([QDeconv(f"sm_{k}.blocks.{i}", sm.blocks[i][0], relu=True)
                                          for i in range(n_int8)])
            rest = [sm.blocks[i] for i in range(n_int8, len(sm.blocks))]
            h = sm.head
            if tail == "none":  # ConvTranspose2d(k=3, s=1, p=1) == conv2d with the flipped kernel
                self.head_q[k] = QConv(f"sm_{k}.head", h.weight.detach().flip(2, 3).transpose(0, 1), h.bias, 1, False)
            f = fuse_onednn(nn.Sequential(*rest).to(memory_format=torch.channels_last))
            if tail != "none":
                f.append(GemmHead(h) if GemmHead.fits(h) else fuse_onednn(nn.Sequential(h)))
            self.sm_f[k] = f
        self.ranges: dict[str, list[float]] = {}
        if ranges is not None:
            self.prepare(ranges)

    # -- calibration -------------------------------------------------------------------------
    @torch.no_grad()
    def observe(self, x: Tensor, obs: Observer) -> None:
        """Float32 forward (BN folded) recording the range of every int8 tensor in ``obs``."""
        check_input_shape(x, self.cfg.in_channels)
        q = self.stem.observe(x.float().contiguous(memory_format=torch.channels_last), obs)
        for b in self.fem_blocks:
            q = b.observe(q, obs)
        for k in ("t", "d"):
            z = q
            if self.fsem == "int8":
                for b in self.branches[k]:
                    z = b.observe(z, obs)
            else:
                z = self.fsem_obs[k](z)
            y = obs(f"sm_{k}.in", self._gsrm(k, z))
            for d in self.sm_q[k]:
                y = d.observe(y, obs)

    def prepare(self, ranges: dict[str, list[float]], shape: Sequence[int] | None = None) -> None:
        """Quantise the weights and lay them out for input ``shape`` [B,1,H,W] (default [1,1,256,256])."""
        self.ranges = {k: [float(v[0]), float(v[1])] for k, v in ranges.items()}
        lv = self.levels
        b, _, h, w = shape if shape is not None else (1, 1, 256, 256)
        q = qparams(*ranges["fem.stem"], lv)  # ReLU output: zero point 0
        self.stem.prepare(q, [b, 1, h, w], lv)
        s = [b, self.stem.out_channels, h, w]
        for blk in self.fem_blocks:
            q, s = blk.prepare(q, ranges, s, lv)
        self.z_q: dict[str, QP] = {}
        self.sm_in_q: dict[str, QP] = {}
        self.last_q: dict[str, QP | None] = {}
        self.fem_q = q
        for k in ("t", "d"):
            qq, ss = q, s
            if self.fsem == "int8":
                for blk in self.branches[k]:
                    qq, ss = blk.prepare(qq, ranges, ss, lv)
            else:
                ss = [ss[0], 16 * self.cfg.channels, -(-ss[2] // 8), -(-ss[3] // 8)]
            self.z_q[k] = qq
            iq: QP | None = qparams(*ranges[f"sm_{k}.in"], lv)
            self.sm_in_q[k] = iq
            mods = self.sm_q[k]
            for i, d in enumerate(mods):
                fp32_out = i == len(mods) - 1 and self.tail == "head"
                oq = None if fp32_out else qparams(*ranges[d.name], lv)
                ss = d.prepare(iq, oq, ss)
                iq = oq
            self.last_q[k] = iq
            if self.tail == "none":
                self.head_q[k].prepare(iq, None, ss)

    # -- inference ---------------------------------------------------------------------------
    def _gsrm(self, k: str, z: Tensor) -> Tensor:
        return self.gsrm[k](z, self.centres[k]) if k in self.gsrm else z

    def forward(self, x: Tensor) -> SIDNOutput:
        if not self.ranges:
            raise RuntimeError("Int8SIDN: not calibrated; build it with sidn.int8.make_int8")
        check_input_shape(x, self.cfg.in_channels)
        if x.device.type != "cpu":
            raise ValueError(f"Int8SIDN runs on the CPU only, got an input on {x.device}")
        if x.shape[0] > CHUNK:  # in cache-sized chunks: batch 16 at 256 px is ~1.4x slower per image
            parts = [self._forward(x[i:i + CHUNK]) for i in range(0, x.shape[0], CHUNK)]
            return SIDNOutput(**{f.name: torch.cat([getattr(p, f.name) for p in parts])
                                 for f in dataclasses.fields(SIDNOutput)})
        return self._forward(x)

    def _forward(self, x: Tensor) -> SIDNOutput:
        lv = self.levels
        with torch.inference_mode():
            q = self.stem(x)
            for b in self.fem_blocks:
                q = b(q)
            logits: dict[str, Tensor] = {}
            zs: dict[str, Tensor] = {}
            zf = None if self.fsem == "int8" else dequantize(q, self.fem_q).to(self.fsem_dtype).contiguous(
                memory_format=torch.channels_last)
            for k in ("t", "d"):
                if self.fsem == "int8":
                    z = q
                    for b in self.branches[k]:
                        z = b(z)
                    zs[k] = dequantize(z, self.z_q[k])
                else:
                    zs[k] = self.fsem_run[k](zf).float()
                y = quantize(self._gsrm(k, zs[k]), self.sm_in_q[k], lv)
                for d in self.sm_q[k]:
                    y = d(y)
                if self.tail == "none":
                    logits[k] = self.head_q[k](y)
                    continue
                if self.tail == "block":
                    y = dequantize(y, self.last_q[k])
                logits[k] = self.sm_f[k](y.contiguous(memory_format=torch.channels_last)).float()
            texture = torch.sigmoid(logits["t"])
            defect = torch.sigmoid(logits["d"])
            lf = self.cfg.lambda_f
            fused = (1.0 - lf) * (1.0 - texture) + lf * defect  # eq. (26)
            return SIDNOutput(texture, defect, fused, zs["t"], zs["d"], logits["t"], logits["d"])


# ------------------------------------------------------------------------------ calibration record


@dataclass
class Int8Calibration:
    """Activation ranges of a model's int8 form and its parity with float32, per scheme.

    ``parity[variant]`` (:func:`variant_name`: the scheme, ``+floatfsem`` for a float FSEM) is a
    :func:`parity_report` (``passed`` says whether the variant may be served); a variant missing
    from it was not checked (the calibrating machine could not compute it exactly, or an
    earlier, faster variant had passed).
    Primitives only (``to_dict``/``from_dict``), so it can be stored in a bundle's ``extra``.
    """

    ranges: dict[str, list[float]]
    weights_sha256: str
    image_size: int
    tail: str = DEFAULT_TAIL
    parity: dict[str, dict[str, Any]] = field(default_factory=dict)
    n_calibration_images: int = 0
    format: str = INT8_FORMAT
    notes: list[str] = field(default_factory=list)

    def passed(self, variant: str | None) -> bool:
        return variant is not None and bool(self.parity.get(variant, {}).get("passed", False))

    def reason(self, variant: str | None) -> str:
        """Why ``variant`` may not be served ('' if it may)."""
        if variant is None:
            return "this CPU has no oneDNN int8 kernels"
        rep = self.parity.get(variant)
        if rep is None:
            return f"int8 ({variant}) was not checked for parity"
        if not rep.get("passed", False):
            return f"int8 ({variant}) missed parity with fp32: " + "; ".join(rep.get("failures", []))
        return ""

    def to_dict(self) -> dict[str, Any]:
        return _clean(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Int8Calibration":
        if d.get("format") != INT8_FORMAT:
            raise ValueError(f"not an int8 calibration of format {INT8_FORMAT!r}: format {d.get('format')!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def int8_summary(calibration: Int8Calibration) -> dict[str, Any]:
    """The figures of ``calibration`` a user reviews (calibration.json): per checked variant, whether it
    may be served, the AUROC deltas against float32 and the max |diff| of the fused map."""
    keys = ("passed", "pixel_auroc_delta", "image_auroc_delta", "max_abs_diff", "alarms", "alarms_fp32", "failures")
    return _clean({"n_calibration_images": calibration.n_calibration_images, "notes": calibration.notes,
                   "variants": {v: {k: rep.get(k) for k in keys} for v, rep in calibration.parity.items()}})


def _clean(x: Any) -> Any:
    """JSON/bundle-safe primitives: NaN/inf -> None, numpy scalars -> Python, tuples -> lists."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.generic,)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def weights_hash(model: nn.Module) -> str:
    return weights_sha256(model.state_dict())


def attach(model: SIDN, calibration: Int8Calibration) -> SIDN:
    """Hang ``calibration`` on ``model`` (attribute ``int8_calibration``, not part of the state dict).

    :func:`sidn.fast_model.make_fast` (``Predictor(fast=True)``) then serves int8 where it passed.
    ValueError if it was made for other weights. Returns ``model``.
    """
    actual = weights_hash(model)
    if calibration.weights_sha256 != actual:
        raise ValueError(
            f"int8 calibration was made for other weights (sha256 {calibration.weights_sha256[:12]}..., model "
            f"{actual[:12]}...); run sidn.int8.calibrate_int8 on this model")
    model.int8_calibration = calibration
    return model


def from_bundle_extra(extra: dict[str, Any]) -> Int8Calibration | None:
    """The calibration stored in a bundle's ``extra`` (:func:`sidn.bundle.store_int8_calibration`), or None."""
    d = extra.get(BUNDLE_KEY)
    return None if d is None else Int8Calibration.from_dict(d)


def make_int8(model: SIDN, calibration: Int8Calibration, scheme: str | None = None,
              shape: Sequence[int] | None = None, fsem: str = "int8") -> Int8SIDN:
    """The :class:`Int8SIDN` of ``model`` with ``calibration``'s ranges (no parity check: see :func:`select_int8`)."""
    scheme = scheme or int8_scheme("cpu")
    if scheme is None:
        raise RuntimeError("this CPU has no oneDNN int8 kernels")
    s = calibration.image_size
    net = Int8SIDN(model, None, scheme, calibration.tail, fsem)
    net.prepare(calibration.ranges, shape or [1, 1, s, s])
    net.calibration = calibration
    return net.eval()


def select_int8(model: SIDN, calibration: Int8Calibration | None, device: torch.device | str) -> tuple[
        Int8SIDN | None, str]:
    """``(int8 model, "")`` if ``calibration`` may be served on ``device``, else ``(None, why not)``.

    Served: the fastest variant (:func:`variants`: int8 FSEM before float FSEM) this CPU runs
    exactly that passed parity (a ``u8s8`` CPU also serves ``u7s8``, which computes the same
    everywhere).
    """
    scheme = int8_scheme(device)
    if scheme is None:
        return None, f"int8 needs a CPU with oneDNN int8 kernels (device {torch.device(device)})"
    if calibration is None:
        return None, "no int8 calibration for this model (sidn.int8.calibrate_int8, then sidn.int8.attach)"
    actual = weights_hash(model)
    if calibration.weights_sha256 != actual:
        return None, "the int8 calibration was made for other weights; calibrate again"
    pairs = variants(device)
    for s, f in pairs:
        if calibration.passed(variant_name(s, f)):
            return make_int8(model, calibration, s, fsem=f), ""
    return None, "; ".join(calibration.reason(variant_name(s, f)) for s, f in pairs
                           if variant_name(s, f) in calibration.parity) or calibration.reason(variant_name(scheme))


# ------------------------------------------------------------------------------ parity


def resized(images: Sequence[np.ndarray] | np.ndarray, size: int) -> np.ndarray:
    """Gray float32 images -> ``[N, size, size]`` (``cv2.INTER_AREA``, as :class:`Predictor` resizes)."""
    out = []
    for im in images:
        a = np.asarray(im, dtype=np.float32)
        if a.shape != (size, size):
            a = cv2.resize(a, (size, size), interpolation=cv2.INTER_AREA)
        out.append(a)
    return np.stack(out) if out else np.zeros((0, size, size), np.float32)


def observe_ranges(model: SIDN, images: np.ndarray, tail: str = DEFAULT_TAIL, batch_size: int = 16,
                   method: str = "minmax", levels: int = 255) -> dict[str, list[float]]:
    """Activation ranges of ``model``'s int8 tensors over ``images`` [N,S,S] (float32 forward, :class:`Observer`)."""
    net = Int8SIDN(model, None, "u8s8", tail)
    obs = Observer(method, levels)
    for i in range(0, len(images), batch_size):
        net.observe(torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size]))[:, None], obs)
    return obs.ranges


def parity_report(model: nn.Module, net: nn.Module, good_images: Sequence[np.ndarray],
                  val_images: Sequence[np.ndarray], val_masks: Sequence[np.ndarray], infer: Any, image_size: int,
                  threshold: float | None = None, ref: dict[str, Any] | None = None) -> dict[str, Any]:
    """How ``net`` (a fast form of ``model``) compares to ``model`` on what users see.

    Maps come from :class:`sidn.inference.Predictor` (resize, median filter, upsampling).
    Pixel AUROC and image AUROC (:func:`sidn.inference.image_score`) on the validation set
    (``val_masks``; an image is defective if its mask has a defect pixel), alarms at
    ``threshold`` on the good images (post-processed, :func:`sidn.inference.has_alarm`; the
    model's calibrated threshold if None, else the one :func:`sidn.calibrate.calibrate` picks
    from the fp32 maps), and the max |diff| of the raw fused map (before post-processing).
    ``passed``: both AUROC deltas within :data:`AUROC_TOL` and the same alarm count.
    ``ref`` caches the fp32 side between calls (pass the same dict).
    """
    from sidn.inference import Predictor, anomaly_maps, has_alarm, image_score, median_filter
    from sidn.metrics import image_auroc, pixel_auroc

    ref = {} if ref is None else ref
    good = [np.asarray(g, np.float32) for g in good_images]
    val = [np.asarray(v, np.float32) for v in val_images]
    masks = [np.asarray(m) for m in val_masks]
    labels = np.array([bool(np.any(m)) for m in masks])
    raw_in = resized(good + val, image_size)

    same_size = all(a.shape == (image_size, image_size) for a in good + val)

    def side(n: nn.Module) -> dict[str, Any]:
        raw = anomaly_maps(n, raw_in, batch_size=infer.batch_size)
        if same_size and not infer.tile:  # what Predictor.maps does for such images, without a second forward
            post = [median_filter(m, infer.median_kernel) for m in raw]
            gmaps, vmaps = post[:len(good)], post[len(good):]
        else:
            p = Predictor(model, infer, image_size)
            p.net = n  # the maps of ``n`` through the Predictor's pre- and post-processing
            vmaps, gmaps = p.maps(val), p.maps(good)
        scores = [image_score(m, infer.score_sigma, image_size) for m in vmaps]
        return {"vmaps": vmaps, "gmaps": gmaps, "scores": scores, "raw": raw,
                "pixel_auroc": _quiet(pixel_auroc, vmaps, masks) if val else float("nan"),
                "image_auroc": _quiet(image_auroc, scores, labels) if val else float("nan")}

    if "side" not in ref:
        ref["side"] = side(model)
        t = threshold
        if t is None:
            t = getattr(model, "threshold", None)
            t = float(t) if t is not None and math.isfinite(float(t)) else None
        source = "given" if threshold is not None else "model"
        if t is None and good:
            from sidn.calibrate import calibrate
            from sidn.config import CalibrateConfig

            try:
                t = calibrate(ref["side"]["gmaps"], ref["side"]["vmaps"], masks, CalibrateConfig(), infer,
                              image_size).threshold
                source = "calibrated on the fp32 maps"
            except ValueError:
                t = None
        ref["threshold"], ref["threshold_source"] = t, source
    r32, t = ref["side"], ref["threshold"]
    r8 = side(net)

    def alarms(maps: list[np.ndarray]) -> int:
        return sum(has_alarm(m, t, infer.morph_kernel, infer.min_region_area) for m in maps)

    rep: dict[str, Any] = {
        "pixel_auroc_fp32": r32["pixel_auroc"], "pixel_auroc": r8["pixel_auroc"],
        "pixel_auroc_delta": r8["pixel_auroc"] - r32["pixel_auroc"],
        "image_auroc_fp32": r32["image_auroc"], "image_auroc": r8["image_auroc"],
        "image_auroc_delta": r8["image_auroc"] - r32["image_auroc"],
        "threshold": t, "threshold_source": ref["threshold_source"] if t is not None else "none",
        "n_good": len(good), "n_val": len(val), "n_val_defective": int(labels.sum()),
        "max_abs_diff": float(np.abs(r8["raw"] - r32["raw"]).max()) if len(raw_in) else float("nan"),
    }
    if t is not None and good:
        a32, a8 = alarms(r32["gmaps"]), alarms(r8["gmaps"])
        rep.update(alarms_fp32=a32, alarms=a8, image_far_fp32=a32 / len(good), image_far=a8 / len(good))
        gp32 = np.concatenate([m.ravel() for m in r32["gmaps"]])
        gp8 = np.concatenate([m.ravel() for m in r8["gmaps"]])
        rep.update(pixel_far_fp32=float(np.mean(gp32 > t)), pixel_far=float(np.mean(gp8 > t)))
    failures = []
    for key in ("pixel_auroc_delta", "image_auroc_delta"):
        d = rep[key]
        if math.isfinite(d) and abs(d) > AUROC_TOL:
            failures.append(f"{key.replace('_delta', '')} {d:+.4f} (> {AUROC_TOL})")
    if not math.isfinite(rep["pixel_auroc_delta"]):
        failures.append("pixel AUROC not computable (validation set without defect or good pixels)")
    if "alarms" in rep and rep["alarms"] != rep["alarms_fp32"]:
        failures.append(f"false alarms on {rep['alarms']} of {len(good)} good images instead of {rep['alarms_fp32']}"
                        f" at threshold {t:.4g}")
    rep["failures"] = failures
    rep["passed"] = not failures
    return rep


def _quiet(fn: Any, *args: Any) -> float:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate sets -> NaN, reported as such
        return float(fn(*args))


def calibrate_int8(
    model: SIDN,
    good_images: Sequence[np.ndarray],
    val_images: Sequence[np.ndarray],
    val_masks: Sequence[np.ndarray],
    infer: Any,
    image_size: int,
    *,
    threshold: float | None = None,
    tail: str = DEFAULT_TAIL,
    schemes: Sequence[str] | None = None,
    fsems: Sequence[str] = FSEMS,
    batch_size: int = 16,
    all_variants: bool = False,
) -> Int8Calibration:
    """Calibrate ``model``'s int8 form and judge it against float32 (see the module docstring).

    ``good_images``: held-out defect-free images; ``val_images``/``val_masks``: the DGM
    validation set (:func:`sidn.data.dgm.make_validation_set`); never a test split. Gray float32
    images in [0, 1], any size (resized to ``image_size`` like the Predictor does). The ranges
    are observed on both; parity is judged per variant, fastest first (:func:`variants`, limited
    to ``schemes``, default: every scheme this machine computes exactly, and ``fsems``), until one
    passes for each scheme (``all_variants``: judge them all). Does not modify or attach to ``model``.
    """
    if not isinstance(model, SIDN):
        raise TypeError(f"calibrate_int8 needs a SIDN, got {type(model).__name__}")
    if len(val_images) != len(val_masks):
        raise ValueError(f"got {len(val_images)} validation images but {len(val_masks)} masks")
    schemes = list(schemes) if schemes is not None else checkable_schemes("cpu")
    if not schemes:
        raise RuntimeError("this CPU has no oneDNN int8 kernels: int8 cannot be calibrated here")
    model = model.eval()
    calib_in = resized(list(good_images) + list(val_images), image_size)
    if not len(calib_in):
        raise ValueError("calibrate_int8 needs images (held-out good images and/or the DGM validation set)")
    ranges = observe_ranges(model.cpu(), calib_in, tail, batch_size)
    calib = Int8Calibration(ranges=ranges, weights_sha256=weights_hash(model), image_size=int(image_size), tail=tail,
                            n_calibration_images=len(calib_in))
    ref: dict[str, Any] = {}
    done: set[str] = set()
    for s, f in [(s, f) for f in fsems for s in schemes]:
        if s in done and not all_variants:
            continue
        v = variant_name(s, f)
        calib.parity[v] = _clean(parity_report(model, make_int8(model, calib, s, fsem=f), good_images, val_images,
                                               val_masks, infer, image_size, threshold, ref))
        if calib.parity[v]["passed"]:
            done.add(s)
    missing = [s for s in SCHEMES if s not in schemes]
    if missing:
        calib.notes.append(f"not checked: {', '.join(missing)} (not computed exactly on the calibrating CPU)")
    return calib


__all__ = [
    "Int8SIDN", "Int8Calibration", "int8_summary", "QConv", "QDeconv", "QResidualBlock", "Observer", "calibrate_int8", "make_int8",
    "select_int8", "attach", "from_bundle_extra", "parity_report", "observe_ranges",
    "int8_scheme", "checkable_schemes", "int8_mode_name", "deconv_as_conv", "interleave", "qparams", "AUROC_TOL",
    "SCHEMES", "TAILS", "FSEMS", "DEFAULT_TAIL", "INT8_FORMAT", "variant_name", "variants", "resized",
    "weights_hash", "mse_range", "FloatStem",
    "checkable_schemes", "quantize", "dequantize", "BUNDLE_KEY",
]
