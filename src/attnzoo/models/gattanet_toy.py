"""The GAttANet toy CNN: 3 conv layers + 2 dense layers (VanRullen & Alamia, arXiv:2104.05575).

The paper gives the layer sizes only through its figures (conv maps of about 32x32, 16x16 and
8x8 on CIFAR-10, dense layers of about 256 and 10 units, d = 16); widths and the training
recipe are not given. Our choices:

    input (B, in_channels, S, S), S = 32 (CIFAR-10) or 28 (Fashion-MNIST)
    conv1: 3x3 conv (same padding) -> BatchNorm -> ReLU, 64 channels    S x S
    2x2 max-pool
    conv2: 3x3 conv -> BatchNorm -> ReLU, 128 channels                   S/2 x S/2
    2x2 max-pool
    conv3: 3x3 conv -> BatchNorm -> ReLU, 256 channels                   S/4 x S/4
    2x2 max-pool, flatten (256 · ⌊S/8⌋²)
    fc1:   Linear -> ReLU, 256 units
    fc2:   Linear, num_classes units (the logits)

``gattanet_layers`` are the five layer outputs (post-activation for conv1-3 and fc1, the logits
for fc2): the output layer takes part, as in the paper. ``norm=False`` drops the BatchNorms.
"""

from __future__ import annotations

import torch
from torch import nn

from attnzoo.models import register_model

__all__ = ["GAttANetToy", "gattanet_toy"]


def _conv_layer(in_channels: int, out_channels: int, norm: bool) -> nn.Sequential:
    if norm:
        return nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True))


class GAttANetToy(nn.Module):
    """The 5-layer toy CNN of the GAttANet paper (widths chosen here, see the module docstring)."""

    gattanet_layers: tuple[str, ...] = ("conv1", "conv2", "conv3", "fc1", "fc2")

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        widths: tuple[int, int, int] = (64, 128, 256),
        hidden: int = 256,
        norm: bool = True,
    ) -> None:
        super().__init__()
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8 (three 2x poolings), got {image_size}")
        if len(widths) != 3:
            raise ValueError(f"widths must give 3 conv widths, got {tuple(widths)}")
        self.in_channels = in_channels
        self.image_size = image_size
        self.conv1 = _conv_layer(in_channels, widths[0], norm)
        self.conv2 = _conv_layer(widths[0], widths[1], norm)
        self.conv3 = _conv_layer(widths[1], widths[2], norm)
        self.pool = nn.MaxPool2d(2)
        flat = widths[2] * (image_size // 8) ** 2
        self.fc1 = nn.Sequential(nn.Linear(flat, hidden), nn.ReLU(inplace=True))
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"gattanet_toy expects (B, {self.in_channels}, {self.image_size}, "
                f"{self.image_size}) images of rank 4, got shape {tuple(x.shape)}"
            )
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"gattanet_toy was built for {self.image_size}x{self.image_size} images, got "
                f"{x.shape[-2]}x{x.shape[-1]}; build it with image_size={x.shape[-1]}"
            )
        x = self.pool(self.conv1(x))  # (B, w1, S/2, S/2)
        x = self.pool(self.conv2(x))  # (B, w2, S/4, S/4)
        x = self.pool(self.conv3(x))  # (B, w3, S/8, S/8)
        x = self.fc1(x.flatten(1))  # (B, w3·(S/8)²) -> (B, hidden)
        return self.fc2(x)  # (B, num_classes)


@register_model("gattanet_toy")
def gattanet_toy(
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    widths: tuple[int, int, int] = (64, 128, 256),
    hidden: int = 256,
    norm: bool = True,
) -> GAttANetToy:
    """The GAttANet toy CNN (1 input channel and image_size=28 for Fashion-MNIST)."""
    return GAttANetToy(num_classes, in_channels, image_size, widths, hidden, norm)
