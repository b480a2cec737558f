"""Interaction-Aggregation-Update (IAU): channel (CIAU) and spatial part-graph (SIAU) blocks.

Hou, Ma, Chang, Gu, Shan, Chen, "IAUnet: Global Context-Aware Feature Learning for Person
Re-Identification", IEEE TNNLS 2020, arXiv:2009.01035 (extends "Interaction-and-Aggregation
Network for Person Re-identification", CVPR 2019, arXiv:1907.08435).
Official code: https://github.com/blue-blue272/ImgReID-IAnet (``models/IAU.py``,
``models/SIAU.py``, ``models/IAU3D.py``, ``models/STIAU.py``); every choice below that the
paper's prose leaves open follows that code.

CIAU, on X viewed as C channel nodes with N = H·W values each:

    f = softmax_row(X Xᵀ)              (C × C, logits and softmax in float32)
    Z = X + BN(W · (f X))               W 1x1 conv C -> C, BN weight and bias zero at init

SIAU, on X (B, C, H, W), P part maps (P = 4):

    a_p   = sigmoid(BN(W_a X))_p                         (B, P, H, W) part maps
    x_p   = Σ_i a_p(i) · X_i                             part features (C), un-normalised sum
    u     = mean_i X_i                                   the global node (C)
    x̂_p, û = g(x_p), g(u)                                g: 1x1 conv C -> C/2
    e_pq  = BN(w_e · [|x̂_p − x̂_q|, û])   (q ≠ p)         edge logits, no self-loops
    A_p·  = softmax_q(e_p·)                              interaction
    s_p   = ReLU(BN(W_s · [x̂_p, Σ_q A_pq x̂_q]))          update of every part (C -> C/2)
    Z     = X + BN(W_o · [mean_p s_p, û])                aggregate added to every position;
                                                         BN weight and bias zero at init

Video forms (``ciau3d``, ``siau3d``) on (B, C, T, H, W), as ``IAU3D.py`` / ``STIAU.py``:
CIAU's nodes are the C·T (channel, frame) pairs (a (C·T) × (C·T) affinity); SIAU builds
the P part features of every frame (T·P nodes, one global node for the clip), and the graph
links different parts of the same frame and the same part across frames (no other edge and
no self-loop); the aggregate of frame t (mean over its parts, with the global node) is
added to every position of frame t.

Both blocks start as the identity (zero-initialised output BN), as in the official code.
SIAU records its part maps: ``maps["parts"]`` (B, P, H, W) or (B, P, T, H, W) for the
part-mask supervision of the paper, and ``maps["spatial"]`` = their maximum over parts
(B, 1, H, W) for visualisation (the video form also averages it over frames).

Notes on the official code: its 1x1 convs that feed a BN carry a bias, which the BN's mean
subtraction cancels; they are left out here (no option: the function is the same). That
includes g, whose every output path (edges, update, output) ends in a BN. The
video form's 1x1 Conv3d/BatchNorm3d are run as Conv2d/BatchNorm2d on (B, C, T·H, W), the
same arithmetic.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from attnzoo.domains import RD_OPTIONS, Integer
from attnzoo.layers import (
    RecordsMaps,
    check_input,
    mask_fill_value,
    reduced_channels,
    softmax_fp32,
)
from attnzoo.registry import register, video_inputs

_EDGE_BIAS = {
    "edge_norm.bias": "shifts every edge logit equally; the softmax over neighbours ignores it "
    "(kept: the official BN(1) is affine)"
}

_SIAU_OPTIONS = {**RD_OPTIONS, "parts": Integer(2)}
_IAU_INFO: dict[str, Any] = dict(
    paper="IAUnet: Global Context-Aware Feature Learning for Person Re-Identification",
    authors="Hou, Ma, Chang, Gu, Shan, Chen",
    year=2020,
    venue="TNNLS",
    arxiv="2009.01035",
    code_url="https://github.com/blue-blue272/ImgReID-IAnet",
    kind="gate",
    placement="stage_end",
    identity_at_init=True,
)


def _zero_bn(channels: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels)
    nn.init.zeros_(bn.weight)
    nn.init.zeros_(bn.bias)
    return bn


class _CIAU(nn.Module):
    video = False
    name = "CIAU"

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.proj = nn.Conv2d(channels, channels, 1, bias=False)
        self.norm = _zero_bn(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, self.name, rank=5 if self.video else 4)
        b, c = x.shape[:2]
        spatial = x.shape[2:]
        frames = math.prod(spatial[:-2])  # T (1 for images)
        nodes = x.reshape(b, c * frames, spatial[-2] * spatial[-1])  # (B, C or C·T, N)
        compute = torch.float64 if x.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=x.device.type, enabled=False):
            # unscaled X Xᵀ overflows fp16: logits in float32 as well as the softmax
            nodes32 = nodes.to(compute)
            affinity = softmax_fp32(nodes32 @ nodes32.transpose(1, 2), dim=-1)  # (B, C', C')
            context = (affinity @ nodes32).to(x.dtype)  # (B, C', N)
        context = context.reshape(b, c, frames * spatial[-2], spatial[-1])  # (B, C, [T·]H, W)
        update = self.norm(self.proj(context)).reshape(x.shape)  # (B, C, [T,] H, W)
        return x + update


@register(
    "ciau",
    category="channel",
    memory="O(B·C²): the C×C channel affinity, by definition",
    **_IAU_INFO,
)
class CIAU(_CIAU):
    """CIAU: channel interaction softmax(X Xᵀ) X, 1x1 conv + zero-init BN, residual."""


@register(
    "ciau3d",
    category="channel",
    memory="O(B·(C·T)²): the (C·T)×(C·T) channel-frame affinity, by definition",
    inputs=video_inputs,
    **_IAU_INFO,
)
class CIAU3d(_CIAU):
    """CIAU on clips (B, C, T, H, W): (channel, frame) pairs interact, as the official code."""

    video = True
    name = "CIAU3d"


class _SIAU(nn.Module, RecordsMaps):
    video = False
    name = "SIAU"

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 2,
        rd_channels: int | None = None,
        parts: int = 4,
    ) -> None:
        super().__init__()
        if parts < 2:
            raise ValueError(
                f"{self.name} needs parts >= 2 (a graph without self-loops), got {parts}"
            )
        self.channels = channels
        self.parts = parts
        hidden = reduced_channels(channels, rd_ratio, rd_channels)
        self.part_conv = nn.Conv2d(channels, parts, 1, bias=False)
        self.part_norm = nn.BatchNorm2d(parts)
        # g, shared by parts and global node; every path from it ends in a BN (no bias)
        self.reduce = nn.Conv2d(channels, hidden, 1, bias=False)
        self.edge_conv = nn.Conv2d(2 * hidden, 1, 1, bias=False)
        self.edge_norm = nn.BatchNorm2d(1)
        self.update_conv = nn.Conv2d(2 * hidden, hidden, 1, bias=False)
        self.update_norm = nn.BatchNorm2d(hidden)
        self.out_conv = nn.Conv2d(2 * hidden, channels, 1, bias=False)
        self.out_norm = _zero_bn(channels)

    def _allowed_edges(self, frames: int, device: torch.device) -> torch.Tensor:
        """(T·P, T·P) bool: different parts of one frame, or one part in different frames."""
        idx = torch.arange(frames * self.parts, device=device)
        frame, part = idx // self.parts, idx % self.parts
        same_frame = frame[:, None] == frame[None, :]
        same_part = part[:, None] == part[None, :]
        return (same_frame & ~same_part) | (~same_frame & same_part)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, self.name, rank=5 if self.video else 4)
        b, c = x.shape[:2]
        h, w = x.shape[-2:]
        frames = x.shape[2] if self.video else 1
        flat = x.reshape(b, c, frames * h, w)  # (B, C, T·H, W)
        maps = torch.sigmoid(self.part_norm(self.part_conv(flat)))  # (B, P, T·H, W)
        maps = maps.reshape(b, self.parts, frames, h * w)  # (B, P, T, N)
        feats = x.reshape(b, c, frames, h * w)  # (B, C, T, N)
        part_feats = torch.einsum("bptn,bctn->bctp", maps, feats)  # (B, C, T, P): Σ_i a_p(i) x_i
        nodes = part_feats.reshape(b, c, frames * self.parts, 1)  # (B, C, T·P, 1), frame-major
        glob = x.mean(dim=tuple(range(2, x.dim()))).reshape(b, c, 1, 1)  # (B, C, 1, 1)
        reduced = self.reduce(torch.cat((nodes, glob), dim=2))  # (B, C', T·P + 1, 1)
        nodes, glob = reduced[:, :, :-1], reduced[:, :, -1:]  # (B, C', M, 1), (B, C', 1, 1)
        m = nodes.shape[2]
        diff = (nodes - nodes.transpose(2, 3)).abs()  # (B, C', M, M): |x̂_p − x̂_q|
        edge_in = torch.cat((diff, glob.expand(-1, -1, m, m)), dim=1)  # (B, 2C', M, M)
        logits = self.edge_norm(self.edge_conv(edge_in))[:, 0]  # (B, M, M)
        allowed = self._allowed_edges(frames, x.device)
        logits = logits.masked_fill(~allowed, mask_fill_value(logits.dtype))
        adjacency = softmax_fp32(logits, dim=-1)  # (B, M, M), rows sum to 1 over neighbours
        neighbours = torch.einsum("bpq,bcq->bcp", adjacency, nodes[..., 0]).unsqueeze(-1)
        updated = torch.relu(
            self.update_norm(self.update_conv(torch.cat((nodes, neighbours), dim=1)))
        )  # (B, C', M, 1)
        per_frame = updated.reshape(b, updated.shape[1], frames, self.parts).mean(
            dim=3
        )  # (B, C', T)
        agg = torch.cat((per_frame, glob[..., 0].expand(-1, -1, frames)), dim=1)  # (B, 2C', T)
        out = self.out_norm(self.out_conv(agg.unsqueeze(-1)))  # (B, C, T, 1)
        if self.record_maps:
            part_maps = maps.reshape(b, self.parts, frames, h, w)  # (B, P, T, H, W)
            if not self.video:
                part_maps = part_maps[:, :, 0]  # (B, P, H, W)
            self._record("parts", part_maps)
            strongest = maps.amax(dim=1).mean(dim=1)  # (B, N): max over parts, mean over frames
            self._record("spatial", strongest.reshape(b, 1, h, w))
        if self.video:
            return x + out.unsqueeze(-1)  # (B, C, T, 1, 1) broadcast over H, W
        return x + out  # (B, C, 1, 1) broadcast over H, W


@register(
    "siau",
    options=_SIAU_OPTIONS,
    category="spatial",
    no_grad_params=_EDGE_BIAS,
    maps=("spatial",),
    memory="O(B·P²·C): a graph over P parts",
    **_IAU_INFO,
)
class SIAU(_SIAU):
    """SIAU: P soft part maps, a part graph with a global node, aggregate added everywhere."""


@register(
    "siau3d",
    options=_SIAU_OPTIONS,
    category="spatial",
    no_grad_params=_EDGE_BIAS,
    maps=("spatial",),
    memory="O(B·(T·P)²·C): a graph over the T·P parts of a clip",
    inputs=video_inputs,
    **_IAU_INFO,
)
class SIAU3d(_SIAU):
    """STIAU: the SIAU graph over the parts of every frame (spatial + temporal edges)."""

    video = True
    name = "SIAU3d"
