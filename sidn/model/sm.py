"""Segmentation module (SM), paper Sec. III-B-3, eq. (3)-(4), Fig. 3.

``I_s^t = f_sm^t(Z'_t)`` (eq. 3) and ``I_s^d = f_sm^d(Z'_d)`` (eq. 4): one SM per branch, each
"four deconvolution blocks, a deconvolution layer, and a Sigmoid activation layer".

**Our choice** for the parts Fig. 3 leaves to the image: a deconvolution block is
``ConvTranspose2d(k=4, s=2, p=1, no bias) - BN - ReLU`` (exactly doubles the size), channels
``16C -> 8C -> 4C -> 2C -> C``; the final deconvolution layer is
``ConvTranspose2d(C, 1, k=3, s=1, p=1)`` with a bias. :class:`SM` returns the *logits*
(pre-sigmoid); :class:`sidn.model.SIDN` applies the sigmoid, so the loss can use a
numerically stable log-sigmoid (see :func:`sidn.losses.segmentation_loss`).

Shapes: ``[B, 16C, H/16, W/16] -> [B, 1, H, W]``.
"""

from __future__ import annotations

from torch import Tensor, nn


class DeconvBlock(nn.Sequential):
    """Deconvolution block of Fig. 3 (layout our choice): ``[B, i, h, w] -> [B, o, 2h, 2w]``."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(
            nn.ConvTranspose2d(in_ch, out_ch, kernel_size=4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class SM(nn.Module):
    """Segmentation module, eq. (3)/(4). ``forward`` returns logits ``[B, 1, H, W]``."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        c = channels
        self.blocks = nn.Sequential(
            DeconvBlock(16 * c, 8 * c),  # H/8
            DeconvBlock(8 * c, 4 * c),  # H/4
            DeconvBlock(4 * c, 2 * c),  # H/2
            DeconvBlock(2 * c, c),  # H
        )
        self.head = nn.ConvTranspose2d(c, 1, kernel_size=3, stride=1, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        return self.head(self.blocks(z))  # logits; sigmoid applied by SIDN


__all__ = ["SM", "DeconvBlock"]
