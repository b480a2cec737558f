"""Convolutional Block Attention Module (CBAM).

Woo, Park, Lee, Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018,
arXiv:1807.06521. Official code: https://github.com/Jongchan/attention-module (MODELS/cbam.py).

    Mc(X) = sigmoid(MLP(AvgPool(X)) + MLP(MaxPool(X)))      shared MLP C -> C/16 -> C, biases
    X'    = X · Mc(X)
    Ms(X') = sigmoid(f7x7([AvgPool_c(X'); MaxPool_c(X')]))   pooling across channels
    Y     = X' · Ms(X')

Recorded maps: ``"channel"`` = Mc (B, C, 1, 1), ``"spatial"`` = Ms (B, 1, H, W).

Differences from the official code:
- ``spatial_bn``: the official spatial gate is 7x7 conv (no bias) → BatchNorm (momentum 0.01)
  → sigmoid; the paper has no BN. Default False (paper: 7x7 conv with bias, no BN); True gives
  the code's conv-without-bias + BN.
- ``pool_order``: the paper concatenates [mean; max]; the official ``ChannelPool`` gives
  [max; mean]. Only the meaning of the 7x7 conv's two input channels changes (it matters when
  loading released weights). Default ``"mean_max"`` (paper); ``"max_mean"`` (code).
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from attnzoo.domains import FLAG, RD_DIVISOR, RD_OPTIONS, Choice, Integer
from attnzoo.layers import RecordsMaps, check_input, pointwise, reduced_channels
from attnzoo.registry import Divergence, register

POOL_ORDERS = ("mean_max", "max_mean")


@register(
    "cbam",
    options={
        **RD_OPTIONS,
        "rd_divisor": RD_DIVISOR,
        "spatial_kernel": Integer(1, odd=True),
        "spatial_bn": FLAG,
        "pool_order": Choice(POOL_ORDERS),
    },
    paper="CBAM: Convolutional Block Attention Module",
    authors="Woo, Park, Lee, Kweon",
    year=2018,
    venue="ECCV",
    arxiv="1807.06521",
    code_url="https://github.com/Jongchan/attention-module",
    category="hybrid",
    kind="gate",
    placement="block_end",
    divergences=(
        Divergence("spatial_bn", False, False, True, "official code: BN after the 7x7 conv"),
        Divergence(
            "pool_order", "mean_max", "mean_max", "max_mean", "official ChannelPool: [max, mean]"
        ),
    ),
    maps=("channel", "spatial"),
)
class CBAM(nn.Module, RecordsMaps):
    """CBAM: channel gate (avg+max through a shared MLP), then spatial gate (7x7 conv)."""

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 16,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        spatial_kernel: int = 7,
        spatial_bn: bool = False,
        pool_order: str = "mean_max",
    ) -> None:
        super().__init__()
        if pool_order not in POOL_ORDERS:
            raise ValueError(f"CBAM pool_order must be one of {POOL_ORDERS}, got {pool_order!r}")
        if spatial_kernel < 1 or spatial_kernel % 2 == 0:
            raise ValueError(f"CBAM spatial_kernel must be odd and positive, got {spatial_kernel}")
        self.channels = channels
        self.pool_order = pool_order
        hidden = reduced_channels(channels, rd_ratio, rd_channels, rd_divisor)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
        )
        self.spatial_conv = nn.Conv2d(
            2, 1, spatial_kernel, padding=spatial_kernel // 2, bias=not spatial_bn
        )
        # momentum 0.01 as the official BasicConv's BatchNorm
        self.spatial_norm = nn.BatchNorm2d(1, momentum=0.01) if spatial_bn else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, "CBAM")
        batch, channels = x.shape[:2]
        # Both descriptors through the shared MLP in one batch: (2B, C) -> (2B, C).
        descriptors = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))])
        fc1, act, fc2 = cast(tuple[nn.Conv2d, nn.ReLU, nn.Conv2d], tuple(self.mlp))
        scores = pointwise(act(pointwise(descriptors, fc1)), fc2)
        channel_gate = torch.sigmoid(scores[:batch] + scores[batch:])
        channel_gate = channel_gate.view(batch, channels, 1, 1)
        self._record("channel", channel_gate)
        x = x * channel_gate
        mean_c = x.mean(dim=1, keepdim=True)  # (B, 1, H, W)
        max_c = x.amax(dim=1, keepdim=True)  # (B, 1, H, W)
        pooled = [mean_c, max_c] if self.pool_order == "mean_max" else [max_c, mean_c]
        logits = self.spatial_norm(self.spatial_conv(torch.cat(pooled, dim=1)))
        spatial_gate = torch.sigmoid(logits)  # (B, 1, H, W)
        self._record("spatial", spatial_gate)
        return x * spatial_gate
