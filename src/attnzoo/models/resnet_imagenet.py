"""ImageNet-layout ResNets: ResNet-18/34 (basic blocks) and ResNet-50 (bottleneck).

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016,
arXiv:1512.03385. Layout and names follow torchvision's ``resnet.py`` (``conv1``/``bn1``,
``layer1``..``layer4``, blocks with ``conv1..3``/``bn1..3``/``downsample``, ``fc``) so that
:func:`attnzoo.attach` treats our models, torchvision's and timm's the same way.

- Bottleneck stride on the 3x3 conv ("ResNet v1.5", torchvision's default; the paper puts it on
  the first 1x1). Parameter counts are identical: ResNet-50 has 25,557,032 parameters.
- Projection shortcuts (option B of the paper) where the shape changes.
- ``small_input=True``: a CIFAR-style stem (3x3 stride-1 conv, no max-pool) for 32x32 inputs.
- ``replace_stride_with_dilation``: dilated stages for dense prediction (output stride 8 with
  ``(False, True, True)``), as in torchvision and the DeepLab/PSPNet backbones.

Variants that released checkpoints need (``attnzoo.weights`` sets them from the file):

- ``stride_in_1x1=True``: bottleneck stride on the first 1x1 conv (the paper's and Caffe's
  placement; the SE-ResNet-50 converted from the official Caffe model needs it).
- ``stem``: ``"7x7"`` (default); ``"deep"`` = three 3x3 convs of widths 32, 32, 64 (timm's
  ``*d`` models, "ResNet-D" of Bag of Tricks, arXiv:1812.01187); ``"deep_tiered"`` = widths
  24, 32, 64 (timm's ``*t`` models). Key names follow timm (``conv1.0`` ... ``conv1.6``).
- ``stem_pool``: ``"pad"`` (default: 3x3 max-pool, stride 2, padding 1) or ``"ceil"``
  (no padding, ``ceil_mode=True``: the Caffe pooling).
- ``avg_down=True``: projection shortcuts average-pool 2x2 (ceil mode, padding not counted)
  before a stride-1 1x1 conv (ResNet-D); keys ``downsample.1`` / ``downsample.2`` as timm.

Attention is never built inside the blocks: build the plain network (weights initialised once,
in :func:`init_resnet_weights`), then insert modules with :func:`attnzoo.attach`, so that a
module's own initialisation (zero-init γ and the like) is not overwritten.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from attnzoo.models import register_model

__all__ = ["STEMS", "STEM_POOLS", "BasicBlock", "Bottleneck", "ResNet", "init_resnet_weights"]

# stem name -> widths of its 3x3 convs (None: one 7x7 conv); "3x3" is small_input's stem
STEMS: dict[str, tuple[int, int] | None] = {"7x7": None, "deep": (32, 32), "deep_tiered": (24, 32)}
STEM_POOLS = ("pad", "ceil")


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(
        in_channels,
        out_channels,
        3,
        stride=stride,
        padding=dilation,
        dilation=dilation,
        bias=False,
    )


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


def make_stem(in_channels: int, stem: str) -> nn.Module:
    """The first conv(s) before ``bn1``: one 7x7/2 conv, or a deep stem of three 3x3 convs."""
    if stem == "3x3":
        return nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {tuple(STEMS)}, got {stem!r}")
    widths = STEMS[stem]
    if widths is None:
        return nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    first, second = widths
    return nn.Sequential(  # indices as timm's, so that its keys map one to one
        conv3x3(in_channels, first, stride=2),
        nn.BatchNorm2d(first),
        nn.ReLU(inplace=True),
        conv3x3(first, second),
        nn.BatchNorm2d(second),
        nn.ReLU(inplace=True),
        conv3x3(second, 64),
    )


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU."""

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        dilation: int = 1,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, 1, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce - 3x3 (stride here: v1.5) - 1x1 expand (x4), each with BN; shortcut; ReLU."""

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        dilation: int = 1,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = conv1x1(in_channels, planes, stride if stride_in_1x1 else 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, 1 if stride_in_1x1 else stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


def init_resnet_weights(model: nn.Module, zero_init_residual: bool = False) -> None:
    """The one place where backbone weights are initialised (torchvision's scheme).

    Convs: Kaiming normal, fan-out, ReLU gain. Norms: weight 1, bias 0. Linear layers keep
    PyTorch's default. ``zero_init_residual`` zeroes the last BN of every residual branch
    (Goyal et al. 2017), so each block starts as the identity.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    if zero_init_residual:
        for module in model.modules():
            last_norm = getattr(module, "bn3", None) or getattr(module, "bn2", None)
            if isinstance(module, (BasicBlock, Bottleneck)) and last_norm is not None:
                nn.init.zeros_(last_norm.weight)


class ResNet(nn.Module):
    """ImageNet-layout ResNet: stem, four stages (64/128/256/512 planes), GAP, FC."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int],
        num_classes: int = 1000,
        in_channels: int = 3,
        small_input: bool = False,
        replace_stride_with_dilation: tuple[bool, bool, bool] = (False, False, False),
        zero_init_residual: bool = False,
        stride_in_1x1: bool = False,
        stem: str = "7x7",
        stem_pool: str = "pad",
        avg_down: bool = False,
    ) -> None:
        super().__init__()
        if len(replace_stride_with_dilation) != 3:
            raise ValueError(
                "replace_stride_with_dilation needs one flag per stage 2..4 (3 values), got "
                f"{replace_stride_with_dilation!r}"
            )
        if stem_pool not in STEM_POOLS:
            raise ValueError(f"stem_pool must be one of {STEM_POOLS}, got {stem_pool!r}")
        self.in_planes = 64
        self.dilation = 1
        self.avg_down = avg_down
        self.stride_in_1x1 = stride_in_1x1
        self.conv1: nn.Module = make_stem(in_channels, "3x3" if small_input else stem)
        if small_input:
            # CIFAR-style stem: keep the 32x32 resolution into the first stage.
            self.maxpool: nn.Module = nn.Identity()
        elif stem_pool == "ceil":
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=0, ceil_mode=True)
        else:
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2, replace_stride_with_dilation[0])
        self.layer3 = self._make_layer(block, 256, layers[2], 2, replace_stride_with_dilation[1])
        self.layer4 = self._make_layer(block, 512, layers[3], 2, replace_stride_with_dilation[2])
        self.avgpool: nn.Module = nn.AdaptiveAvgPool2d(1)
        self.fc: nn.Module = nn.Linear(512 * block.expansion, num_classes)
        self.num_features = 512 * block.expansion
        # The output of every residual stage plus the classifier (attnzoo.gattanet's default).
        self.gattanet_layers = ["layer1", "layer2", "layer3", "layer4", "fc"]
        init_resnet_weights(self, zero_init_residual)

    def _make_layer(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        planes: int,
        blocks: int,
        stride: int = 1,
        dilate: bool = False,
    ) -> nn.Sequential:
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        out_planes = planes * block.expansion
        if (stride != 1 or self.in_planes != out_planes) and self.avg_down:
            pool: nn.Module = nn.Identity()
            if stride != 1:
                pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
            downsample = nn.Sequential(
                pool, conv1x1(self.in_planes, out_planes), nn.BatchNorm2d(out_planes)
            )
        elif stride != 1 or self.in_planes != out_planes:
            downsample = nn.Sequential(
                conv1x1(self.in_planes, out_planes, stride), nn.BatchNorm2d(out_planes)
            )
        in_1x1 = self.stride_in_1x1
        layers = [block(self.in_planes, planes, stride, downsample, previous_dilation, in_1x1)]
        self.in_planes = out_planes
        layers += [
            block(self.in_planes, planes, 1, None, self.dilation, in_1x1) for _ in range(1, blocks)
        ]
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.forward_features(x))
        return self.fc(torch.flatten(x, 1))  # (B, 512·expansion) -> (B, num_classes)


@register_model("resnet18")
def resnet18(num_classes: int = 1000, **options: Any) -> ResNet:
    """ResNet-18 (basic blocks 2-2-2-2), 11.69M parameters at 1000 classes."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes=num_classes, **options)


@register_model("resnet34")
def resnet34(num_classes: int = 1000, **options: Any) -> ResNet:
    """ResNet-34 (basic blocks 3-4-6-3), 21.80M parameters at 1000 classes."""
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes=num_classes, **options)


@register_model("resnet50")
def resnet50(num_classes: int = 1000, **options: Any) -> ResNet:
    """ResNet-50 (bottlenecks 3-4-6-3), 25,557,032 parameters at 1000 classes."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes=num_classes, **options)
