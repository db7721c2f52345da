"""The classic UNet (Ronneberger et al. 2015) with batch norm, as in milesial/Pytorch-UNet."""

from __future__ import annotations

import torch
from torch import nn

from petseg.models.nets.parts import DoubleConv, Down, Normalize, SegmentationModel, Up


class UNet(SegmentationModel):
    """Four max-pool downs and four transposed-conv ups with skip concatenation.

    ``base_channels=64`` is the paper's width (31.04M parameters for 3 input
    channels and 1 output). Returns logits N x 1 x H x W.
    """

    size_multiple = 16

    def __init__(self, base_channels: int = 64, in_channels: int = 3, out_channels: int = 1):
        super().__init__()
        c = base_channels
        self.normalize = Normalize()
        self.inc = DoubleConv(in_channels, c)
        self.down1 = Down(c, 2 * c)
        self.down2 = Down(2 * c, 4 * c)
        self.down3 = Down(4 * c, 8 * c)
        self.down4 = Down(8 * c, 16 * c)
        self.up1 = Up(16 * c, 8 * c, 8 * c)
        self.up2 = Up(8 * c, 4 * c, 4 * c)
        self.up3 = Up(4 * c, 2 * c, 2 * c)
        self.up4 = Up(2 * c, c, c)
        self.head = nn.Conv2d(c, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # nn.Module.__call__ calls it
        self.check_input(x)
        x1 = self.inc(self.normalize(x))
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x = self.down4(x4)
        x = self.up1(x, x4)
        x = self.up2(x, x3)
        x = self.up3(x, x2)
        x = self.up4(x, x1)
        return self.head(x)
