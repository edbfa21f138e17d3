"""Fast inference forms of SIDN: the "fast mode" that ``sidn bench`` times and the Predictor serves.

:func:`sidn.fast_choice.make_fast` turns a :class:`~sidn.model.sidn.SIDN` into the best inference-only form the
device supports (int8 or the float form built here), returning the same typed :class:`~sidn.model.sidn.SIDNOutput` (all tensors
float32); its ``mode`` names the steps applied, joined by ``+``, and its ``note`` says why a
better mode was not used:

* **int8** (:mod:`sidn.int8`, e.g. ``foldbn+int8+fp32head+channels_last+onednn``; ``+u7`` on
  CPUs without VNNI): where oneDNN runs int8 on the CPU *and* the model carries an int8
  calibration (:func:`sidn.int8.calibrate.calibrate_int8`, :func:`sidn.int8.record.attach`, or ``int8=``) that
  reached parity with fp32 for this CPU's scheme. Needs no bf16 hardware (issue 11).
* otherwise the **float** fast form (:func:`make_float_fast`, :func:`float_fast_mode`), made of:

  * ``foldbn``: every eval-mode BatchNorm2d is folded into the (transposed) convolution right
    before it (:func:`fold_batchnorm`); exact up to float rounding (~1e-6).
  * ``bf16``: weights stored in bfloat16 and the network run in bf16 end to end, where the
    device computes bf16 natively (oneDNN AVX512-BF16/AMX on the CPU, CUDA with bf16 support;
    :func:`sidn.device.bf16_autocast_supported`). The arithmetic is that of ``torch.autocast``
    (the GSRM softmax stays fp32, as in the model) without autocast's per-call weight casts.
  * ``fp32tail``: the last full-resolution deconvolution block and the head of both SM branches
    keep fp32 weights and run in fp32 (:func:`fp32_tail`). Their outputs become the logits of
    eq. (3)-(4); rounded to bf16 they put the fused map (eq. 26) ~2e-2 off fp32 on a network with
    a realistic logit spread, in fp32 it stays ~6e-3 off (< :data:`MAX_FAST_DIFF`).
  * ``channels_last``: weights and input in NHWC, oneDNN's fast layout.
  * ``onednn``: (CPU with oneDNN only) each convolution runs as one oneDNN primitive with its
    ReLU and, in a residual block, the skip addition fused in (:class:`FusedConv`,
    ``torch.ops.mkldnn._convolution_pointwise``, the kernels ``torch.compile`` emits on the CPU),
    its weights reordered once into oneDNN's blocked layout for the first input shape it sees.
    This removes the separate ReLU/add passes over the activations, the per-call weight
    reorders and most of the module calls, without compiling anything.
  * on the CPU the SM heads (``ConvTranspose2d(C, 1, 3)``) run as one GEMM and shifted adds
    (:class:`GemmHead`, exact in fp32): oneDNN has no good kernel for one output channel
    (2-3 ms per head at 256 px instead of ~0.6 ms).

  Without native bf16 the float mode drops ``bf16`` and ``fp32tail`` (same results as the
  model, up to rounding).

:func:`fast_mode` names what a model without int8 calibration gets (the float mode),
:func:`sidn.fast_choice.best_mode` the best mode the device supports. Models that are not a SIDN (an
:class:`sidn.export.OnnxModel`, a test stand-in) are returned unchanged. The copy is a
snapshot: weights changed afterwards are not seen.

Measured on the 2-core AVX512-BF16/AMX CPU the float mode was written on, under other people's
load, as ratios of interleaved runs (batch 1, 256x256) to bf16 ``torch.autocast`` of the folded
model with the fp32 tail (the previous fast mode; plain autocast without the tail is no faster and
~2e-2 off): bf16 weights ~0.9; + ``onednn`` 0.7-0.83 (2 threads, wall: 0.74-0.80);
``torch.compile`` (inductor with freezing, which emits the same oneDNN kernels) 0.7-0.76 but
only after 10-65 s of compilation per process and input shape; ``torch.jit.trace`` + ``freeze``
0.82-0.89 (no fusion on the CPU, and deprecated in torch 2.13); onnxruntime (fp32 only, 2
threads, all graph optimisations) ~2; plain fp32 2.2-2.6. fp16 for the tail is slower than
fp32 here (no AMX-FP16), a bf16 tail misses the tolerance (~2e-2). For int8, see :mod:`sidn.int8`.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import Tensor, nn

from sidn.device import bf16_autocast_supported
from sidn.model.fem import ResidualBlock
from sidn.model.sidn import SIDN, SIDNOutput


MAX_FAST_DIFF = 1e-2  # max |fused_fast - fused_fp32| the fast mode is held to (bench, tests)
_CONVS = (nn.Conv2d, nn.ConvTranspose2d)


# ------------------------------------------------------------------------------ BN folding


def _fuse(conv: nn.Module | None, bn: nn.Module | None) -> nn.Module | None:
    """``conv`` with ``bn`` folded in, or None if the pair is not a conv + tracked BatchNorm2d."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if isinstance(conv, _CONVS) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
        return fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d))
    return None


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Eval-mode copy of ``model`` with every BatchNorm2d folded into the conv right before it.

    Handles ``nn.Sequential`` (conv, bn, ...: the stem, the skips, the SM blocks) and modules
    with ``convN`` / ``bnN`` attribute pairs (the FEM/FSEM residual block); the BN becomes an
    ``nn.Identity``. Other BatchNorms are left alone. ``model`` itself is not modified.
    """
    model = copy.deepcopy(model).eval()
    for module in list(model.modules()):
        children = module._modules
        if isinstance(module, nn.Sequential):
            pairs = list(zip(children, list(children)[1:]))
        else:
            pairs = [(n, "bn" + n[len("conv"):]) for n in children if n.startswith("conv")]
        for conv_name, bn_name in pairs:
            fused = _fuse(children[conv_name], children.get(bn_name))
            if fused is not None:
                children[conv_name] = fused
                children[bn_name] = nn.Identity()
    return model


# ------------------------------------------------------------------------------ fp32 tail


class Cast(nn.Module):
    """Runs the wrapped module on its input cast to ``dtype``, with autocast off."""

    def __init__(self, module: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.module = module
        self.dtype = dtype

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.module(x.to(self.dtype))


def fp32_tail(model: SIDN, fp32: SIDN) -> SIDN:
    """Give ``model`` (a bf16 copy) the last SM deconvolution block and head of ``fp32``, run in fp32.

    In place, for both branches: the layers are taken from ``fp32`` (the same network in
    float32, not a copy rounded to bf16) and wrapped in ``Cast(float32)``. Returns ``model``.
    """
    for sm, sm32 in ((model.sm_t, fp32.sm_t), (model.sm_d, fp32.sm_d)):
        last = len(sm.blocks) - 1
        sm.blocks[last] = Cast(sm32.blocks[last], torch.float32)
        sm.head = Cast(sm32.head, torch.float32)
    return model


# ------------------------------------------------------------------------------ oneDNN fusion


class FusedConv(nn.Module):
    """A (transposed) 2-D convolution as one oneDNN primitive: ``relu?(conv(x) [+ residual])``.

    CPU only. The weight is reordered into oneDNN's blocked layout on the first call, for that
    call's input shape (other shapes still work). Built from a bias-free or biased conv whose
    BatchNorm was already folded in.
    """

    def __init__(self, conv: nn.Conv2d | nn.ConvTranspose2d, relu: bool) -> None:
        super().__init__()
        self.transposed = isinstance(conv, nn.ConvTranspose2d)
        self.padding, self.stride = list(conv.padding), list(conv.stride)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.output_padding = list(conv.output_padding) if self.transposed else []
        self.relu = relu
        self.weight = nn.Parameter(conv.weight.detach(), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach(), requires_grad=False)
        self._packed: Tensor | None = None

    def _pack(self, shape: list[int]) -> Tensor:
        mk = torch.ops.mkldnn
        w = self.weight.detach()
        if self.transposed:
            return mk._reorder_convolution_transpose_weight(
                w, self.padding, self.output_padding, self.stride, self.dilation, self.groups, shape)
        return mk._reorder_convolution_weight(w, self.padding, self.stride, self.dilation, self.groups, shape)

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        if self._packed is None:  # a concurrent first call packs twice, harmlessly
            self._packed = self._pack(list(x.shape))
        mk, w, b, act = torch.ops.mkldnn, self._packed, self.bias, "relu" if self.relu else "none"
        if residual is not None:
            return mk._convolution_pointwise(x, residual, w, b, self.padding, self.stride, self.dilation,
                                             self.groups, "add", 1.0, act, [], "")
        if self.transposed:
            return mk._convolution_transpose_pointwise(x, w, b, self.padding, self.output_padding, self.stride,
                                                       self.dilation, self.groups, act, [], "")
        return mk._convolution_pointwise(x, w, b, self.padding, self.stride, self.dilation, self.groups, act, [], "")


class FusedResidualBlock(nn.Module):
    """:class:`~sidn.model.fem.ResidualBlock` (BN folded) as ``relu(conv2(relu(conv1(x))) + skip(x))``."""

    def __init__(self, block: ResidualBlock) -> None:
        super().__init__()
        self.conv1 = FusedConv(block.conv1, relu=True)
        self.conv2 = FusedConv(block.conv2, relu=True)  # ReLU after the skip addition
        self.skip = FusedConv(block.skip[0], relu=False) if isinstance(block.skip, nn.Sequential) else None

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x), residual=x if self.skip is None else self.skip(x))


def _plain_conv(m: nn.Module) -> bool:
    return isinstance(m, _CONVS) and m.padding_mode == "zeros" and not isinstance(m.padding, str)


def _folded(module: nn.Module) -> bool:
    """True if ``module`` holds only plain convs, ReLUs and Identities (its BNs folded away)."""
    return all(_plain_conv(m) or isinstance(m, (nn.Identity, nn.ReLU, nn.Sequential))
               for m in module.modules() if m is not module)


def _fused(module: nn.Module) -> nn.Module | None:
    """The oneDNN-fused replacement of one folded block, or None to leave it (and descend)."""
    if isinstance(module, ResidualBlock) and _folded(module):
        return FusedResidualBlock(module)
    if isinstance(module, nn.Sequential) and len(module) and _plain_conv(module[0]) and _folded(module):
        kinds = [type(m) for m in module]
        if kinds[1:] in ([nn.Identity], [nn.Identity, nn.ReLU], [nn.ReLU]):  # conv [bn] [relu]
            return FusedConv(module[0], relu=nn.ReLU in kinds)
    if _plain_conv(module):
        return FusedConv(module, relu=False)
    return None


def fuse_onednn(model: nn.Module) -> nn.Module:
    """Replace (in place) folded conv [+ ReLU] blocks and residual blocks by oneDNN-fused ones."""
    for name, child in list(model._modules.items()):
        new = _fused(child)
        if new is None:
            fuse_onednn(child)
        else:
            model._modules[name] = new
    return model


class GemmHead(nn.Module):
    """The SM head ``ConvTranspose2d(C, 1, k=3, s=1, p=1)`` in float32 as one GEMM and 8 shifted adds.

    oneDNN has no good kernel for a single output channel (2-3 ms at 256x256 for 9 MMACs);
    ``T = W [9, C] @ X^T [C, H*W]`` gives the 9 tap maps, whose shifted sum is the output (~0.6 ms).
    """

    def __init__(self, head: nn.ConvTranspose2d) -> None:
        super().__init__()
        if not self.fits(head):
            raise ValueError(f"GemmHead: unsupported head {head}")
        c = head.in_channels
        self.wm = head.weight.detach()[:, 0].reshape(c, 9).t().contiguous().float()  # [9, C], tap = 3 ky + kx
        self.bias = 0.0 if head.bias is None else float(head.bias.detach()[0])

    @staticmethod
    def fits(head: nn.Module) -> bool:
        return (isinstance(head, nn.ConvTranspose2d) and head.out_channels == 1 and tuple(head.kernel_size) == (3, 3)
                and tuple(head.stride) == (1, 1) and tuple(head.padding) == (1, 1) and head.groups == 1
                and tuple(head.dilation) == (1, 1) and tuple(head.output_padding) == (0, 0))

    def forward(self, y: Tensor) -> Tensor:
        b, c, h, w = y.shape
        t = torch.mm(self.wm, y.float().permute(0, 2, 3, 1).reshape(-1, c).t()).view(9, b, h, w)
        out = t[4].clone().add_(self.bias)
        for ky in range(3):
            for kx in range(3):
                if ky == 1 and kx == 1:
                    continue
                dy, dx = 1 - ky, 1 - kx  # out[y, x] += t[tap][y + dy, x + dx] (transposed conv, padding 1)
                y0, y1, x0, x1 = max(0, -dy), h - max(0, dy), max(0, -dx), w - max(0, dx)
                out[:, y0:y1, x0:x1] += t[3 * ky + kx][:, y0 + dy:y1 + dy, x0 + dx:x1 + dx]
        return out.unsqueeze(1)


def gemm_heads(net: SIDN) -> SIDN:
    """Replace (in place) each SM head that :meth:`GemmHead.fits` (in a :class:`Cast` or not) by a :class:`GemmHead`."""
    for sm in (net.sm_t, net.sm_d):
        head = sm.head
        inner = head.module if isinstance(head, Cast) else head
        if GemmHead.fits(inner):
            g = GemmHead(inner)
            sm.head = Cast(g, torch.float32) if isinstance(head, Cast) else g
    return net


def _onednn_ok(device: torch.device) -> bool:
    mk = torch.ops.mkldnn
    needed = ("_convolution_pointwise", "_convolution_transpose_pointwise", "_reorder_convolution_weight",
              "_reorder_convolution_transpose_weight")
    return device.type == "cpu" and torch.backends.mkldnn.is_available() and all(hasattr(mk, n) for n in needed)


# ------------------------------------------------------------------------------ fast model


def float_fast_mode(device: torch.device | str) -> str:
    """Name of the float mode :func:`make_fast` uses for a SIDN on ``device`` (steps joined by ``+``)."""
    dev = torch.device(device)
    parts = ["foldbn"]
    if bf16_autocast_supported(dev, require_native=True):
        parts += ["bf16", "fp32tail"]
    parts.append("channels_last")
    if _onednn_ok(dev):
        parts.append("onednn")
    return "+".join(parts)


def fast_mode(device: torch.device | str) -> str:
    """Name of the mode :func:`make_fast` serves for a SIDN without a (passing) int8 calibration.

    The float fast mode (:func:`float_fast_mode`); where int8 passed parity the model gets
    :func:`best_mode` instead.
    """
    return float_fast_mode(device)


class FastForm(nn.Module):
    """Base of the inference-only forms of a SIDN (:class:`FastSIDN`, :class:`sidn.int8.model.Int8SIDN`).

    ``mode`` names the form; ``note`` says why a better mode was not used ('' if none was).
    """

    mode: str = "model"
    note: str = ""


class FastSIDN(FastForm):
    """Inference-only stand-in for a SIDN, built by :func:`make_fast`.

    ``forward(x [B,1,H,W])`` returns a :class:`SIDNOutput` whose tensors are all float32, like
    the model's (no gradients). ``mode`` names the preparation (see the module docstring).
    """

    def __init__(self, net: SIDN, mode: str, note: str = "") -> None:
        super().__init__()
        self.net = net
        self.mode = mode
        self.note = note
        self.dtype = torch.bfloat16 if "bf16" in mode.split("+") else torch.float32

    def forward(self, x: Tensor) -> SIDNOutput:
        with torch.inference_mode():
            out = self.net(x.to(self.dtype).contiguous(memory_format=torch.channels_last))
            return SIDNOutput(**{f.name: None if (v := getattr(out, f.name)) is None else v.float()
                                 for f in dataclasses.fields(out)})


def make_float_fast(model: SIDN, device: torch.device | str | None = None, note: str = "") -> FastSIDN:
    """The float fast form of ``model`` (:func:`float_fast_mode`: BN folded, bf16 where native, oneDNN-fused)."""
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    mode = float_fast_mode(dev)
    parts = mode.split("+")
    net = fold_batchnorm(model).to(dev)
    if "bf16" in parts:
        net = fp32_tail(copy.deepcopy(net).to(torch.bfloat16), net)
    net.channels_last = True
    net.to(memory_format=torch.channels_last)
    if dev.type == "cpu":
        gemm_heads(net)
    if "onednn" in parts:
        fuse_onednn(net)
    return FastSIDN(net, mode, note).eval()


def mode_of(model: nn.Module) -> str:
    """The ``mode`` of a fast form (:class:`FastSIDN`, :class:`sidn.int8.model.Int8SIDN`), ``"model"`` for other modules."""
    return model.mode if isinstance(model, FastForm) else "model"


__all__ = [
    "FastForm", "float_fast_mode", "make_float_fast", "GemmHead", "gemm_heads",
    "FastSIDN", "FusedConv", "FusedResidualBlock", "Cast", "mode_of", "fast_mode", "fold_batchnorm",
    "fp32_tail", "fuse_onednn", "MAX_FAST_DIFF",
]
