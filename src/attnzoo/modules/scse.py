"""Concurrent spatial and channel Squeeze-and-Excitation (scSE).

Roy, Navab, Wachinger, "Concurrent Spatial and Channel 'Squeeze & Excitation' in Fully
Convolutional Networks", MICCAI 2018, arXiv:1803.02579.
Official code: https://github.com/ai-med/squeeze_and_excitation (ChannelSpatialSELayer).

    cSE(X) = X · sigmoid(W2 · ReLU(W1 · GAP(X) + b1) + b2)     W1: C -> C/r, r = 2 (official)
    sSE(X) = X · sigmoid(w · X + b)                             1x1 conv C -> 1
    scSE(X) = cSE(X) + sSE(X)                                   (paper)

Recorded maps: ``"channel"`` = the cSE gate (B, C, 1, 1), ``"spatial"`` = the sSE gate
(B, 1, H, W).

Differences from the official code:
- ``combine``: the paper adds the two recalibrated maps; the official ``ChannelSpatialSELayer``
  takes their element-wise maximum, ``max(cSE(X), sSE(X))``. Default ``"sum"`` (paper);
  ``"max"`` (code).
"""

from __future__ import annotations

import torch
from torch import nn

from attnzoo.domains import RD_OPTIONS, Choice
from attnzoo.layers import RecordsMaps, check_input, pointwise, reduced_channels
from attnzoo.registry import Divergence, register

COMBINES = ("sum", "max")


@register(
    "scse",
    options={**RD_OPTIONS, "combine": Choice(COMBINES)},
    paper="Concurrent Spatial and Channel 'Squeeze & Excitation' in Fully Convolutional Networks",
    authors="Roy, Navab, Wachinger",
    year=2018,
    venue="MICCAI",
    arxiv="1803.02579",
    code_url="https://github.com/ai-med/squeeze_and_excitation",
    category="hybrid",
    kind="gate",
    placement="block_end",
    divergences=(Divergence("combine", "sum", "sum", "max", "official code: element-wise max"),),
    maps=("channel", "spatial"),
)
class SCSE(nn.Module, RecordsMaps):
    """scSE: channel SE and spatial SE applied concurrently, combined by sum (or max)."""

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 2,
        rd_channels: int | None = None,
        combine: str = "sum",
    ) -> None:
        super().__init__()
        if combine not in COMBINES:
            raise ValueError(f"scSE combine must be one of {COMBINES}, got {combine!r}")
        self.channels = channels
        self.combine = combine
        hidden = reduced_channels(channels, rd_ratio, rd_channels)
        self.channel_fc1 = nn.Conv2d(channels, hidden, 1)
        self.channel_act = nn.ReLU(inplace=True)
        self.channel_fc2 = nn.Conv2d(hidden, channels, 1)
        self.spatial_conv = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, "scSE")
        batch, channels = x.shape[:2]
        squeezed = x.mean(dim=(2, 3))  # (B, C)
        hidden = self.channel_act(pointwise(squeezed, self.channel_fc1))
        channel_gate = torch.sigmoid(pointwise(hidden, self.channel_fc2))
        channel_gate = channel_gate.view(batch, channels, 1, 1)
        spatial_gate = torch.sigmoid(self.spatial_conv(x))  # (B, 1, H, W)
        self._record("channel", channel_gate)
        self._record("spatial", spatial_gate)
        if self.combine == "sum":
            return x * (channel_gate + spatial_gate)
        return torch.maximum(x * channel_gate, x * spatial_gate)
