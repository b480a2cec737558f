"""Gather-Excite (GE).

Hu, Shen, Albanie, Sun, Vedaldi, "Gather-Excite: Exploiting Feature Context in Convolutional
Neural Networks", NeurIPS 2018, arXiv:1810.12348.
Official code: https://github.com/hujie-frank/GENet (Caffe prototxts RN50-GEPF / GEP / GEPP,
consulted for the layer order of θ and θ⁺).

    Y = X · sigmoid(upsample_nearest(ξ_G(X)))          (excite: nearest upsample to H×W)

with the gather operator ξ_G of extent e ("global" or 2, 4, 8):

- θ⁻ (``variant="theta_minus"``, parameter-free): average pooling. Global: GAP. Extent e:
  kernel 2e−1, stride e, padding e−1, ``count_include_pad=False`` (output ⌈H/e⌉×⌈W/e⌉).
- θ (``variant="theta"``): global: a depthwise conv whose kernel covers the whole H×W map (so
  the module is bound to ``spatial_size`` given at construction), then BN. Extent e: log2(e)
  depthwise 3×3 stride-2 convs, each followed by BN, with ReLU between them.
- θ⁺ (``variant="theta_plus"``): θ's gather → ReLU → 1×1 C→C/16 (bias) → ReLU → 1×1 C/16→C
  (bias). The gather already ends with a BN, so this is the spec's "gather → BN → ReLU → MLP";
  the released RN50-GEPP prototxt has exactly gather/bn → gather/relu → 1x1_down → relu →
  1x1_up → sigmoid.

Default: ``variant="theta_minus"``, ``extent="global"``. Of the paper's forms it is the one
that is parameter-free and needs nothing at construction beyond ``channels`` (θ/θ⁺ global need
the feature-map size), so ``create("ge", C)`` works at any input size; pick θ/θ⁺ explicitly for
the learned gathers (θ⁺ is the paper's best: 21.88 vs 22.14 top-1 error on R50).

Recorded maps: ``"channel"`` (B, C, 1, 1) for the global extent, ``"mask"`` (B, C, H, W, the
upsampled gate) for local extents.

There is no paper-vs-code option: the prototxts agree with the paper. Convolution biases are
absent where a BN follows (as in the prototxts).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from attnzoo.domains import RD_OPTIONS, Choice, IntTuple
from attnzoo.layers import RecordsMaps, check_input, check_spatial_size, reduced_channels
from attnzoo.registry import register

VARIANTS = ("theta_minus", "theta", "theta_plus")
EXTENTS = ("global", 2, 4, 8)


@register(
    "ge",
    options={
        **RD_OPTIONS,
        "variant": Choice(VARIANTS),
        "extent": Choice(EXTENTS),
        "spatial_size": IntTuple(1, length=2, scalar=True, optional=True),
    },
    paper="Gather-Excite: Exploiting Feature Context in Convolutional Neural Networks",
    authors="Hu, Shen, Albanie, Sun, Vedaldi",
    year=2018,
    venue="NeurIPS",
    arxiv="1810.12348",
    code_url="https://github.com/hujie-frank/GENet",
    category="context",
    kind="gate",
    placement="block_end",
    maps=("mask",),
    example_options={"variant": "theta_plus", "extent": 4},
)
class GatherExcite(nn.Module, RecordsMaps):
    """GE gate: ``X * sigmoid(upsample(gather(X)))``, variants θ⁻ / θ / θ⁺, extent global/2/4/8."""

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 16,
        rd_channels: int | None = None,
        variant: str = "theta_minus",
        extent: int | str = "global",
        spatial_size: tuple[int, int] | int | None = None,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"GE variant must be one of {VARIANTS}, got {variant!r}")
        if extent not in EXTENTS or isinstance(extent, bool):
            raise ValueError(f"GE extent must be one of {EXTENTS}, got {extent!r}")
        self.channels = channels
        self.variant = variant
        self.extent = extent
        self.expected_size: tuple[int, int] | None = None
        self.gather: nn.Module | None = None
        self.mlp: nn.Module | None = None
        if spatial_size is not None and (variant == "theta_minus" or extent != "global"):
            raise ValueError(
                "GE spatial_size is only used by variant 'theta'/'theta_plus' with "
                f"extent='global', got variant={variant!r}, extent={extent!r}"
            )
        if variant == "theta_minus":
            return
        if extent == "global":
            if spatial_size is None:
                raise ValueError(
                    f"GE {variant} with extent='global' gathers with a depthwise conv covering "
                    "the whole feature map: give spatial_size=(H, W) at construction"
                )
            size = (spatial_size, spatial_size) if isinstance(spatial_size, int) else spatial_size
            self.expected_size = (int(size[0]), int(size[1]))
            self.gather = nn.Sequential(
                nn.Conv2d(channels, channels, self.expected_size, groups=channels, bias=False),
                nn.BatchNorm2d(channels),
            )
        else:
            layers: list[nn.Module] = []
            num_convs = int(math.log2(int(extent)))
            for i in range(num_convs):
                layers += [
                    nn.Conv2d(channels, channels, 3, 2, 1, groups=channels, bias=False),
                    nn.BatchNorm2d(channels),
                ]
                if i != num_convs - 1:
                    layers.append(nn.ReLU(inplace=True))
            self.gather = nn.Sequential(*layers)
        if variant == "theta_plus":
            hidden = reduced_channels(channels, rd_ratio, rd_channels)
            self.mlp = nn.Sequential(
                nn.ReLU(inplace=True),
                nn.Conv2d(channels, hidden, 1),
                nn.ReLU(inplace=True),
                nn.Conv2d(hidden, channels, 1),
            )

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        if self.gather is None:  # θ⁻: parameter-free average pooling
            if self.extent == "global":
                return x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
            e = int(self.extent)
            return F.avg_pool2d(x, 2 * e - 1, e, e - 1, count_include_pad=False)
        gathered = self.gather(x)  # (B, C, ⌈H/e⌉, ⌈W/e⌉) or (B, C, 1, 1)
        return gathered if self.mlp is None else self.mlp(gathered)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, "GE")
        if self.expected_size is not None:
            check_spatial_size(x, self.expected_size, f"GE {self.variant} (extent global)")
        gate = torch.sigmoid(self._gather(x))
        if self.extent == "global":
            self._record("channel", gate)
            return x * gate
        gate = F.interpolate(gate, size=x.shape[-2:], mode="nearest")  # (B, C, H, W)
        self._record("mask", gate)
        return x * gate
