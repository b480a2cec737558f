"""A small segmentation network for the attention heads: dilated ResNet (output stride 8) + head.

Backbone: the ImageNet-layout ResNet-18/34/50 of :mod:`attnzoo.models.resnet_imagenet` with
the strides of stages 3 and 4 replaced by dilations 2 and 4 (Yu & Koltun, "Multi-Scale Context
Aggregation by Dilated Convolutions", ICLR 2016, arXiv:1511.07122; the backbone of DANet,
CCNet, ANN and OCR), so stage 4 is at 1/8 of the input.

The head slot takes a registry name (``head=``):

- ``"fcn"`` (default): FCN head as in torchvision's ``FCNHead``: 3x3 conv-BN-ReLU to C/4,
  dropout 0.1, 1x1 conv to the classes (Long, Shelhamer, Darrell, CVPR 2015, arXiv:1411.4038).
- a ``head`` module (``danet_head``, ``ocr_head``): built as ``create(name, C4,
  num_classes=K)`` on stage-4 features; it returns logits or ``(logits, aux...)``.
- a ``fusion`` module (``afnb``): ``afnb(high=stage 4, low=stage 3)``, then the FCN head on the
  fused features (ANN fuses stages 3 and 4 this way).
- a ``gate`` module (``cca`` with its shared-weight recurrence, ``apnb``, ``pam``, ``cam``,
  any gate): between the FCN head's 3x3 conv-BN-ReLU and its classifier (CCNet's and ANN's
  heads reduce the width with a 3x3 conv before the attention, too).

``forward(x)`` returns logits (B, K, H, W) at the input resolution, or a tuple
``(logits, aux...)`` of such tensors when the head returns several outputs (OCR's soft object
regions, DANet's per-branch logits), for the auxiliary losses.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attnzoo.models import register_model
from attnzoo.models.resnet_imagenet import (
    BasicBlock,
    Bottleneck,
    ResNet,
    init_resnet_weights,
)
from attnzoo.registry import create, module_info

__all__ = ["FCNHead", "SegNetResNet"]

_DEPTHS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}


class FCNHead(nn.Module):
    """3x3 conv-BN-ReLU (C -> C/4), optional attention gate, dropout, 1x1 classifier."""

    def __init__(
        self,
        channels: int,
        num_classes: int,
        gate: str | None = None,
        gate_options: dict[str, Any] | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        inter = channels // 4
        self.conv = nn.Conv2d(channels, inter, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(inter)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(inter, num_classes, 1)
        init_resnet_weights(self)
        # Built after the init above: the gate keeps its own initialisation (γ = 0 ...).
        self.gate = nn.Identity() if gate is None else create(gate, inter, **(gate_options or {}))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gate(self.relu(self.bn(self.conv(x))))
        return self.classifier(self.dropout(x))


class SegNetResNet(nn.Module):
    """Dilated ResNet (output stride 8) with a named head; logits at the input resolution."""

    def __init__(
        self,
        num_classes: int = 21,
        in_channels: int = 3,
        depth: int = 18,
        head: str = "fcn",
        head_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if depth not in _DEPTHS:
            raise ValueError(f"depth must be one of {sorted(_DEPTHS)}, got {depth}")
        block, layers = _DEPTHS[depth]
        self.backbone = ResNet(
            block,
            layers,
            num_classes=1,
            in_channels=in_channels,
            replace_stride_with_dilation=(False, True, True),
        )
        # Classification parts the dense predictor does not use.
        self.backbone.avgpool = nn.Identity()
        self.backbone.fc = nn.Identity()
        high = 512 * block.expansion  # stage 4 width
        low = 256 * block.expansion  # stage 3 width
        options = dict(head_options or {})
        self.head_name = head
        self.fusion: nn.Module | None = None
        if head == "fcn":
            self.head: nn.Module = FCNHead(high, num_classes, **options)
        else:
            info = module_info(head)
            if info.kind == "head":
                self.head = create(head, high, num_classes=num_classes, **options)
            elif info.kind == "fusion":
                self.fusion = create(head, high, low_channels=low, **options)
                self.head = FCNHead(high, num_classes)
            elif info.kind == "gate":
                self.head = FCNHead(high, num_classes, gate=head, gate_options=options)
            else:
                raise ValueError(
                    f"head {head!r} is a {info.kind!r} module; the head slot takes 'fcn' or a "
                    "module of kind 'head', 'fusion' or 'gate'"
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        size = x.shape[-2:]
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        stage3 = b.layer3(b.layer2(b.layer1(x)))  # (B, 256·e, H/8, W/8)
        stage4 = b.layer4(stage3)  # (B, 512·e, H/8, W/8)
        features = stage4 if self.fusion is None else self.fusion(stage4, stage3)
        out = self.head(features)
        outputs = (out,) if isinstance(out, torch.Tensor) else tuple(out)
        upsampled = tuple(
            F.interpolate(o, size=size, mode="bilinear", align_corners=False) for o in outputs
        )
        return upsampled[0] if len(upsampled) == 1 else upsampled


@register_model("segnet_resnet")
def segnet_resnet(num_classes: int = 21, **options: Any) -> SegNetResNet:
    """Dilated ResNet-18 (``depth`` 18/34/50), output stride 8, ``head="fcn"`` by default."""
    return SegNetResNet(num_classes=num_classes, **options)
