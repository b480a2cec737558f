"""CIFAR-10 / CIFAR-100 from the official "python version" pickle batches.

Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009;
https://www.cs.toronto.edu/~kriz/cifar.html. Layout: ``cifar-10-batches-py/`` with
``data_batch_1..5``, ``test_batch``, ``batches.meta``; ``cifar-100-python/`` with ``train``,
``test``, ``meta``. ``root`` may be that folder or its parent.

The batches are pickles. They are read with a restricted unpickler that can build only what the
format holds (dicts, lists, bytes, numpy arrays): any other object in the file is refused, so a
tampered file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnzoo.data.base import TensorData
from attnzoo.errors import DataError

HOW_TO_GET = (
    "download the python version from https://www.cs.toronto.edu/~kriz/cifar.html, unpack it "
    "and pass the folder as --data-root (nothing is downloaded for you)"
)
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol 2
}
STATS = {
    10: ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    100: ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")


def read_batch(path: Path) -> dict[str, Any]:
    """One CIFAR pickle as a dict with str keys, refusing anything but arrays and builtins."""
    if not path.is_file():
        raise FileNotFoundError(
            f"CIFAR: missing {path} (a CIFAR python pickle batch); {HOW_TO_GET}"
        )
    try:
        with open(path, "rb") as handle:
            content = _RestrictedUnpickler(handle, encoding="bytes").load()
    except Exception as error:
        raise DataError(
            f"{path}: not a valid CIFAR python pickle batch ({type(error).__name__}: {error}); "
            f"{HOW_TO_GET}"
        ) from None
    if not isinstance(content, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(content).__name__}")
    return {k.decode() if isinstance(k, bytes) else str(k): v for k, v in content.items()}


def _integer_labels(values: Any, path: Path, key: str) -> np.ndarray:
    """The labels as int64, refusing what a cast would silently change (2.5 -> 2, "3", NaN)."""
    try:
        array = np.asarray(values)
    except ValueError:
        array = np.asarray([], dtype=object)
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    if array.dtype.kind in "fb" and array.ndim == 1:
        if (
            array.dtype.kind == "f"
            and np.isfinite(array).all()
            and (array == np.round(array)).all()
        ):
            return array.astype(np.int64)
        bad = next(i for i, v in enumerate(array.tolist()) if not float(v).is_integer())
        raise DataError(
            f"{path}: {key!r} holds a non-integer class label {array[bad]!r} at index {bad}; "
            "CIFAR labels are whole numbers, the file is corrupt"
        )
    raise DataError(f"{path}: {key!r} must be a list of integer class labels, got {array.dtype}")


def _folder(root: Path, name: str) -> Path:
    return root if root.name == name or not (root / name).is_dir() else root / name


def load_cifar(root: str | Path, num_classes: int = 10, split: str = "train") -> TensorData:
    """One split of CIFAR-10 or CIFAR-100 as (N, 3, 32, 32) uint8 images."""
    if num_classes not in (10, 100):
        raise ValueError(f"CIFAR: num_classes must be 10 or 100, got {num_classes}")
    if split not in ("train", "test"):
        raise ValueError(f"CIFAR: split must be 'train' or 'test', got {split!r}")
    if num_classes == 10:
        folder = _folder(Path(root), "cifar-10-batches-py")
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        meta_file, label_key, names_key = "batches.meta", "labels", "label_names"
    else:
        folder = _folder(Path(root), "cifar-100-python")
        files = [split]
        meta_file, label_key, names_key = "meta", "fine_labels", "fine_label_names"
    images, labels = [], []
    for name in files:
        batch = read_batch(folder / name)
        data, batch_labels = batch.get("data"), batch.get(label_key)
        if (
            not isinstance(data, np.ndarray)
            or data.dtype != np.uint8
            or data.ndim != 2
            or data.shape[1] != 3072
            or batch_labels is None
            or len(batch_labels) != data.shape[0]
        ):
            raise DataError(
                f"{folder / name}: expected 'data' as a uint8 (N, 3072) array and {label_key!r} "
                f"with N entries; {HOW_TO_GET}"
            )
        images.append(data.reshape(-1, 3, 32, 32))  # rows are R, G, B planes of 32x32
        labels.append(_integer_labels(batch_labels, folder / name, label_key))
    meta = read_batch(folder / meta_file)
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta.get(names_key, [])]
    label_array = np.concatenate(labels)
    if label_array.size and (label_array.min() < 0 or label_array.max() >= num_classes):
        raise DataError(f"CIFAR under {folder}: labels outside 0..{num_classes - 1}")
    mean, std = STATS[num_classes]
    return TensorData(
        images=torch.from_numpy(np.concatenate(images)),
        labels=torch.from_numpy(label_array),
        num_classes=num_classes,
        name=f"cifar{num_classes}",
        mean=mean,
        std=std,
        classes=classes if len(classes) == num_classes else [],
    )
