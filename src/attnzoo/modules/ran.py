"""Residual Attention Network attention module (RAN).

Wang, Jiang, Qian, Yang, Li, Zhang, Wang, Tang, "Residual Attention Network for Image
Classification", CVPR 2017, arXiv:1704.06904.
Official code: https://github.com/fwang91/residual-attention-network (Caffe prototxt;
structure read from imagenet_model/Attention-56-deploy.prototxt).

A between-stage module built from pre-activation bottleneck residual units (BN-ReLU-1x1 C->C/4,
BN-ReLU-3x3, BN-ReLU-1x1 C/4->C, plus identity), with the paper's p = 1, t = 2, r = 1:

    x  = pre(X)                                  p units
    T  = trunk(x)                                t units
    mask branch (hourglass, ``depth`` max-pools, 3x3 stride 2):
        d_1 = down_1(pool(x)), ..., d_{k-1} = down_{k-1}(pool(d_{k-2}))        r units each
        b   = bottom(pool(d_{k-1}))                                          2r units
        for l = k-1 .. 1:  b = up_l(upsample(b, size(d_l)) + skip_l(d_l))   skip: 1 unit,
                                                                             up: r units
        M = sigmoid(W2 · ReLU(BN(W1 · ReLU(BN(upsample(b, size(T)))))))     1x1 convs C->C
    H  = (1 + M) · T                             attention residual learning (default)
    Y  = post(H)                                 p units

``depth`` is the number of pools (the paper: 3 at 56x56, 2 at 28x28, 1 at 14x14). Upsampling
is bilinear with aligned corners (Caffe's ``Interp`` layer) to each skip's exact size, so odd
and non-square inputs work at any size. ``attention_residual=False`` gives the plain
``M · T`` the paper reports as worse (naive attention learning).

Notes on the released prototxt: the mask branch starts from the output of the pre unit (the
trunk's input); the skip connections are a residual unit on the pooled feature and are added
to the upsampled coarser map (the last upsampling is not added to the trunk, unlike several
re-implementations). Caffe pools 3x3 stride 2 without padding in ceil mode; here the pool pads
by 1 (same output sizes on even inputs, windows shifted by one pixel, and it works on inputs
smaller than 3).
The recorded maps: "spatial" = mean of M over channels (B, 1, H, W); "mask" = M (B, C, H, W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attnzoo.domains import FLAG, Integer
from attnzoo.layers import RecordsMaps, check_input
from attnzoo.registry import register


class PreActUnit(nn.Module):
    """Pre-activation bottleneck unit with identity shortcut (children avoid ``conv1/bn2`` so
    that ``attach`` does not mistake it for a backbone block)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        width = max(1, channels // 4)
        self.norm1 = nn.BatchNorm2d(channels)
        self.reduce = nn.Conv2d(channels, width, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(width)
        self.spatial = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.norm3 = nn.BatchNorm2d(width)
        self.expand = nn.Conv2d(width, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.reduce(F.relu(self.norm1(x)))
        out = self.spatial(F.relu(self.norm2(out)))
        out = self.expand(F.relu(self.norm3(out)))
        return x + out


def _units(channels: int, count: int) -> nn.Sequential:
    return nn.Sequential(*(PreActUnit(channels) for _ in range(count)))


def _upsample(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    size = (like.shape[-2], like.shape[-1])
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


@register(
    "ran",
    options={
        "depth": Integer(1),
        "pre_units": Integer(0),
        "trunk_units": Integer(1),
        "mask_units": Integer(1),
        "attention_residual": FLAG,
    },
    paper="Residual Attention Network for Image Classification",
    authors="Wang, Jiang, Qian, Yang, Li, Zhang, Wang, Tang",
    year=2017,
    venue="CVPR",
    arxiv="1704.06904",
    code_url="https://github.com/fwang91/residual-attention-network",
    category="mixed",
    kind="stage",
    placement="between_stages",
    maps=("spatial",),
    example_channels=16,
    memory="O(C·H·W) extra: an hourglass of residual units, no position-by-position matrix",
)
class ResidualAttention(nn.Module, RecordsMaps):
    """Attention module: trunk units modulated by a bottom-up/top-down soft mask, (1 + M)·T."""

    def __init__(
        self,
        channels: int,
        depth: int = 3,
        pre_units: int = 1,
        trunk_units: int = 2,
        mask_units: int = 1,
        attention_residual: bool = True,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth (number of mask-branch pools) must be >= 1, got {depth}")
        if pre_units < 0 or trunk_units < 1 or mask_units < 1:
            raise ValueError(
                "trunk_units and mask_units must be >= 1 and pre_units >= 0, got "
                f"{trunk_units}, {mask_units}, {pre_units}"
            )
        self.channels = channels
        self.depth = depth
        self.attention_residual = attention_residual
        self.pre = _units(channels, pre_units)
        self.trunk = _units(channels, trunk_units)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.down = nn.ModuleList(_units(channels, mask_units) for _ in range(depth - 1))
        self.skips = nn.ModuleList(PreActUnit(channels) for _ in range(depth - 1))
        self.bottom = _units(channels, 2 * mask_units)
        self.up = nn.ModuleList(_units(channels, mask_units) for _ in range(depth - 1))
        self.mask_head = nn.Sequential(
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1, bias=False),
        )
        self.post = _units(channels, pre_units)

    def soft_mask(self, x: torch.Tensor, trunk: torch.Tensor) -> torch.Tensor:
        """The mask M (B, C, H, W) in (0, 1) from the trunk's input ``x``."""
        downs: list[torch.Tensor] = []
        feats = x
        for level in self.down:
            feats = level(self.pool(feats))  # (B, C, ~H/2^l, ~W/2^l)
            downs.append(feats)
        feats = self.bottom(self.pool(feats))  # coarsest level
        for skip, up, down in zip(
            reversed(self.skips), reversed(self.up), reversed(downs), strict=True
        ):
            feats = up(_upsample(feats, down) + skip(down))
        return torch.sigmoid(self.mask_head(_upsample(feats, trunk)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, "RAN")
        x = self.pre(x)
        trunk = self.trunk(x)
        mask = self.soft_mask(x, trunk)  # (B, C, H, W)
        self._record("spatial", mask.mean(dim=1, keepdim=True))
        self._record("mask", mask)
        out = (1 + mask) * trunk if self.attention_residual else mask * trunk
        return self.post(out)
