"""Feature extraction module (FEM), paper Sec. III-B-2, eq. (2).

``Z = f_fem(I_n; theta_e)`` with ``Z in R^{W/2 x H/2 x 2C}``. All kernels are 3x3.

* first convolutional block: one 3x3 convolution (stride 1, C channels) and one residual
  block (stride 1, C channels);
* second convolutional block: a residual block with stride 2 and 2C channels followed by a
  residual block with stride 1 and 2C channels.

The residual block (paper Fig. 2) is ``conv3x3-BN-ReLU-conv3x3-BN`` plus a skip connection,
followed by ReLU after the addition. Where the shape changes (stride 2 or a different channel
count) the skip is a 1x1 convolution with the same stride followed by BN. The figure is not
available in text form, so the BN/ReLU placement and the 1x1 projection are **our choice**
(the standard ResNet "basic block", He et al. 2016). The stem convolution is also followed by
BN + ReLU (our choice). The same block is reused by the FSEM (:mod:`sidn.model.fsem`).
"""

from __future__ import annotations

from torch import Tensor, nn


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a BN follows every one of them)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


class ResidualBlock(nn.Module):
    """Residual block of paper Fig. 2 (layout our choice, see module docstring).

    ``y = ReLU(BN(conv(ReLU(BN(conv(x))))) + skip(x))`` where ``skip`` is the identity, or
    ``BN(conv1x1_stride(x))`` when the stride or channel count changes.

    Shapes: ``[B, in_ch, H, W] -> [B, out_ch, H/stride, W/stride]``.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_ch, out_ch, stride)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = conv3x3(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.skip: nn.Module
        if stride != 1 or in_ch != out_ch:
            self.skip = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_ch),
            )
        else:
            self.skip = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.skip(x))


class FEM(nn.Module):
    """Feature extraction module, eq. (2): ``[B, in_ch, H, W] -> Z [B, 2C, H/2, W/2]``."""

    def __init__(self, in_channels: int = 1, channels: int = 16) -> None:
        super().__init__()
        c = channels
        # first convolutional block (stride 1, C channels)
        self.stem = nn.Sequential(conv3x3(in_channels, c), nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        self.block1 = ResidualBlock(c, c, stride=1)
        # second convolutional block (stride 2 then 1, 2C channels)
        self.block2 = ResidualBlock(c, 2 * c, stride=2)
        self.block3 = ResidualBlock(2 * c, 2 * c, stride=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)  # [B, C, H, W]
        x = self.block1(x)  # [B, C, H, W]
        x = self.block2(x)  # [B, 2C, H/2, W/2]
        return self.block3(x)  # [B, 2C, H/2, W/2]


__all__ = ["FEM", "ResidualBlock", "conv3x3"]
