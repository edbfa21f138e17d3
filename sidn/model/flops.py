"""FLOP and parameter counts.

``count_flops`` runs one forward pass on a zero image and counts, with forward hooks,
the multiply-adds (MACs) of every ``Conv2d``, ``ConvTranspose2d`` and ``Linear`` plus the two
GSRM matrix products ``K'C^T`` and ``MC`` (eq. 23-24, Table I). FLOPs = 2 * MACs.
Bias additions, BN, activations, softmax and the losses are not counted (the usual
convention, e.g. fvcore / ptflops).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sidn.model.gsrm import GSRM


def _conv_macs(m: nn.Conv2d, inp: tuple[Tensor, ...], out: Tensor) -> int:
    # each output element: (Cin / groups) * kh * kw multiply-adds
    kh, kw = m.kernel_size
    return out.numel() * (m.in_channels // m.groups) * kh * kw


def _deconv_macs(m: nn.ConvTranspose2d, inp: tuple[Tensor, ...], out: Tensor) -> int:
    # each input element is scattered to (Cout / groups) * kh * kw outputs
    kh, kw = m.kernel_size
    return inp[0].numel() * (m.out_channels // m.groups) * kh * kw


def _linear_macs(m: nn.Linear, inp: tuple[Tensor, ...], out: Tensor) -> int:
    return out.numel() * m.in_features


def _gsrm_macs(m: GSRM, inp: tuple[Tensor, ...], out: Tensor) -> int:
    z, centres = inp[0], inp[1]
    b, _, h, w = z.shape
    return b * m.macs(h * w, centres.shape[0])


_COUNTERS = (
    (nn.Conv2d, _conv_macs),
    (nn.ConvTranspose2d, _deconv_macs),
    (nn.Linear, _linear_macs),
    (GSRM, _gsrm_macs),
)


def _guess_in_channels(model: nn.Module) -> int:
    cfg = getattr(model, "cfg", None)
    if cfg is not None and hasattr(cfg, "in_channels"):
        return int(cfg.in_channels)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            return int(m.in_channels)
    raise ValueError("count_flops: cannot tell the input channel count; pass in_channels=")


@torch.no_grad()
def count_flops(model: nn.Module, size: int = 256, in_channels: int | None = None) -> int:
    """FLOPs (2 x multiply-adds) for one ``size x size`` image.

    Example: a single ``Conv2d(1, 16, 3, padding=1)`` at 64x64 has
    ``64*64*16*9 = 589 824`` MACs, i.e. ``1 179 648`` FLOPs.
    """
    ch = in_channels if in_channels is not None else _guess_in_channels(model)
    total = [0]
    handles = []

    def make_hook(fn):  # type: ignore[no-untyped-def]
        def hook(m: nn.Module, inp: tuple[Tensor, ...], out: Tensor | tuple[Tensor, ...]) -> None:
            o = out[0] if isinstance(out, tuple) else out
            total[0] += int(fn(m, inp, o))

        return hook

    for m in model.modules():
        for cls, fn in _COUNTERS:
            if isinstance(m, cls):
                handles.append(m.register_forward_hook(make_hook(fn)))
                break
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
        dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
        model(torch.zeros(1, ch, size, size, device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return 2 * total[0]


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters, cluster centres included."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = ["count_flops", "count_parameters"]
