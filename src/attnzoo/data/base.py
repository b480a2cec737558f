"""The in-memory dataset every loader returns: whole splits as tensors.

Images are stored as ``uint8`` (N, C, H, W) so that a dataset the size of CIFAR fits on a
device many times over; maps and masks travel with them and are transformed jointly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from attnzoo.errors import DataError

IGNORE_INDEX = 255  # mask value excluded from the segmentation loss and mIoU


@dataclass
class TensorData:
    """One split of a dataset, held as tensors.

    - ``images``: (N, C, H, W) uint8.
    - ``labels``: (N,) int64 class of each image.
    - ``maps``: optional (N, 1, H, W) importance maps, uint8 (0..255) or float (>= 0).
    - ``has_map``: optional (N,) bool, False where an image has no map (its loss is masked).
    - ``masks``: optional (N, H, W) uint8 segmentation labels (0 = background,
      ``IGNORE_INDEX`` = ignored).
    - ``mean`` / ``std``: per-channel statistics in [0, 1] units used to normalise batches.
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str] = field(default_factory=list)
    maps: torch.Tensor | None = None
    has_map: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    num_mask_classes: int | None = None

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dim() != 4 or self.images.dtype != torch.uint8:
            raise ValueError(
                f"{self.name}: images must be a (N, C, H, W) uint8 tensor, got "
                f"{self.images.dtype} of shape {tuple(self.images.shape)}"
            )
        if tuple(self.labels.shape) != (n,):
            raise ValueError(
                f"{self.name}: expected {n} labels, got shape {tuple(self.labels.shape)}"
            )
        size = tuple(self.images.shape[-2:])
        if self.maps is not None and (
            self.maps.dim() != 4 or self.maps.shape[0] != n or tuple(self.maps.shape[-2:]) != size
        ):
            raise ValueError(
                f"{self.name}: maps must be (N, 1, H, W) = ({n}, 1, {size[0]}, {size[1]}), "
                f"got {tuple(self.maps.shape)}"
            )
        if self.maps is not None and self.maps.is_floating_point():
            finite = torch.isfinite(self.maps).flatten(1).all(1)  # (N,)
            if self.has_map is not None:  # a placeholder without a map may be anything
                finite |= ~self.has_map.bool()
            if not bool(finite.all()):
                bad = torch.nonzero(~finite).flatten().tolist()
                raise DataError(
                    f"{self.name}: the importance maps of image(s) {bad[:5]}"
                    f"{' ...' if len(bad) > 5 else ''} hold NaN/inf values; maps must be finite"
                )
        if self.maps is not None and self.has_map is None:
            self.has_map = torch.ones(n, dtype=torch.bool)
        if self.masks is not None and tuple(self.masks.shape) != (n, *size):
            raise ValueError(
                f"{self.name}: masks must be (N, H, W) = ({n}, {size[0]}, {size[1]}), "
                f"got {tuple(self.masks.shape)}"
            )
        if not self.classes:
            self.classes = [str(i) for i in range(self.num_classes)]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    def subset(self, count: int) -> TensorData:
        """The first ``count`` examples (for quick runs and tests)."""
        count = min(count, len(self))

        def cut(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[:count]

        images = self.images[:count]
        labels = self.labels[:count]
        return TensorData(
            images=images,
            labels=labels,
            num_classes=self.num_classes,
            name=self.name,
            mean=self.mean,
            std=self.std,
            classes=list(self.classes),
            maps=cut(self.maps),
            has_map=cut(self.has_map),
            masks=cut(self.masks),
            num_mask_classes=self.num_mask_classes,
        )


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, C, H, W), in [0, 1] units."""
    x = images.to(torch.float64).div_(255).transpose(0, 1).reshape(images.shape[1], -1)
    return tuple(x.mean(1).tolist()), tuple(x.std(1).clamp_min(1e-3).tolist())
