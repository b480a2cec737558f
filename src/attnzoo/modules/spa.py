"""Spatial Pyramid Attention (SPA).

Guo, Ma, Sansom, McGuire, Kalaani, Chen, Tang, Yang, Fu, "SPANet: Spatial Pyramid Attention
Network for Enhanced Image Recognition", ICME 2020 (journal version: Ma et al., "Spatial Pyramid
Attention for Deep Convolutional Neural Networks", IEEE TMM 2021). No arXiv preprint.
Official code: https://github.com/ma-xu/SPANet (PyTorch, ``SPPSELayer``).

    P = [vec(AdaptiveAvgPool_1(X)), vec(AdaptiveAvgPool_2(X)), vec(AdaptiveAvgPool_4(X))]
                                                           (21·C values per image)
    w = sigmoid(W2 · ReLU(W1 · P))                         W1: 21C -> C/r, W2: C/r -> C, no bias
    Y = X · w                                              (topology A, the registered gate)

Topologies B and C of the paper compute ``w`` from the *block input* and apply it to the
*residual branch output*. A backbone does that with the same module::

    weights = spa.weights(block_input)       # (B, C, 1, 1); C: project block_input first
    out = residual_branch(block_input) * weights + shortcut(block_input)

(topology C first maps ``block_input`` with 1x1 conv + BN + ReLU when its channel count differs
from the branch output; build ``spa`` with the branch output's channels in that case).

The cheaper 4x4-spatial-map variant of the TMM journal paper is not implemented.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attnzoo.domains import RD_DIVISOR, RD_OPTIONS, IntTuple
from attnzoo.layers import RecordsMaps, check_input, reduced_channels
from attnzoo.registry import register


@register(
    "spa",
    options={**RD_OPTIONS, "rd_divisor": RD_DIVISOR, "pool_sizes": IntTuple(1)},
    paper="SPANet: Spatial Pyramid Attention Network for Enhanced Image Recognition",
    authors="Guo, Ma, Sansom, McGuire, Kalaani, Chen, Tang, Yang, Fu",
    year=2020,
    venue="ICME",
    code_url="https://github.com/ma-xu/SPANet",
    category="channel",
    kind="gate",
    placement="block_end",
    maps=("channel",),
)
class SpatialPyramidAttention(nn.Module, RecordsMaps):
    """SPA gate: ``X * sigmoid(MLP(concat(pool_1(X), pool_2(X), pool_4(X))))``.

    ``weights(x)`` returns the (B, C, 1, 1) weights alone, for topologies B and C.
    """

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 16,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        pool_sizes: tuple[int, ...] = (1, 2, 4),
    ) -> None:
        super().__init__()
        if not pool_sizes or any(s < 1 for s in pool_sizes):
            raise ValueError(f"pool_sizes must be positive integers, got {pool_sizes}")
        self.channels = channels
        self.pool_sizes = tuple(int(s) for s in pool_sizes)
        pyramid = channels * sum(s * s for s in self.pool_sizes)  # 21·C for (1, 2, 4)
        hidden = reduced_channels(channels, rd_ratio, rd_channels, rd_divisor)
        self.fc1 = nn.Linear(pyramid, hidden, bias=False)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels, bias=False)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The channel weights (B, C, 1, 1) computed from ``x`` (topologies B and C)."""
        check_input(x, self.channels, "SPA")
        batch = x.shape[0]
        # each level (B, C, s, s) -> (B, C·s·s), channel-major as in the official code
        pyramid = torch.cat(
            [
                F.adaptive_avg_pool2d(x, s).reshape(batch, self.channels * s * s)
                for s in self.pool_sizes
            ],
            dim=1,
        )  # (B, 21·C)
        gate = torch.sigmoid(self.fc2(self.act(self.fc1(pyramid))))  # (B, C)
        gate = gate.reshape(batch, self.channels, 1, 1)  # (B, C, 1, 1)
        self._record("channel", gate)
        return gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)
