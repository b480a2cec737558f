"""Relation-Aware Global Attention (RGA-S, RGA-C, RGA-SC).

Zhang, Lan, Zeng, Jin, Chen, "Relation-Aware Global Attention for Person
Re-identification", CVPR 2020, arXiv:1904.02998.
Official code: https://github.com/microsoft/Relation-Aware-Global-Attention-Networks
(``reid/models/models_utils/rga_modules.py``, read for the layer widths below).

Spatial form (RGA-S), on X (B, C, H, W) with N = H·W positions:

    θ_i, φ_i = ReLU(BN(W_θ x_i)), ReLU(BN(W_φ x_i))              C -> C/cha_ratio
    R(i, j)  = θ_iᵀ φ_j                                           (N × N relations)
    r_i      = [R(i, :), R(:, i)]                                 2N values per position
    ỹ_i      = [mean_c ReLU(BN(W_g x_i)),  ReLU(BN(W_r r_i))]     1 + N/spa_ratio channels
    a_i      = sigmoid(BN(W_2 ReLU(BN(W_1 ỹ_i))))                 W_1: -> (1+N/s)/down_ratio
    Y        = X · a

Channel form (RGA-C): the same with the roles of channels and positions swapped: each
channel c is a node whose feature is its N-vector x_c; θ, φ, W_g map N -> N/spa_ratio, the
relation R is C × C, r_c = [R(c, :), R(:, c)] is embedded 2C -> C/cha_ratio, and the gate
(B, C, 1, 1) multiplies X. RGA-SC applies RGA-S then RGA-C (the paper's best model).

The relation features have one channel per position (N) or per channel (C), so the module
is bound to the spatial size given at construction (``spatial_size``) and needs the full
N × N (and C × C) relation matrix by definition: memory O(B·N²) for RGA-S.

The paper and the official code agree on the equation; the code fixes what the paper leaves
open, and these choices are followed: every embedding is 1x1 conv (no bias) + BN + ReLU, the
last 1x1 conv of the attention stack is followed by BN(1) before the sigmoid, and the three
ratios default to 8 (cha_ratio, spa_ratio, down_ratio as in the released model). The width of
the first layer of the attention stack is ``max(1, (1 + d) // down_ratio)``: the code's
``(1 + d) // down_ratio`` is 0 (a broken layer) for small inputs; for the paper's sizes the two
agree.
"""

from __future__ import annotations

import torch
from torch import nn

from attnzoo.domains import Integer, IntTuple
from attnzoo.layers import ConvNormAct, RecordsMaps, check_input, check_spatial_size, run_fp32
from attnzoo.registry import register

_RGA_OPTIONS = {
    "spatial_size": IntTuple(1, length=2, scalar=True, optional=True),
    "cha_ratio": Integer(1),
    "spa_ratio": Integer(1),
    "down_ratio": Integer(1),
}
_RGA_INFO = dict(
    paper="Relation-Aware Global Attention for Person Re-identification",
    authors="Zhang, Lan, Zeng, Jin, Chen",
    year=2020,
    venue="CVPR",
    arxiv="1904.02998",
    code_url="https://github.com/microsoft/Relation-Aware-Global-Attention-Networks",
    kind="gate",
    placement="stage_end",
    size_bound=True,
    example_options={"spatial_size": (8, 8)},
    example_channels=64,
)


def _reduced(width: int, ratio: int, name: str) -> int:
    if ratio < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {ratio}")
    if width // ratio < 1:
        raise ValueError(
            f"RGA: {name}={ratio} reduces a width of {width} to 0; use a smaller {name}"
        )
    return width // ratio


