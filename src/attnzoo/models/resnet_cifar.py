"""CIFAR ResNets: ResNet-20/32/56/110 (basic blocks) and pre-activation ResNet-164.

- He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016,
  arXiv:1512.03385, section 4.2: a 3x3 conv with 16 filters, three stages of n basic blocks
  with 16/32/64 filters on 32x32/16x16/8x8 maps (depth 6n+2), global average pooling, FC.
  Shortcuts are option A of the paper (identity; where the shape changes, subsample by 2 and
  pad the new channels with zeros: no parameters), as used for every CIFAR result of the
  paper; ``shortcut="B"`` uses 1x1 conv + BN projections there instead.
  Parameters at 10 classes (option A): 0.27M, 0.46M, 0.85M, 1.7M.
- He, Zhang, Ren, Sun, "Identity Mappings in Deep Residual Networks", ECCV 2016,
  arXiv:1603.05027 (code: https://github.com/KaimingHe/resnet-1k-layers): pre-activation
  bottleneck units BN-ReLU-conv1x1 / BN-ReLU-conv3x3 / BN-ReLU-conv1x1 (x4 output), depth
  9n+2 = 164 (n = 18), 1.7M parameters; projection shortcuts (1x1 conv) where the shape
  changes, applied to the raw block input; a final BN-ReLU before pooling.

Block names follow torchvision (``conv1``/``bn1``/...), so :func:`attnzoo.attach` finds the end
of the residual branch structurally. The pre-activation unit's branch ends with ``conv3`` (not
a norm), which it declares with ``branch_end = "conv3"``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attnzoo.models import register_model
from attnzoo.models.resnet_imagenet import conv1x1, conv3x3, init_resnet_weights

__all__ = ["CifarBasicBlock", "CifarResNet", "PreActBottleneck", "ZeroPadShortcut"]

SHORTCUTS = ("A", "B")


class ZeroPadShortcut(nn.Module):
    """Option A shortcut: subsample by ``stride`` and zero-pad the extra channels."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]  # (B, C, ceil(H/s), ceil(W/s))
        front = self.extra // 2
        return F.pad(x, (0, 0, 0, 0, front, self.extra - front))  # (B, C + extra, H', W')


class CifarBasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the option A or B shortcut, then ReLU."""

    def __init__(self, in_channels: int, planes: int, stride: int = 1, shortcut: str = "A") -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != planes:
            if shortcut == "A":
                self.downsample = ZeroPadShortcut(in_channels, planes, stride)
            else:
                self.downsample = nn.Sequential(
                    conv1x1(in_channels, planes, stride), nn.BatchNorm2d(planes)
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class PreActBottleneck(nn.Module):
    """BN-ReLU-conv1x1, BN-ReLU-conv3x3 (stride), BN-ReLU-conv1x1 (x4); identity after add."""

    expansion = 4
    branch_end = "conv3"  # the residual branch ends with a conv: attention goes after it

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv1x1(in_channels, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = conv1x1(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + shortcut


class CifarResNet(nn.Module):
    """3x3 stem (16 filters), three stages at 16/32/64 widths, GAP, FC."""

    def __init__(
        self,
        depth: int,
        bottleneck: bool = False,
        num_classes: int = 10,
        in_channels: int = 3,
        shortcut: str = "A",
    ) -> None:
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        per_block = 9 if bottleneck else 6
        if depth < per_block + 2 or (depth - 2) % per_block:
            form = "9n+2 (pre-activation bottleneck)" if bottleneck else "6n+2 (basic)"
            raise ValueError(f"depth must be {form} for a CIFAR ResNet, got {depth}")
        blocks = (depth - 2) // per_block
        self.preact = bottleneck
        self.conv1 = conv3x3(in_channels, 16)
        width = 16
        stages = []
        for index, planes in enumerate((16, 32, 64)):
            stride = 1 if index == 0 else 2
            layer: list[nn.Module] = []
            for b in range(blocks):
                s = stride if b == 0 else 1
                if bottleneck:
                    layer.append(PreActBottleneck(width, planes, s))
                    width = planes * PreActBottleneck.expansion
                else:
                    layer.append(CifarBasicBlock(width, planes, s, shortcut))
                    width = planes
            stages.append(nn.Sequential(*layer))
        self.layer1, self.layer2, self.layer3 = stages
        # Post-activation: BN-ReLU right after the stem conv; pre-activation: BN-ReLU at the end.
        self.bn1 = nn.BatchNorm2d(16 if not bottleneck else width)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)
        self.num_features = width
        # The output of every residual stage plus the classifier (attnzoo.gattanet's default).
        self.gattanet_layers = ["layer1", "layer2", "layer3", "fc"]
        init_resnet_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        if not self.preact:
            x = self.relu(self.bn1(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        if self.preact:
            x = self.relu(self.bn1(x))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.forward_features(x))
        return self.fc(torch.flatten(x, 1))  # (B, 64 or 256) -> (B, num_classes)


def _cifar(depth: int, num_classes: int, options: dict[str, Any]) -> CifarResNet:
    return CifarResNet(depth, bottleneck=False, num_classes=num_classes, **options)


@register_model("resnet8")
def resnet8(num_classes: int = 10, **options: Any) -> CifarResNet:
    """CIFAR ResNet-8 (1 basic block per stage; depth 6n+2 with n = 1), 0.08M parameters: the
    quick leaderboard's backbone (3x the speed of ResNet-20 on a CPU core)."""
    return _cifar(8, num_classes, options)


@register_model("resnet20")
def resnet20(num_classes: int = 10, **options: Any) -> CifarResNet:
    """CIFAR ResNet-20 (3 basic blocks per stage), 0.27M parameters."""
    return _cifar(20, num_classes, options)


@register_model("resnet32")
def resnet32(num_classes: int = 10, **options: Any) -> CifarResNet:
    """CIFAR ResNet-32 (5 basic blocks per stage), 0.46M parameters."""
    return _cifar(32, num_classes, options)


@register_model("resnet56")
def resnet56(num_classes: int = 10, **options: Any) -> CifarResNet:
    """CIFAR ResNet-56 (9 basic blocks per stage), 0.85M parameters."""
    return _cifar(56, num_classes, options)


@register_model("resnet110")
def resnet110(num_classes: int = 10, **options: Any) -> CifarResNet:
    """CIFAR ResNet-110 (18 basic blocks per stage), 1.7M parameters."""
    return _cifar(110, num_classes, options)


@register_model("preact_resnet164")
def preact_resnet164(num_classes: int = 10, **options: Any) -> CifarResNet:
    """CIFAR pre-activation ResNet-164 (18 bottlenecks per stage), 1.7M parameters."""
    if "shortcut" in options:
        raise ValueError("preact_resnet164 always uses projection shortcuts; drop 'shortcut'")
    return CifarResNet(164, bottleneck=True, num_classes=num_classes, **options)
