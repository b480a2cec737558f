"""Double Attention block (A²-Net).

Chen, Kalantidis, Li, Yan, Feng, "A²-Nets: Double Attention Networks", NeurIPS 2018,
arXiv:1810.11579. No official code was released.

With three 1x1 convolutions A (m channels), B (n channels) and V (n channels) of X, N = H·W:

    gather:      G = A · softmax_N(B)ᵀ          (m x n): each of the n attention maps is a
                                                 distribution over the N positions
    distribute:  Z = G · softmax_n(V)           (m x N): at each position a distribution over
                                                 the n global descriptors
    Y = X + W_out · Z                           W_out: 1x1 conv m -> C

m and n are hyper-parameters; the default here is m = n = C/4 (``rd_ratio=1/4``), a common
choice for ResNet stages (the paper's ablations use m, n of a quarter to a half of C). Many
third-party versions take V's softmax over the positions instead of over n: that is wrong.
B has no bias: a constant added to a map cancels in the softmax over positions (it would be a
parameter that never gets a gradient). The recorded "spatial" map is the mean of the n gather distributions (B, 1, H, W).
"""

from __future__ import annotations

import torch
from torch import nn

from attnzoo.domains import RD_OPTIONS, Integer
from attnzoo.layers import RecordsMaps, check_input, reduced_channels, softmax_fp32
from attnzoo.registry import register


@register(
    "a2",
    options={**RD_OPTIONS, "attention_channels": Integer(1, optional=True)},
    paper="A²-Nets: Double Attention Networks",
    authors="Chen, Kalantidis, Li, Yan, Feng",
    year=2018,
    venue="NeurIPS",
    arxiv="1810.11579",
    code_url=None,
    category="context",
    kind="gate",
    placement="between_stages",
    maps=("spatial",),
    memory="O((m + 2n)·N) extra: gather/distribute maps, no position-by-position matrix",
)
class DoubleAttention(nn.Module, RecordsMaps):
    """A² block: gather global descriptors with n spatial softmaxes, distribute them back."""

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 4,
        rd_channels: int | None = None,
        attention_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.feature_channels = reduced_channels(channels, rd_ratio, rd_channels)  # m
        self.attention_channels = (  # n
            self.feature_channels if attention_channels is None else attention_channels
        )
        if self.attention_channels < 1:
            raise ValueError(f"attention_channels must be >= 1, got {attention_channels}")
        self.features = nn.Conv2d(channels, self.feature_channels, 1)  # A
        # a constant shift of a map is invisible to a softmax over positions: no bias on B
        self.gather_maps = nn.Conv2d(channels, self.attention_channels, 1, bias=False)  # B
        self.distribute_maps = nn.Conv2d(channels, self.attention_channels, 1)  # V
        self.proj = nn.Conv2d(self.feature_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, "A2")
        batch, _, height, width = x.shape
        features = self.features(x).flatten(2)  # (B, m, N)
        gather = softmax_fp32(self.gather_maps(x).flatten(2), dim=2)  # (B, n, N) over positions
        distribute = softmax_fp32(self.distribute_maps(x).flatten(2), dim=1)  # (B, n, N) over n
        descriptors = torch.bmm(features, gather.transpose(1, 2))  # (B, m, n)
        z = torch.bmm(descriptors, distribute)  # (B, m, N)
        z = z.reshape(batch, self.feature_channels, height, width)  # (B, m, H, W)
        self._record("spatial", gather.mean(dim=1).reshape(batch, 1, height, width))  # (B, 1, H, W)
        return x + self.proj(z)
