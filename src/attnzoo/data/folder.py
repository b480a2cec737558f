"""ImageFolder trees with an optional parallel tree of importance maps (ClickMe-style).

Layout::

    ROOT/train/<class>/<name>.{png,jpg,jpeg,npy}    images; classes sorted by folder name
    ROOT/test/<class>/...
    MAPS/train/<class>/<name>.npy                   optional importance map per image

Images: PNG/JPEG decoded with Pillow (the optional extra ``attnzoo[images]``), or ``.npy``
arrays (H, W, 3) / (H, W) uint8, which need nothing beyond numpy. Maps: ``.npy`` float or
integer arrays (H, W), non-negative, one per image at the same relative path; an image without
a map gets ``has_map = False`` (the supervision loss is masked for it). Maps are kept as .npy,
not PNG, because human importance maps are real-valued and an 8-bit PNG would quantise them.
Every image is resized to ``image_size`` (bilinear, antialiased; maps bilinear too) so the split
is one tensor. Labels are indices of the sorted class names, so the splits must hold the same
class folders (else an error listing both), every class folder must hold an image, and maps
must be finite: each is checked when loading, never discovered after training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from attnzoo.data.base import TensorData, channel_stats
from attnzoo.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".npy")


def _read_image(path: Path) -> np.ndarray:
    expected = "an RGB/greyscale PNG or JPEG, or a (H, W[, 3]) uint8 .npy array"
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            raise DataError(f"{path}: cannot read it as {expected}: {_reason(error)}") from None
    else:
        try:
            from PIL import Image
        except ImportError:
            raise ValueError(
                f"{path}: decoding PNG/JPEG needs Pillow (pip install 'attnzoo[images]'), or "
                "store images as .npy arrays"
            ) from None
        try:
            with Image.open(path) as image:
                array = np.array(image.convert("RGB"))
        except (OSError, ValueError, EOFError) as error:
            raise DataError(f"{path}: cannot read it as {expected}: {_reason(error)}") from None
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise DataError(f"{path}: expected {expected}, got dtype {array.dtype} shape {array.shape}")
    return array


def _read_map(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise DataError(
            f"{path}: cannot read it as an importance map (a (H, W) numeric .npy array): "
            f"{_reason(error)}"
        ) from None
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number) or (array < 0).any():
        raise DataError(
            f"{path}: expected a non-negative (H, W) numeric importance map, got dtype "
            f"{array.dtype} shape {array.shape}"
        )
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise DataError(
            f"{path}: the importance map holds {bad} NaN/inf value(s); a map must be finite "
            "(fix or delete the file: an image without a map is simply not supervised)"
        )
    return array.astype(np.float32)


def _reason(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return "the file is empty" if isinstance(error, EOFError) else text


def _class_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _check_same_classes(root: Path, split: str, classes: list[str]) -> None:
    """Labels are class indices in sorted order: the splits must hold the same class folders,
    or a test image would be scored against another class's index."""
    other = "train" if split != "train" else "test"
    if split == "train" or not (root / other).is_dir():
        return
    reference = _class_folders(root / other)
    if reference != classes:
        only_here = sorted(set(classes) - set(reference))
        only_there = sorted(set(reference) - set(classes))
        raise DataError(
            f"image folder: {root / split} has classes {classes} but {root / other} has "
            f"{reference} (only in {split}: {only_here}; only in {other}: {only_there}); the "
            "splits must hold the same class folders, else labels would not match"
        )


def _resize(array: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(C, h, w) float -> (C, H, W), bilinear with antialiasing when shrinking."""
    if tuple(array.shape[-2:]) == size:
        return array
    resized = F.interpolate(
        array[None], size=size, mode="bilinear", align_corners=False, antialias=True
    )
    return resized[0]


def load_image_folder(
    root: str | Path,
    split: str = "train",
    image_size: int | tuple[int, int] = 64,
    maps_root: str | Path | None = None,
) -> TensorData:
    """Load ``root/split/<class>/*`` (and maps from ``maps_root/split/...``) into tensors."""
    folder = Path(root) / split
    if not folder.is_dir():
        raise FileNotFoundError(
            f"image folder: missing {folder}; expected {root}/{split}/<class>/<image> "
            "(ImageFolder layout; PNG/JPEG/.npy images)"
        )
    classes = _class_folders(folder)
    if not classes:
        raise DataError(f"image folder: {folder} has no class sub-folders")
    _check_same_classes(Path(root), split, classes)
    size = (
        (image_size, image_size) if isinstance(image_size, int) else (image_size[0], image_size[1])
    )
    images, labels, maps, has_map = [], [], [], []
    for label, name in enumerate(classes):
        files = [p for p in sorted((folder / name).iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise DataError(
                f"image folder: class folder {folder / name} has no {'/'.join(IMAGE_SUFFIXES)} "
                "images; add images or remove the folder (an empty class cannot be learned)"
            )
        for path in files:
            image = torch.from_numpy(_read_image(path)).permute(2, 0, 1).float()  # (3, h, w)
            images.append(_resize(image, size).round_().clamp_(0, 255).to(torch.uint8))
            labels.append(label)
            if maps_root is None:
                continue
            map_path = Path(maps_root) / split / name / (path.stem + ".npy")
            if map_path.is_file():
                heat = torch.from_numpy(_read_map(map_path))[None]  # (1, h, w)
                if tuple(heat.shape[-2:]) != tuple(image.shape[-2:]):
                    raise DataError(
                        f"{map_path}: map is {tuple(heat.shape[-2:])}, its image {path} is "
                        f"{tuple(image.shape[-2:])}; a map must have its image's size"
                    )
                maps.append(_resize(heat, size).clamp_(min=0))
                has_map.append(True)
            else:
                maps.append(torch.zeros(1, *size))
                has_map.append(False)
    stacked = torch.stack(images)  # (N, 3, H, W)
    mean, std = channel_stats(stacked)
    return TensorData(
        images=stacked,
        labels=torch.tensor(labels, dtype=torch.int64),
        num_classes=len(classes),
        name="folder",
        mean=mean,
        std=std,
        classes=classes,
        maps=torch.stack(maps) if maps_root is not None else None,
        has_map=torch.tensor(has_map) if maps_root is not None else None,
    )
