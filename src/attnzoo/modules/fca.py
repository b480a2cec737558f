"""Frequency Channel Attention (FcaNet).

Qin, Zhang, Wu, Li, "FcaNet: Frequency Channel Attention Networks", ICCV 2021,
arXiv:2012.11879. Official code: https://github.com/cfzd/FcaNet (``MultiSpectralAttentionLayer``).

SE with global average pooling replaced by 2-D DCT pooling. The C channels are split into K
equal groups; group k is pooled with the DCT basis of frequency (u_k, v_k) on an L_h x L_w grid:

    B(t, u, L)   = cos(π·u·(t + 1/2) / L) · (1/√L) · (√2 if u ≠ 0)     (orthonormal DCT-II)
    Freq_c       = Σ_{i,j} X_c[i, j] · B(i, u_k, L_h) · B(j, v_k, L_w)   (c in group k)
    s            = sigmoid(W2 · ReLU(W1 · Freq))                         W1: C -> C/16, no bias
    Y            = X · s

The frequency tables (top/low/bot, K ∈ {1, 2, 4, 8, 16, 32}) are the paper's, defined on a
7x7 grid; on a larger DCT grid the indices are multiplied by ``dct_size // 7`` (official code).
Inputs whose size differs from the DCT grid are adaptively average-pooled to it first. With the
default ``dct_size=7`` any input size works; the official networks use 56/28/14/7 per stage.

Differences from the official code:
- ``dct_norm``: the paper writes the basis without normalisation,
  ``cos(π·u·(i+1/2)/L_h)·cos(π·v·(j+1/2)/L_w)`` (``"none"``); the official code (and the
  spec) use the orthonormal DCT-II scaling above (``"ortho"``, the default). The two differ by
  a fixed per-group scale, which the following FC layer can absorb but which changes
  initial statistics.
- The FC layers have no bias, as in the official code (the paper does not say).
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from attnzoo.domains import RD_DIVISOR, RD_OPTIONS, Choice, IntTuple
from attnzoo.layers import RecordsMaps, check_input, reduced_channels
from attnzoo.registry import Divergence, register

# (u, v) frequency indices on a 7x7 grid, in the paper's order (first K are used).
# fmt: off
_TABLES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "top": (
        (0, 0, 6, 0, 0, 1, 1, 4, 5, 1, 3, 0, 0, 0, 3, 2, 4, 6, 3, 5, 5, 2, 6, 5, 5, 3, 3, 4, 2, 2, 6, 1),
        (0, 1, 0, 5, 2, 0, 2, 0, 0, 6, 0, 4, 6, 3, 5, 2, 6, 3, 3, 3, 5, 1, 1, 2, 4, 2, 1, 1, 3, 0, 5, 3),
    ),
    "low": (
        (0, 0, 1, 1, 0, 2, 2, 1, 2, 0, 3, 4, 0, 1, 3, 0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 6, 1, 2, 3, 4),
        (0, 1, 0, 1, 2, 0, 1, 2, 2, 3, 0, 0, 4, 3, 1, 5, 4, 3, 2, 1, 0, 6, 5, 4, 3, 2, 1, 0, 6, 5, 4, 3),
    ),
    "bot": (
        (6, 1, 3, 3, 2, 4, 1, 2, 4, 4, 5, 1, 4, 6, 2, 5, 6, 1, 6, 2, 2, 4, 3, 3, 5, 5, 6, 2, 5, 5, 3, 6),
        (6, 4, 4, 6, 6, 3, 1, 4, 4, 5, 6, 5, 2, 2, 5, 1, 4, 3, 5, 0, 3, 1, 1, 2, 4, 2, 1, 1, 5, 3, 3, 3),
    ),
}
# fmt: on
_COUNTS = (1, 2, 4, 8, 16, 32)
FREQUENCIES = tuple(f"{table}{count}" for table in _TABLES for count in _COUNTS)
_NORMS = ("ortho", "none")


def frequency_indices(selection: str) -> tuple[list[int], list[int]]:
    """The (u, v) lists on the 7x7 grid for a selection such as ``"top16"`` or ``"low4"``."""
    match = re.fullmatch(r"(top|low|bot)(\d+)", selection)
    if match is None or int(match.group(2)) not in _COUNTS:
        raise ValueError(
            f"frequencies must be top/low/bot followed by one of {_COUNTS} (e.g. 'top16'), "
            f"got {selection!r}"
        )
    u, v = _TABLES[match.group(1)]
    count = int(match.group(2))
    return list(u[:count]), list(v[:count])


def dct_basis(position: int, frequency: int, length: int, norm: str = "ortho") -> float:
    """One value of the 1-D DCT-II basis, ``cos(π·u·(t+1/2)/L)`` (times the ortho scale)."""
    value = math.cos(math.pi * frequency * (position + 0.5) / length)
    if norm == "ortho":
        value /= math.sqrt(length)
        if frequency != 0:
            value *= math.sqrt(2)
    return value


def dct_filters(
    channels: int, size: tuple[int, int], u: list[int], v: list[int], norm: str = "ortho"
) -> torch.Tensor:
    """The (C, L_h, L_w) pooling filters: channel group k uses frequency (u[k], v[k])."""
    height, width = size
    group = channels // len(u)
    filters = torch.zeros(channels, height, width, dtype=torch.float64)
    for k, (fu, fv) in enumerate(zip(u, v, strict=True)):
        rows = torch.tensor([dct_basis(t, fu, height, norm) for t in range(height)])
        cols = torch.tensor([dct_basis(t, fv, width, norm) for t in range(width)])
        filters[k * group : (k + 1) * group] = torch.outer(rows, cols)  # (L_h, L_w)
    return filters.float()


@register(
    "fca",
    options={
        **RD_OPTIONS,
        "rd_divisor": RD_DIVISOR,
        "frequencies": Choice(FREQUENCIES),
        "dct_size": IntTuple(7, length=2, scalar=True),
        "dct_norm": Choice(_NORMS),
    },
    paper="FcaNet: Frequency Channel Attention Networks",
    authors="Qin, Zhang, Wu, Li",
    year=2021,
    venue="ICCV",
    arxiv="2012.11879",
    code_url="https://github.com/cfzd/FcaNet",
    category="frequency",
    kind="gate",
    placement="block_end",
    divergences=(
        Divergence(
            "dct_norm",
            "ortho",
            "none",
            "ortho",
            "paper's DCT basis is unnormalised; official code uses orthonormal DCT-II scaling",
        ),
    ),
    maps=("channel",),
)
class FrequencyChannelAttention(nn.Module, RecordsMaps):
    """FcaNet gate: ``X * sigmoid(MLP(DCT-pool(X)))`` with K frequency groups."""

    dct_filter: torch.Tensor

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 16,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        frequencies: str = "top16",
        dct_size: int | tuple[int, int] = 7,
        dct_norm: str = "ortho",
    ) -> None:
        super().__init__()
        size = (dct_size, dct_size) if isinstance(dct_size, int) else tuple(dct_size)
        if len(size) != 2 or min(size) < 7:
            raise ValueError(
                f"dct_size must be an int or (h, w) of at least 7 (the frequency tables are "
                f"defined on a 7x7 grid), got {dct_size}"
            )
        if dct_norm not in _NORMS:
            raise ValueError(f"dct_norm must be one of {_NORMS}, got {dct_norm!r}")
        u, v = frequency_indices(frequencies)
        if channels % len(u) != 0:
            raise ValueError(
                f"FcaNet splits channels into {len(u)} frequency groups ({frequencies}): "
                f"channels must be divisible by {len(u)}, got {channels}"
            )
        self.channels = channels
        self.dct_size = (int(size[0]), int(size[1]))
        # the tables live on a 7x7 grid; larger grids scale the indices (official code)
        u = [f * (self.dct_size[0] // 7) for f in u]
        v = [f * (self.dct_size[1] // 7) for f in v]
        self.register_buffer(
            "dct_filter", dct_filters(channels, self.dct_size, u, v, dct_norm), persistent=False
        )
        hidden = reduced_channels(channels, rd_ratio, rd_channels, rd_divisor)
        self.fc1 = nn.Linear(channels, hidden, bias=False)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, "FcaNet")
        pooled = x
        if tuple(x.shape[-2:]) != self.dct_size:
            pooled = F.adaptive_avg_pool2d(x, self.dct_size)  # (B, C, L_h, L_w)
        filters = self.dct_filter.to(pooled.dtype)
        frequency = (pooled * filters).sum(dim=(2, 3))  # (B, C)
        gate = torch.sigmoid(self.fc2(self.act(self.fc1(frequency))))  # (B, C)
        gate = gate.reshape(x.shape[0], self.channels, 1, 1)  # (B, C, 1, 1)
        self._record("channel", gate)
        return x * gate
