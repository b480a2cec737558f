"""Joint batch transforms: the same crop, flip and resize for image, map and mask.

A transform acts on a whole batch on the device: ``transform(batch, generator) -> batch``,
where ``batch`` is a dict with ``image`` (B, C, H, W) and optionally ``map`` (B, 1, H, W) and
``mask`` (B, H, W). Random parameters are drawn once per example from ``generator`` and applied
to every entry, so the map and mask stay aligned with the image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Batch = dict[str, torch.Tensor]
Transform = Callable[[Batch, torch.Generator | None], Batch]
SPATIAL_KEYS = ("image", "map", "mask")


def _uniform_int(high: int, count: int, generator: torch.Generator | None, device: torch.device):
    return torch.randint(high, (count,), generator=generator, device=device)


def _crop(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: tuple[int, int]):
    """Per-example crops of ``x`` (B, C, H, W) at (top, left), all of ``size``."""
    b = x.shape[0]
    rows = top[:, None] + torch.arange(size[0], device=x.device)  # (B, h)
    cols = left[:, None] + torch.arange(size[1], device=x.device)  # (B, w)
    batch_index = torch.arange(b, device=x.device)[:, None, None]
    cropped = x.permute(0, 2, 3, 1)[batch_index, rows[:, :, None], cols[:, None, :]]  # (B,h,w,C)
    return cropped.permute(0, 3, 1, 2)  # (B, C, h, w)


class RandomCrop:
    """Pad by ``padding`` (zeros; mask pads with the ignore value) and crop ``size`` at random."""

    def __init__(self, size: int | tuple[int, int], padding: int = 0, ignore_index: int = 255):
        self.size: tuple[int, int] = (size, size) if isinstance(size, int) else (size[0], size[1])
        self.padding = padding
        self.ignore_index = ignore_index

    def __call__(self, batch: Batch, generator: torch.Generator | None = None) -> Batch:
        image = batch["image"]
        b, device = image.shape[0], image.device
        height, width = image.shape[-2] + 2 * self.padding, image.shape[-1] + 2 * self.padding
        if self.size[0] > height or self.size[1] > width:
            raise ValueError(
                f"RandomCrop: crop {self.size} is larger than the padded image {(height, width)}"
            )
        top = _uniform_int(height - self.size[0] + 1, b, generator, device)
        left = _uniform_int(width - self.size[1] + 1, b, generator, device)
        out = dict(batch)
        for key in SPATIAL_KEYS:
            if key not in batch:
                continue
            value = batch[key]
            x = value[:, None] if key == "mask" else value
            fill = self.ignore_index if key == "mask" else 0
            p = self.padding
            x = F.pad(x, (p, p, p, p), value=fill) if p else x
            cropped = _crop(x, top, left, self.size)
            out[key] = cropped[:, 0] if key == "mask" else cropped
        return out


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``, the same examples in every entry."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, batch: Batch, generator: torch.Generator | None = None) -> Batch:
        image = batch["image"]
        flip = torch.rand(image.shape[0], generator=generator, device=image.device) < self.p
        out = dict(batch)
        for key in SPATIAL_KEYS:
            if key in batch:
                value = batch[key]
                where = flip.view(-1, *([1] * (value.dim() - 1)))
                out[key] = torch.where(where, value.flip(-1), value)
        return out


class Resize:
    """Resize to ``size``: bilinear for image and map, nearest for the mask."""

    def __init__(self, size: int | tuple[int, int]) -> None:
        self.size: tuple[int, int] = (size, size) if isinstance(size, int) else (size[0], size[1])

    def __call__(self, batch: Batch, generator: torch.Generator | None = None) -> Batch:
        out = dict(batch)
        for key in SPATIAL_KEYS:
            if key not in batch:
                continue
            value = batch[key]
            if tuple(value.shape[-2:]) == self.size:
                continue
            if key == "mask":
                resized = F.interpolate(value[:, None].float(), size=self.size, mode="nearest")
                out[key] = resized[:, 0].to(value.dtype)
            else:
                dtype = value.dtype
                resized = F.interpolate(
                    value.float(), size=self.size, mode="bilinear", align_corners=False
                )
                if not dtype.is_floating_point:
                    resized = resized.round_().clamp_(0, torch.iinfo(dtype).max)
                out[key] = resized.to(dtype)
        return out


class Compose:
    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, batch: Batch, generator: torch.Generator | None = None) -> Batch:
        for transform in self.transforms:
            batch = transform(batch, generator)
        return batch


def standard_augmentation(image_size: tuple[int, int], padding: int | None = None) -> Compose:
    """Pad-and-crop (1/8 of the side, 4 px at 32) and horizontal flip, as CIFAR ResNets train."""
    pad = max(1, image_size[0] // 8) if padding is None else padding
    return Compose([RandomCrop(image_size, padding=pad), RandomHorizontalFlip()])
