"""Global semantic relation module (GSRM), paper Sec. III-D, eq. (21)-(24), Fig. 4, Table I.

Self-attention (eq. 20) builds an ``N x N`` map. The GSRM replaces the query matrix ``Q`` by
the ``K`` cluster centres ``C`` of the FSEM, so the attention map is only ``N x K``:

* ``K = conv1x1(Z)``, ``V = conv1x1(Z)``, both ``[B, 16C, h, w]`` (Fig. 4);
* ``K'`` = ``K`` reshaped to ``[B, N, 16C]`` with ``N = h*w``;
* ``M = softmax(s K' C^T)`` over the K centres, ``[B, N, K]`` (eq. 23). The paper writes no
  scaling (``s = 1``, the default); ``ModelConfig.gsrm_scale`` (our knob) sets ``s``, e.g.
  ``1/sqrt(16C)`` as in eq. 20, because unscaled logits of 256-dim features saturate the
  softmax to a one-hot choice with vanishing gradients;
* ``Z' = V + reshape(M C)`` (eq. 24), ``[B, 16C, h, w]``.

Time and memory are ``O(N*K)``: for 256x256 inputs ``N = 256``, ``16C = 256`` and ``K = 12``,
which gives ``K'C^T`` = 256*12*256 multiply-adds, the count behind Table I (the paper counts
multiplications and additions separately: 256*12*511 = 1 569 792).

The centres are passed in (they belong to the FSEM) and receive gradients from this module.
The softmax is evaluated in float32, so the module is safe under
``torch.autocast("cpu", dtype=torch.bfloat16)``. The 1x1 convolutions have a bias (our choice).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GSRM(nn.Module):
    """``forward(Z [B, D, h, w], C [K, D]) -> Z' [B, D, h, w]`` (eq. 21-24), ``D = 16C``."""

    def __init__(self, dim: int, scale: float = 1.0) -> None:
        super().__init__()
        self.dim = dim
        self.scale = float(scale)
        self.key = nn.Conv2d(dim, dim, kernel_size=1)
        self.value = nn.Conv2d(dim, dim, kernel_size=1)

    def attention(self, z: Tensor, centres: Tensor) -> Tensor:
        """Attention map ``M = softmax(s K' C^T)`` of eq. (23): ``[B, N, K]``, rows sum to 1."""
        k = self.key(z).flatten(2).transpose(1, 2)  # K' [B, N, D]
        logits = torch.matmul(k, centres.t()) * self.scale  # [B, N, K]
        return torch.softmax(logits.float(), dim=-1)

    def forward(self, z: Tensor, centres: Tensor, return_attention: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        b, d, h, w = z.shape
        if centres.ndim != 2 or centres.shape[1] != d:
            raise ValueError(f"GSRM: centres must be [K, {d}], got {list(centres.shape)}")
        m = self.attention(z, centres)  # [B, N, K]
        context = torch.matmul(m.to(centres.dtype), centres)  # M C: [B, N, D]
        v = self.value(z)  # [B, D, h, w]
        out = v + context.transpose(1, 2).reshape(b, d, h, w).to(v.dtype)  # eq. (24)
        if return_attention:
            return out, m
        return out

    def macs(self, n_positions: int, n_centres: int) -> int:
        """Multiply-adds of the two matmuls ``K'C^T`` and ``MC`` for one image (Table I)."""
        return 2 * n_positions * n_centres * self.dim


__all__ = ["GSRM"]