class _RelationBranch(nn.Module):
    """One RGA branch over ``nodes`` nodes whose features have ``node_dim`` values.

    Input (B, node_dim, nodes, 1) -- a node per position for RGA-S, a node per channel for
    RGA-C -- output the attention logits (B, 1, nodes, 1) before the sigmoid.
    """

    def __init__(
        self,
        node_dim: int,
        nodes: int,
        node_ratio: tuple[str, int],
        rel_ratio: tuple[str, int],
        down_ratio: int,
    ) -> None:
        super().__init__()
        inter = _reduced(node_dim, node_ratio[1], node_ratio[0])
        rel = _reduced(nodes, rel_ratio[1], rel_ratio[0])
        self.theta = ConvNormAct(node_dim, inter)
        self.phi = ConvNormAct(node_dim, inter)
        self.unary = ConvNormAct(node_dim, inter)
        self.relation = ConvNormAct(2 * nodes, rel)
        hidden = max(1, (1 + rel) // down_ratio)
        self.attention = nn.Sequential(
            ConvNormAct(1 + rel, hidden),
            nn.Conv2d(hidden, 1, 1, bias=False),
            nn.BatchNorm2d(1),
        )

    def forward(self, nodes: torch.Tensor) -> torch.Tensor:
        b, _, n, _ = nodes.shape
        theta = self.theta(nodes).flatten(2)  # (B, d, n)
        phi = self.phi(nodes).flatten(2)  # (B, d, n)
        relation = theta.transpose(1, 2) @ phi  # (B, n, n): R(i, j) = θ_iᵀ φ_j
        # channel j of node i: R(i, j) for the outgoing half, R(j, i) for the incoming half
        outgoing = relation.transpose(1, 2).reshape(b, n, n, 1)  # (B, n [j], n [i], 1)
        incoming = relation.reshape(b, n, n, 1)  # (B, n [j], n [i], 1)
        rel = self.relation(torch.cat((outgoing, incoming), dim=1))  # (B, n/s, n, 1)
        unary = self.unary(nodes).mean(dim=1, keepdim=True)  # (B, 1, n, 1)
        return self.attention(torch.cat((unary, rel), dim=1))  # (B, 1, n, 1)

    def gate(self, nodes: torch.Tensor) -> torch.Tensor:
        """sigmoid of :meth:`forward`. θᵀφ sums products of unnormalised features (NaN under
        fp16 autocast from ~200x unit scale), so the callers run it through ``run_fp32``."""
        return torch.sigmoid(self(nodes))


class _RGA(nn.Module, RecordsMaps):
    """RGA with the spatial and/or channel branch (the public classes fix which)."""

    use_spatial: bool = True
    use_channel: bool = True
    name = "RGA"

    def __init__(
        self,
        channels: int,
        spatial_size: tuple[int, int] | int | None = None,
        cha_ratio: int = 8,
        spa_ratio: int = 8,
        down_ratio: int = 8,
    ) -> None:
        super().__init__()
        if spatial_size is None:
            raise ValueError(
                f"{self.name} is defined for one spatial size: pass spatial_size=(H, W), the size "
                "of the feature map it will see (e.g. (16, 8) after ResNet-50 stage 4 at 256x128)"
            )
        size = (spatial_size, spatial_size) if isinstance(spatial_size, int) else spatial_size
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"{self.name}: spatial_size must be (H, W) >= 1, got {spatial_size}")
        self.channels = channels
        self.expected_size = (int(size[0]), int(size[1]))
        positions = self.expected_size[0] * self.expected_size[1]
        if self.use_spatial:
            # nodes = positions, node features = channels
            self.spatial = _RelationBranch(
                channels, positions, ("cha_ratio", cha_ratio), ("spa_ratio", spa_ratio), down_ratio
            )
        if self.use_channel:
            # nodes = channels, node features = positions
            self.channel = _RelationBranch(
                positions, channels, ("spa_ratio", spa_ratio), ("cha_ratio", cha_ratio), down_ratio
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, self.name)
        check_spatial_size(x, self.expected_size, self.name)
        b, c, h, w = x.shape
        if self.use_spatial:
            nodes = x.reshape(b, c, h * w, 1)  # (B, C, N, 1): one node per position
            gate = run_fp32(self.spatial.gate, nodes).reshape(b, 1, h, w)  # (B, 1, H, W)
            self._record("spatial", gate)
            x = x * gate
        if self.use_channel:
            nodes = x.reshape(b, c, h * w).transpose(1, 2).unsqueeze(-1)  # (B, N, C, 1)
            gate = run_fp32(self.channel.gate, nodes).reshape(b, c, 1, 1)  # (B, C, 1, 1)
            self._record("channel", gate)
            x = x * gate
        return x


@register(
    "rga_s",
    options=_RGA_OPTIONS,
    category="spatial",
    maps=("spatial",),
    memory="O(B·N²): the N×N position relation matrix, by definition (N fixed at construction)",
    **_RGA_INFO,
)
class RGASpatial(_RGA):
    """RGA-S: spatial gate from each position's relations to all positions (size-bound)."""

    use_channel = False
    name = "RGA-S"


@register(
    "rga_c",
    options=_RGA_OPTIONS,
    category="channel",
    maps=("channel",),
    memory="O(B·C²): the C×C channel relation matrix, by definition",
    **_RGA_INFO,
)
class RGAChannel(_RGA):
    """RGA-C: channel gate from each channel's relations to all channels (size-bound)."""

    use_spatial = False
    name = "RGA-C"


@register(
    "rga_sc",
    options=_RGA_OPTIONS,
    category="hybrid",
    maps=("spatial", "channel"),
    memory="O(B·(N² + C²)): the N×N and C×C relation matrices, by definition",
    **_RGA_INFO,
)
class RGASpatialChannel(_RGA):
    """RGA-SC: RGA-S followed by RGA-C, as in the paper's final model (size-bound)."""

    name = "RGA-SC"
