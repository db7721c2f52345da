"""petseg: UNet vs ResNet34-UNet pet segmentation as a reproducible DVC pipeline."""

__version__ = "0.1.0"
