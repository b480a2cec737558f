"""A device-resident loader: the whole split lives on the device, no worker processes.

Batches are slices of one permutation of the split; augmentation runs on the device on whole
batches; images are converted to float and normalised there. Randomness is a pure function of
``(seed, epoch, step)``: the epoch's permutation comes from a generator seeded with
``(seed, epoch)`` and each step's augmentation from one seeded with ``(seed, epoch, step)``, so a
resumed run only needs ``(epoch, step)`` to see exactly the batches it would have seen, and
every rank of a distributed run agrees on the global batch without communicating.

Under DDP each rank takes its contiguous share of every global batch (``batch_size`` is the
global batch, which must divide by the world size): the ranks together see exactly the batch a
single process would.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from attnzoo.data.base import TensorData
from attnzoo.data.transforms import Batch, Transform


def _seed(*parts: int) -> int:
    """A 63-bit seed mixing the parts (splitmix64-style), stable across runs and platforms."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value ^ (part + 0x9E3779B97F4A7C15 + (value << 6) + (value >> 2))) & (2**64 - 1)
        value = (value * 0xBF58476D1CE4E5B9) & (2**64 - 1)
        value ^= value >> 31
    return value & (2**63 - 1)


class DeviceLoader:
    """Iterate over ``data`` in batches of dicts: image (normalised float), label, map, mask.

    ``shuffle``/``drop_last`` are for training; evaluation covers every example once (the last
    batch may be short). ``rank``/``world_size`` shard each global batch.
    """

    def __init__(
        self,
        data: TensorData,
        batch_size: int,
        device: torch.device | str = "cpu",
        shuffle: bool = False,
        drop_last: bool = False,
        transform: Transform | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if batch_size % world_size:
            raise ValueError(
                f"the global batch size {batch_size} must divide by the number of processes "
                f"{world_size}"
            )
        if drop_last and batch_size > len(data):
            raise ValueError(
                f"batch size {batch_size} exceeds the {len(data)} examples of {data.name}; "
                "lower --batch-size (or use more data)"
            )
        self.data = data
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.transform = transform
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.channels_last = channels_last
        self.epoch = 0
        # The whole split on the device, in its storage dtypes.
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        self.maps = None if data.maps is None else data.maps.to(self.device)
        self.has_map = None if data.has_map is None else data.has_map.to(self.device)
        self.masks = None if data.masks is None else data.masks.to(self.device)
        self.mean = torch.tensor(data.mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(data.std, device=self.device).view(1, -1, 1, 1)

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> torch.Tensor:
        """The epoch's order of examples (a permutation when shuffling)."""
        n = len(self.data)
        if not self.shuffle:
            return torch.arange(n, device=self.device)
        generator = torch.Generator().manual_seed(_seed(self.seed, self.epoch))
        return torch.randperm(n, generator=generator).to(self.device)

    def batch(self, indices: torch.Tensor, step: int) -> Batch:
        """Gather, augment and normalise the examples at ``indices``."""
        batch: Batch = {"image": self.images[indices], "label": self.labels[indices]}
        if self.maps is not None and self.has_map is not None:
            batch["map"] = self.maps[indices]
            batch["has_map"] = self.has_map[indices]
        if self.masks is not None:
            batch["mask"] = self.masks[indices]
        if self.transform is not None:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(_seed(self.seed, self.epoch, step, 1))
            batch = self.transform(batch, generator)
        image = batch["image"].float().div_(255).sub_(self.mean).div_(self.std)
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        batch["image"] = image
        if "map" in batch:
            heat = batch["map"]
            batch["map"] = heat.float().div_(255) if heat.dtype == torch.uint8 else heat.float()
        if "mask" in batch:
            batch["mask"] = batch["mask"].long()
        return batch

    def __iter__(self) -> Iterator[Batch]:
        return self.iterate()

    def iterate(self, start_step: int = 0) -> Iterator[Batch]:
        """Batches of this rank from ``start_step`` on (resuming mid-epoch skips the rest)."""
        order = self.order()
        per_rank = self.batch_size // self.world_size
        for step in range(start_step, len(self)):
            global_indices = order[step * self.batch_size : (step + 1) * self.batch_size]
            if len(global_indices) == self.batch_size:
                start, count = self.rank * per_rank, per_rank
            else:
                # The short last batch (evaluation): split it as evenly as possible.
                sizes = [len(part) for part in global_indices.tensor_split(self.world_size)]
                start, count = sum(sizes[: self.rank]), sizes[self.rank]
            if count == 0:
                continue
            if self.transform is not None and self.world_size > 1:
                # Augmentation parameters are drawn for the whole global batch, so that a
                # rank's examples get exactly what a single process would have given them.
                batch = self.batch(global_indices, step)
                yield {k: v[start : start + count] for k, v in batch.items()}
            else:
                yield self.batch(global_indices[start : start + count], step)
