"""Supervising attention maps with human feature-importance maps (the GALA / ClickMe loss).

Linsley, Shiebler, Eberhardt, Serre, "Learning what and where to attend", ICLR 2019,
arXiv:1805.08819; official code https://github.com/serre-lab/gala_tpu (``resnet_main.py``).

For every attention layer l that exposes a spatial map a_l (B, 1, H_l, W_l)::

    ĥ_l = normalise(resize_bilinear(blur(h), H_l × W_l))     per example
    â_l = normalise(a_l)                                      per example
    d_l = ½ Σ_pixels (ĥ_l − â_l)²                             zero where has_map is False
    L_map = λ · mean_l reduce_batch(d_l)

and the training loss is ``cross_entropy + L_map``. GALA's spatial map is already the collapsed
mask mean_c(A²); a map with more than one channel (e.g. GALA's ``"mask"``) is collapsed the
same way here, as the official code does.

Options (defaults = the paper's form; the official code's choice in brackets):
- ``normalise="l2"``: unit L2 norm per example (paper). ``"sqrt_sum"`` divides by √Σx (code).
- ``reduction="mean"``: sum over pixels, mean over the examples that have a map (an example
  without a map neither adds to the loss nor changes its scale; a batch without any map gives
  0). ``"sum"``: sum over pixels and batch (code; ``tf.nn.l2_loss`` over the batch).
- ``weight`` = λ, default 1.0. The official code multiplies the layer mean by 1 (an earlier
  revision by 1/20) on top of the batch sum; with ``reduction="mean"`` the scale per example
  is the same as the code's at batch size 1.
- ``blur_sigma``: None (no blur, default), a σ in pixels of the target, or ``"official"``:
  the code's Gaussian (kernel 49, σ 28 at 224 px) scaled to the target's size, i.e.
  σ = 28·H/224 and kernel = the odd size nearest 49·H/224 (per axis). The kernel is a
  normalised, truncated Gaussian applied with zero padding (the code convolves with 'SAME'
  zero padding; its kernel is scipy's ``gaussian_filter`` of a 49×49 impulse, which for
  σ > 24 also folds the tails back in by reflection, a small difference we do not copy).
- ``align_corners``: False (PyTorch's default); the code resizes with ``align_corners=True``.

Recording must be on when the model's maps are collected: call ``attnzoo.record_maps(model)``
once before training (the maps of the last forward pass stay alive until the next one) or
wrap the forward and the loss in ``with attnzoo.recording_maps(model): ...``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from attnzoo.layers import RecordsMaps, collect_maps
from attnzoo.registry import list_modules, module_info

__all__ = [
    "ImportanceMapLoss",
    "collect_spatial_maps",
    "gaussian_blur",
    "importance_map_loss",
    "official_blur",
    "spatial_map_modules",
]

MapsLike = nn.Module | Mapping[str, torch.Tensor] | Sequence[torch.Tensor] | torch.Tensor

NORMALISATIONS = ("l2", "sqrt_sum")
REDUCTIONS = ("mean", "sum")


def _spatial_classes() -> dict[type[nn.Module], str]:
    """Registered module classes that record a spatial map, mapped to their registry name."""
    classes: dict[type[nn.Module], str] = {}
    for name in list_modules():
        info = module_info(name)
        if "spatial" in info.maps:
            classes[info.cls] = name
    return classes


def spatial_map_modules(model: nn.Module) -> dict[str, str]:
    """Submodules of ``model`` that expose a spatial map: qualified name -> registry name."""
    classes = _spatial_classes()
    return {
        qualified: classes[type(module)]
        for qualified, module in model.named_modules()
        if type(module) in classes
    }


def collect_spatial_maps(model: nn.Module) -> dict[str, torch.Tensor]:
    """The spatial maps recorded in ``model``'s last forward pass, by submodule name.

    Raises ValueError if the model has no module that exposes a spatial map, or if none was
    recorded (recording off, or no forward pass since it was switched on).
    """
    maps = collect_maps(model, "spatial")
    if maps:
        return maps
    capable = spatial_map_modules(model)
    if not capable:
        known = ", ".join(sorted(set(_spatial_classes().values())))
        raise ValueError(
            f"{type(model).__name__} contains no attention module that exposes a spatial map; "
            f"attach one of: {known}"
        )
    off = [
        name
        for name, module in model.named_modules()
        if name in capable and isinstance(module, RecordsMaps) and not module.record_maps
    ]
    if off:
        raise ValueError(
            f"map recording is off in {len(off)} attention module(s) (e.g. {off[0]!r}): call "
            "attnzoo.record_maps(model) before the forward pass, or run the forward pass and "
            "the loss inside `with attnzoo.recording_maps(model):`"
        )
    raise ValueError(
        "recording is on but no spatial map was recorded: run a forward pass of the model "
        "before computing the loss"
    )


def _odd(size: float) -> int:
    n = max(1, round(size))
    return n if n % 2 == 1 else n + 1


def official_blur(
    height: int, width: int | None = None
) -> tuple[tuple[float, float], tuple[int, int]]:
    """The official code's blur (kernel 49, σ 28 at 224 px) scaled to an H×W map.

    Returns ``((sigma_y, sigma_x), (kernel_y, kernel_x))``.
    """
    width = height if width is None else width
    sigmas = (28.0 * height / 224.0, 28.0 * width / 224.0)
    kernels = (_odd(49.0 * height / 224.0), _odd(49.0 * width / 224.0))
    return sigmas, kernels


def _gaussian_1d(sigma: float, size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return (kernel / kernel.sum()).to(dtype=dtype, device=device)


def gaussian_blur(
    maps: torch.Tensor,
    sigma: float | tuple[float, float],
    kernel_size: int | tuple[int, int] | None = None,
) -> torch.Tensor:
    """Blur (B, 1, H, W) maps with a normalised Gaussian, zero padding, same output size.

    ``kernel_size`` defaults to the official code's ratio (49 / 28 = 1.75 σ), made odd.
    """
    if maps.dim() != 4:
        raise ValueError(f"gaussian_blur expects (B, C, H, W) maps, got shape {tuple(maps.shape)}")
    sigma_y, sigma_x = (sigma, sigma) if isinstance(sigma, (int, float)) else sigma
    if sigma_y <= 0 or sigma_x <= 0:
        raise ValueError(f"blur sigma must be > 0, got {sigma}")
    if kernel_size is None:
        kernel_size = (_odd(1.75 * sigma_y), _odd(1.75 * sigma_x))
    k_y, k_x = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    if k_y % 2 == 0 or k_x % 2 == 0 or k_y < 1 or k_x < 1:
        raise ValueError(f"blur kernel size must be odd and >= 1, got {kernel_size}")
    channels = maps.shape[1]
    row = _gaussian_1d(sigma_y, k_y, maps.dtype, maps.device).view(1, 1, k_y, 1)
    col = _gaussian_1d(sigma_x, k_x, maps.dtype, maps.device).view(1, 1, 1, k_x)
    out = F.conv2d(maps, row.expand(channels, 1, k_y, 1), padding=(k_y // 2, 0), groups=channels)
    return F.conv2d(out, col.expand(channels, 1, 1, k_x), padding=(0, k_x // 2), groups=channels)


def _as_map_list(maps: MapsLike) -> list[torch.Tensor]:
    if isinstance(maps, nn.Module):
        return list(collect_spatial_maps(maps).values())
    if isinstance(maps, torch.Tensor):
        return [maps]
    if isinstance(maps, Mapping):
        return list(maps.values())
    return list(maps)


def _check_map(value: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    """(B, H, W) or (B, C, H, W) -> (B, 1, H, W) float; C > 1 collapses to mean_c(x²)."""
    if value.dim() == 3:
        value = value.unsqueeze(1)  # (B, 1, H, W)
    if value.dim() != 4:
        raise ValueError(
            f"{what} must be (B, 1, H, W) or (B, H, W), got shape {tuple(value.shape)}"
        )
    if value.shape[0] != batch:
        raise ValueError(
            f"{what} has batch size {value.shape[0]}, the importance maps have {batch}"
        )
    value = value.float() if value.dtype in (torch.float16, torch.bfloat16) else value
    if value.shape[1] > 1:
        value = value.square().mean(dim=1, keepdim=True)  # (B, 1, H, W), as the code
    return value


def _normalise(maps: torch.Tensor, how: str, eps: float) -> torch.Tensor:
    """Per-example normalisation of (B, 1, H, W) maps."""
    if how == "l2":
        norm = maps.square().sum(dim=(1, 2, 3), keepdim=True).sqrt()  # (B, 1, 1, 1)
        return maps / norm.clamp_min(eps)
    total = maps.sum(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return maps / total.clamp_min(eps).sqrt()


def importance_map_loss(
    maps: MapsLike,
    target_maps: torch.Tensor,
    has_map: torch.Tensor | None = None,
    *,
    weight: float = 1.0,
    normalise: str = "l2",
    reduction: str = "mean",
    blur_sigma: float | str | None = None,
    blur_kernel: int | None = None,
    align_corners: bool = False,
    eps: float = 1e-12,
) -> torch.Tensor:
    """λ · mean over layers of ½ Σ (ĥ − â_l)² between attention maps and importance maps.

    ``maps``: a model (its recorded spatial maps are collected; recording must be on, see the
    module docstring), a dict or list of (B, 1, H_l, W_l) maps, or one map. ``target_maps``:
    (B, 1, H, W) or (B, H, W) non-negative importance maps. ``has_map``: (B,) bool, False for
    examples without a map (their target is ignored entirely); None means all have one.
    Returns a scalar tensor (float32 or float64) that back-propagates into the maps.
    """
    if normalise not in NORMALISATIONS:
        raise ValueError(f"normalise must be one of {NORMALISATIONS}, got {normalise!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if target_maps.dim() not in (3, 4):
        raise ValueError(
            f"importance maps must be (B, 1, H, W) or (B, H, W), got {tuple(target_maps.shape)}"
        )
    if target_maps.dim() == 4 and target_maps.shape[1] != 1:
        raise ValueError(
            f"importance maps must have one channel, got shape {tuple(target_maps.shape)}"
        )
    batch = target_maps.shape[0]
    target = _check_map(target_maps, batch, "importance maps")
    layers = [_check_map(m, batch, f"attention map {i}") for i, m in enumerate(_as_map_list(maps))]
    if not layers:
        raise ValueError("no attention maps given: the list or dict of maps is empty")

    if has_map is None:
        has_map = torch.ones(batch, dtype=torch.bool, device=target.device)
    if has_map.shape != (batch,):
        raise ValueError(f"has_map must have shape ({batch},), got {tuple(has_map.shape)}")
    present = has_map.to(device=target.device, dtype=torch.bool)
    # Examples without a map may carry any placeholder (even NaN): zero them before use.
    target = torch.where(present.view(-1, 1, 1, 1), target, torch.zeros_like(target))
    finite = torch.isfinite(target).flatten(1).all(1)  # (B,)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten().tolist()
        raise ValueError(
            f"importance maps of batch index(es) {bad[:5]} hold NaN/inf values; maps must be "
            "finite (or mark those examples has_map=False)"
        )

    if blur_sigma is not None:
        if blur_sigma == "official":
            sigmas, kernels = official_blur(target.shape[-2], target.shape[-1])
            target = gaussian_blur(target, sigmas, kernels)
        elif isinstance(blur_sigma, str):
            raise ValueError(f"blur_sigma must be None, a number or 'official', got {blur_sigma!r}")
        else:
            target = gaussian_blur(target, float(blur_sigma), blur_kernel)

    count = present.sum().clamp_min(1)
    resized: dict[tuple[int, int], torch.Tensor] = {}
    distances = []
    for layer in layers:
        size = (layer.shape[-2], layer.shape[-1])
        if size not in resized:
            scaled = target
            if size != tuple(target.shape[-2:]):
                scaled = F.interpolate(
                    target, size=size, mode="bilinear", align_corners=align_corners
                )
            resized[size] = _normalise(scaled, normalise, eps)  # (B, 1, H_l, W_l)
        human = resized[size].to(layer.dtype)
        model = _normalise(layer, normalise, eps)
        per_example = 0.5 * (human - model).square().sum(dim=(1, 2, 3))  # (B,)
        per_example = torch.where(present, per_example, torch.zeros_like(per_example))
        total = per_example.sum()
        distances.append(total / count if reduction == "mean" else total)
    return weight * torch.stack(distances).mean()


class ImportanceMapLoss(nn.Module):
    """:func:`importance_map_loss` with its options fixed: ``loss(model, maps, has_map)``."""

    def __init__(
        self,
        weight: float = 1.0,
        normalise: str = "l2",
        reduction: str = "mean",
        blur_sigma: float | str | None = None,
        blur_kernel: int | None = None,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        if normalise not in NORMALISATIONS:
            raise ValueError(f"normalise must be one of {NORMALISATIONS}, got {normalise!r}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        if not (blur_sigma is None or blur_sigma == "official" or not isinstance(blur_sigma, str)):
            raise ValueError(f"blur_sigma must be None, a number or 'official', got {blur_sigma!r}")
        if isinstance(blur_sigma, (int, float)) and not math.isfinite(blur_sigma):
            raise ValueError(f"blur_sigma must be finite, got {blur_sigma}")
        self.weight = weight
        self.normalise = normalise
        self.reduction = reduction
        self.blur_sigma = blur_sigma
        self.blur_kernel = blur_kernel
        self.align_corners = align_corners

    def forward(
        self, maps: MapsLike, target_maps: torch.Tensor, has_map: torch.Tensor | None = None
    ) -> torch.Tensor:
        return importance_map_loss(
            maps,
            target_maps,
            has_map,
            weight=self.weight,
            normalise=self.normalise,
            reduction=self.reduction,
            blur_sigma=self.blur_sigma,
            blur_kernel=self.blur_kernel,
            align_corners=self.align_corners,
        )

    def extra_repr(self) -> str:
        return (
            f"weight={self.weight}, normalise={self.normalise}, reduction={self.reduction}, "
            f"blur_sigma={self.blur_sigma}, align_corners={self.align_corners}"
        )
