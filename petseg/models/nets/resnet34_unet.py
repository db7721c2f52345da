"""A UNet whose encoder is torchvision's ResNet34 (optionally ImageNet-pretrained)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import ResNet34_Weights, resnet34

from petseg.errors import CheckpointError
from petseg.models.nets.parts import DoubleConv, Normalize, SegmentationModel, Up, use_centre_taps

DECODER_CHANNELS = (256, 128, 64, 32, 16)
BRIDGE_CHANNELS = 1024


def _resnet34_encoder(weights: str | None) -> nn.Module:
    if weights is None:
        return resnet34(weights=None)
    if weights != "imagenet":
        raise ValueError(f"encoder_weights must be null or 'imagenet', got {weights!r}")
    try:
        return resnet34(weights=ResNet34_Weights.IMAGENET1K_V1)
    except Exception as exc:  # urllib, SSL, hash and disk errors all mean "no weights"
        url = ResNet34_Weights.IMAGENET1K_V1.url
        cache = torch.hub.get_dir()
        raise CheckpointError(
            f"cannot fetch the ImageNet ResNet34 weights from {url} ({type(exc).__name__}: {exc}). "
            f"On a machine without internet, download that file elsewhere and put it in {cache}/checkpoints/, "
            "or set models.resnet34_unet.encoder_weights: null to train the encoder from scratch"
        ) from None


class ResNet34UNet(SegmentationModel):
    """ResNet34 stem and layer1-4 as skips (1/2 .. 1/32), a bridge, and a UNet decoder to full size.

    About 39M parameters (21.3M encoder, 14.2M bridge, 3.6M decoder). Returns
    logits N x 1 x H x W; H and W must be multiples of 32.
    """

    size_multiple = 32

    def __init__(self, encoder_weights: str | None = None, out_channels: int = 1):
        super().__init__()
        encoder = _resnet34_encoder(encoder_weights)
        self.encoder_weights = encoder_weights
        self.normalize = Normalize()
        self.stem = nn.Sequential(encoder.conv1, encoder.bn1, encoder.relu)  # 64 ch, 1/2
        self.pool = encoder.maxpool
        self.layer1 = encoder.layer1  # 64 ch, 1/4
        self.layer2 = encoder.layer2  # 128 ch, 1/8
        self.layer3 = encoder.layer3  # 256 ch, 1/16
        self.layer4 = encoder.layer4  # 512 ch, 1/32
        self.bridge = DoubleConv(512, BRIDGE_CHANNELS)
        d = DECODER_CHANNELS
        self.up1 = Up(BRIDGE_CHANNELS, 256, d[0])  # -> 1/16, skip layer3
        self.up2 = Up(d[0], 128, d[1])  # -> 1/8, skip layer2
        self.up3 = Up(d[1], 64, d[2])  # -> 1/4, skip layer1
        self.up4 = Up(d[2], 64, d[3])  # -> 1/2, skip stem
        self.up5 = Up(d[3], 0, d[4])  # -> 1/1
        self.head = nn.Conv2d(d[4], out_channels, kernel_size=1)
        use_centre_taps(self)  # layer4 and the bridge are 1 x 1 at 32 px: same function, far less CPU time

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # nn.Module.__call__ calls it
        self.check_input(x)
        s1 = self.stem(self.normalize(x))
        s2 = self.layer1(self.pool(s1))
        s3 = self.layer2(s2)
        s4 = self.layer3(s3)
        x = self.bridge(self.layer4(s4))
        x = self.up1(x, s4)
        x = self.up2(x, s3)
        x = self.up3(x, s2)
        x = self.up4(x, s1)
        x = self.up5(x)
        return self.head(x)
