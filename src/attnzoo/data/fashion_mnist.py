"""Fashion-MNIST from its IDX files (Xiao, Rasul, Vollgraf, arXiv:1708.07747).

Files (optionally gzipped): ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``. Default location: where Debian's
``dataset-fashion-mnist`` package installs them. Nothing is downloaded.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from attnzoo.data.base import TensorData
from attnzoo.errors import DataError

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
HOW_TO_GET = (
    "install Debian's package (apt-get install dataset-fashion-mnist, files land in "
    f"{DEFAULT_ROOT}) or put the four IDX files from "
    "https://github.com/zalandoresearch/fashion-mnist under --data-root"
)
# Fashion-MNIST training-set statistics.
MEAN, STD = (0.2860,), (0.3530,)


def _find(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(
        f"Fashion-MNIST: missing {root / stem}[.gz] (an IDX file); {HOW_TO_GET}"
    )


def read_idx(path: str | Path, expected_dims: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes (magic 0x0000080N), gzipped or not."""
    path = Path(path)
    expected = f"an IDX file of uint8 with {expected_dims} dimension(s)"
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(
            f"{path}: cannot read it as {expected}, the file is corrupt ({error}); {HOW_TO_GET}"
        ) from None
    if len(raw) < 4 + 4 * expected_dims:
        raise DataError(f"{path}: truncated header; expected {expected}. {HOW_TO_GET}")
    zero, dtype_code, dims = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
    if zero != 0 or dtype_code != 0x08 or dims != expected_dims:
        raise DataError(
            f"{path}: bad magic {raw[:4].hex()}; expected 00000{8:x}0{expected_dims} "
            f"({expected}). {HOW_TO_GET}"
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    offset = 4 + 4 * dims
    count = int(np.prod(shape))
    if len(raw) - offset != count:
        raise DataError(
            f"{path}: header promises {count} bytes of data {shape}, file holds "
            f"{len(raw) - offset}; the file is truncated or corrupt. {HOW_TO_GET}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape)


def load_fashion_mnist(root: str | Path | None = None, split: str = "train") -> TensorData:
    """One split (``train`` or ``test``) as (N, 1, 28, 28) uint8 images and labels."""
    if split not in ("train", "test"):
        raise ValueError(f"Fashion-MNIST: split must be 'train' or 'test', got {split!r}")
    folder = Path(root) if root is not None else DEFAULT_ROOT
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(_find(folder, f"{prefix}-images-idx3-ubyte"), 3)
    labels = read_idx(_find(folder, f"{prefix}-labels-idx1-ubyte"), 1)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"Fashion-MNIST under {folder}: {images.shape[0]} images but {labels.shape[0]} "
            f"labels in the {split} split. {HOW_TO_GET}"
        )
    if labels.size and int(labels.max()) >= len(CLASSES):
        raise DataError(f"Fashion-MNIST under {folder}: label {int(labels.max())} out of 0..9")
    return TensorData(
        images=torch.from_numpy(images.copy())[:, None],
        labels=torch.from_numpy(labels.astype(np.int64)),
        num_classes=len(CLASSES),
        name="fashion-mnist",
        mean=MEAN,
        std=STD,
        classes=list(CLASSES),
    )
