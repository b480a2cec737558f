"""Fashion-MNIST's official IDX files, written small for the tests (uint8 arrays)."""

import gzip

import numpy as np


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def write_fashion(root, n=7, gz=True, split="train"):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    prefix = "train" if split == "train" else "t10k"
    for stem, array in (
        (f"{prefix}-images-idx3-ubyte", images),
        (f"{prefix}-labels-idx1-ubyte", labels),
    ):
        if gz:
            with gzip.open(root / (stem + ".gz"), "wb") as handle:
                handle.write(idx_bytes(array))
        else:
            (root / stem).write_bytes(idx_bytes(array))
    return images, labels
