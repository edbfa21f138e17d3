"""oneDNN int8 layers of :class:`sidn.int8.model.Int8SIDN`: convolution, float stem, deconvolution, residual block."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sidn.int8.quant import QP, Observer, deconv_as_conv, interleave, qparams
from sidn.int8.scheme import W_QMAX
from sidn.model.fem import ResidualBlock


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

