"""Datasets as tensors, joint image+map+mask transforms, and a device-resident loader.

``load_dataset(name, split, root, **options)`` knows:

- ``synthetic``: the embedded cluttered "find the target" data (no files needed);
  options: num_images, image_size, num_classes, clutter, object_size, fragment_size,
  channels, source ("shapes" or "fashion-mnist"), noise, seed.
- ``fashion-mnist``: IDX files (default: Debian's ``dataset-fashion-mnist`` location).
- ``cifar10`` / ``cifar100``: the official python pickle batches under ``root``.
- ``folder``: an ImageFolder tree under ``root``; options image_size, maps_root.

Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attnzoo.data.base import IGNORE_INDEX, TensorData, channel_stats
from attnzoo.data.cifar import load_cifar
from attnzoo.data.fashion_mnist import load_fashion_mnist
from attnzoo.data.folder import load_image_folder
from attnzoo.data.loader import DeviceLoader
from attnzoo.data.synthetic import make_synthetic
from attnzoo.data.transforms import (
    Compose,
    RandomCrop,
    RandomHorizontalFlip,
    Resize,
    standard_augmentation,
)

DATASETS = ("synthetic", "fashion-mnist", "cifar10", "cifar100", "folder")

__all__ = [
    "DATASETS",
    "IGNORE_INDEX",
    "Compose",
    "DeviceLoader",
    "RandomCrop",
    "RandomHorizontalFlip",
    "Resize",
    "TensorData",
    "channel_stats",
    "load_cifar",
    "load_dataset",
    "load_fashion_mnist",
    "load_image_folder",
    "make_synthetic",
    "standard_augmentation",
]


def load_dataset(
    name: str, split: str = "train", root: str | Path | None = None, **options: Any
) -> TensorData:
    """One split (``train`` or ``test``) of a dataset by name; see the module docstring."""
    if name == "synthetic":
        if split == "test":
            # The test split is a fifth of the training size unless given.
            count = options.pop("num_test", None)
            if count is None:
                count = max(1, options.get("num_images", 10_000) // 5)
            options["num_images"] = count
        else:
            options.pop("num_test", None)
        return make_synthetic(split=split, root=root, **options)
    if options.get("image_size") is not None and name != "folder":
        # Fixed-size datasets are resized on the device (Resize transform), not here.
        options = {k: v for k, v in options.items() if k != "image_size"}
    unknown = set(options) - ({"image_size", "maps_root"} if name == "folder" else set())
    if unknown:
        raise ValueError(f"dataset {name!r} takes no option(s) {', '.join(sorted(unknown))}")
    if name == "fashion-mnist":
        return load_fashion_mnist(root=root, split=split)
    if name in ("cifar10", "cifar100"):
        if root is None:
            raise ValueError(f"{name}: pass --data-root, the folder of the python batches")
        return load_cifar(root, num_classes=int(name[5:]), split=split)
    if name == "folder":
        if root is None:
            raise ValueError("folder: pass --data-root, the ImageFolder tree")
        return load_image_folder(root, split=split, **options)
    raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
