"""Squeeze-and-Excitation (SE).

Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018, arXiv:1709.01507.
Official code: https://github.com/hujie-frank/SENet (Caffe).

    s = sigmoid(W2 · ReLU(W1 · GAP(X)))          W1: C -> C/r, W2: C/r -> C, r = 16
    Y = X · s

Differences from the official code:
- ``bias``: the released Caffe models have biases on both FC layers (default True, as
  released); the journal version (TPAMI) reports that dropping them helps on ResNets.
- Reduced width: exact ``C / r`` by default (``rd_divisor=1``); ``rd_divisor=8`` rounds as timm.
"""

from __future__ import annotations

import torch
from torch import nn

from attnzoo.domains import FLAG, RD_DIVISOR, RD_OPTIONS
from attnzoo.layers import RecordsMaps, check_input, pointwise, reduced_channels
from attnzoo.registry import Divergence, register


@register(
    "se",
    options={**RD_OPTIONS, "rd_divisor": RD_DIVISOR, "bias": FLAG},
    paper="Squeeze-and-Excitation Networks",
    authors="Hu, Shen, Sun",
    year=2018,
    venue="CVPR",
    arxiv="1709.01507",
    code_url="https://github.com/hujie-frank/SENet",
    category="channel",
    kind="gate",
    placement="block_end",
    divergences=(
        Divergence("bias", True, True, True, "released models have FC biases; TPAMI drops them"),
    ),
    maps=("channel",),
)
class SqueezeExcite(nn.Module, RecordsMaps):
    """SE gate: ``X * sigmoid(MLP(GAP(X)))`` with a C -> C/r -> C bottleneck."""

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 16,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.channels = channels
        hidden = reduced_channels(channels, rd_ratio, rd_channels, rd_divisor)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=bias)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, "SE")
        batch, channels = x.shape[:2]
        squeezed = x.mean(dim=(2, 3))  # (B, C)
        excited = pointwise(self.act(pointwise(squeezed, self.fc1)), self.fc2)
        gate = torch.sigmoid(excited).view(batch, channels, 1, 1)
        self._record("channel", gate)
        return x * gate
