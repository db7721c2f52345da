"""UNet building blocks, one idea per class (after milesial/Pytorch-UNet's unet_parts)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ImageNet statistics: both models normalise inside, so a checkpoint is all inference needs.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DoubleConv(nn.Sequential):
    """(3x3 conv -> BatchNorm -> ReLU) twice; the convs have no bias since BN follows."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None = None):
        mid_channels = mid_channels or out_channels
        super().__init__(
            nn.Conv2d(in_channels, mid_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class Down(nn.Sequential):
    """Halve the resolution with 2x2 max pooling, then DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels))


class Up(nn.Module):
    """Double the resolution with a 2x2 transposed conv, concatenate the skip, then DoubleConv."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, up_channels: int | None = None):
        super().__init__()
        up_channels = up_channels or out_channels
        self.up = nn.ConvTranspose2d(in_channels, up_channels, kernel_size=2, stride=2)
        self.conv = DoubleConv(up_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:  # nn.Module.__call__ calls it
        x = self.up(x)
        if skip is not None:
            x = torch.cat([skip, x], dim=1)
        return self.conv(x)


class Normalize(nn.Module):
    """Map [0, 1] RGB images to ImageNet-normalised inputs (constants, not parameters)."""

    def __init__(self, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        # 1/std in Python: tensor arithmetic on the meta device (checkpoint loading builds a skeleton
        # there first) imports torch's reference decompositions, seconds per process.
        self.register_buffer("inv_std", torch.tensor([1.0 / s for s in std]).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # nn.Module.__call__ calls it
        return (x - self.mean) * self.inv_std


class CentreTapConv2d(nn.Conv2d):
    """A 3x3 conv (stride 1, zero padding 1) that, on a 1 x 1 map, multiplies by its centre tap only.

    On a 1 x 1 input the eight outer taps only ever meet the zero padding, so this is the same
    function with the same gradients (exact zeros for the outer taps) in a ninth of the work.
    It matters on CPUs: oneDNN's 3x3 weight gradient on a 1 x 1 map is slow (ResNet34's layer4
    and the bridge are 1 x 1 at 32 px inputs). Parameters and state_dict are those of nn.Conv2d.
    """

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if input.shape[-2:] == (1, 1):
            return F.conv2d(input, weight[:, :, 1:2, 1:2], bias, groups=self.groups)
        return super()._conv_forward(input, weight, bias)


def use_centre_taps(module: nn.Module) -> int:
    """Make every plain 3x3, stride-1, zero-padding-1 nn.Conv2d in ``module`` a CentreTapConv2d; returns how many."""
    count = 0
    for conv in module.modules():
        if (
            type(conv) is nn.Conv2d
            and conv.kernel_size == (3, 3)
            and conv.stride == (1, 1)
            and conv.padding == (1, 1)
            and conv.dilation == (1, 1)
            and conv.padding_mode == "zeros"
        ):
            conv.__class__ = CentreTapConv2d  # a new class in place: its forward, the same weights
            count += 1
    return count


class SegmentationModel(nn.Module):
    """Base class: checks the input (N x 3 x H x W, sides a multiple of ``size_multiple``)."""

    size_multiple = 32

    def check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{type(self).__name__} expects N x 3 x H x W images, got shape {tuple(x.shape)}")
        height, width = x.shape[-2:]
        m = self.size_multiple
        if height % m or width % m:
            raise ValueError(
                f"{type(self).__name__} cannot take a {height}x{width} input: height and width must be "
                f"multiples of {m} (e.g. {m * 4}, {m * 8}, 256); resize or pad the images"
            )
