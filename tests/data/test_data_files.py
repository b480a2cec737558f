"""Loaders of real datasets on small files written here in the official formats, and the
errors for missing, corrupt and tampered files."""

import pickle

import numpy as np
import pytest
import torch

from _fashion_files import idx_bytes, write_fashion
from attnzoo.data import load_cifar, load_dataset, load_fashion_mnist, load_image_folder


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_idx(tmp_path, gz):
    images, labels = write_fashion(tmp_path, gz=gz, split="test")
    data = load_fashion_mnist(tmp_path, split="test")
    assert data.images.shape == (7, 1, 28, 28)
    assert np.array_equal(data.images[:, 0].numpy(), images)
    assert np.array_equal(data.labels.numpy(), labels.astype(np.int64))
    assert data.classes[9] == "Ankle boot"


def test_fashion_mnist_missing_and_corrupt(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte.*apt-get install"):
        load_fashion_mnist(tmp_path)
    write_fashion(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    raw = path.read_bytes()
    path.write_bytes(raw[:-5])  # truncated
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*truncated or corrupt"):
        load_fashion_mnist(tmp_path)
    path.write_bytes(b"\x00\x00\x0d\x03" + raw[4:])  # float dtype code: not the format
    with pytest.raises(ValueError, match=r"bad magic.*IDX file of uint8"):
        load_fashion_mnist(tmp_path)
    gz_path = tmp_path / "train-labels-idx1-ubyte"
    gz_path.rename(tmp_path / "train-labels-idx1-ubyte.gz")  # not gzip inside
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.gz: cannot read"):
        load_fashion_mnist(tmp_path)


def _cifar_batch(n, key, classes, seed):
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"batch",
        key: rng.integers(0, classes, n).tolist(),
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [b"x.png"] * n,
    }


def test_cifar10_and_100(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = []
    for i in range(1, 6):
        batches.append(_cifar_batch(3, b"labels", 10, i))
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batches[-1], protocol=2))
    (folder / "test_batch").write_bytes(pickle.dumps(_cifar_batch(4, b"labels", 10, 9), 2))
    names = [f"c{i}".encode() for i in range(10)]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
    train = load_cifar(tmp_path, 10, "train")  # the parent folder works too
    assert train.images.shape == (15, 3, 32, 32) and train.classes[3] == "c3"
    first = batches[0][b"data"][0].reshape(3, 32, 32)  # R, G, B planes
    assert np.array_equal(train.images[0].numpy(), first)
    assert train.labels.tolist() == [x for b in batches for x in b[b"labels"]]
    assert len(load_dataset("cifar10", split="test", root=folder)) == 4

    folder100 = tmp_path / "cifar-100-python"
    folder100.mkdir()
    (folder100 / "train").write_bytes(pickle.dumps(_cifar_batch(5, b"fine_labels", 100, 1), 2))
    meta = {b"fine_label_names": [f"f{i}".encode() for i in range(100)]}
    (folder100 / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    data = load_cifar(folder100, 100, "train")
    assert data.images.shape == (5, 3, 32, 32) and data.num_classes == 100


class _Exploit:
    def __reduce__(self):
        return (open, ("/tmp/attnzoo-pwned-by-pickle", "w"))


def test_cifar_refuses_foreign_objects_missing_and_corrupt(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data_batch_1.*cifar.html"):
        load_cifar(tmp_path, 10, "train")
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": _Exploit(), b"labels": []}, 2))
    with pytest.raises(ValueError, match=r"test_batch.*not allowed"):
        load_cifar(tmp_path, 10, "test")
    import os

    assert not os.path.exists("/tmp/attnzoo-pwned-by-pickle")
    (folder / "test_batch").write_bytes(b"garbage, not a pickle")
    with pytest.raises(ValueError, match=r"test_batch: not a valid CIFAR python pickle"):
        load_cifar(tmp_path, 10, "test")
    bad = {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}
    (folder / "test_batch").write_bytes(pickle.dumps(bad, 2))
    with pytest.raises(ValueError, match=r"uint8 \(N, 3072\)"):
        load_cifar(tmp_path, 10, "test")


def test_image_folder_with_maps(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / "img/train" / label).mkdir(parents=True)
        (tmp_path / "maps/train" / label).mkdir(parents=True)
    a = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    np.save(tmp_path / "img/train/cat/a.npy", a)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
        tmp_path / "img/train/dog/b.png"
    )
    np.save(tmp_path / "img/train/dog/c.npy", rng.integers(0, 256, (10, 10), dtype=np.uint8))
    heat = np.zeros((20, 24), np.float32)
    heat[5:10, 5:10] = 2.0
    np.save(tmp_path / "maps/train/cat/a.npy", heat)
    np.save(tmp_path / "maps/train/dog/b.npy", np.ones((16, 16), np.float32))
    data = load_image_folder(tmp_path / "img", "train", image_size=16, maps_root=tmp_path / "maps")
    assert data.classes == ["cat", "dog"] and data.labels.tolist() == [0, 1, 1]
    assert data.images.shape == (3, 3, 16, 16) and data.maps.shape == (3, 1, 16, 16)
    assert data.has_map.tolist() == [True, True, False]  # c has no map
    assert data.maps[0].sum() > 0 and data.maps[2].sum() == 0
    np.save(tmp_path / "maps/train/dog/b.npy", np.ones((5, 5), np.float32))
    with pytest.raises(ValueError, match=r"b.npy: map is \(5, 5\)"):
        load_image_folder(tmp_path / "img", "train", image_size=16, maps_root=tmp_path / "maps")
    (tmp_path / "img/train/dog/b.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"b.png: cannot read it"):
        load_image_folder(tmp_path / "img", "train", image_size=16)
    with pytest.raises(FileNotFoundError, match=r"missing .*test"):
        load_image_folder(tmp_path / "img", "test")


def test_unknown_dataset_and_option():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="takes no option"):
        load_dataset("fashion-mnist", clutter=3)
    assert torch.is_tensor(load_dataset("synthetic", num_images=4, image_size=16).images)


def test_synthetic_with_fashion_mnist_objects(tmp_path):
    rng = np.random.default_rng(1)
    images = np.zeros((20, 28, 28), np.uint8)
    images[:, 4:24, 6:22] = rng.integers(100, 256, (20, 20, 16), dtype=np.uint8)
    labels = np.arange(20, dtype=np.uint8) % 10
    for stem, array in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels)):
        (tmp_path / stem).write_bytes(idx_bytes(array))
    data = load_dataset(
        "synthetic", root=tmp_path, source="fashion-mnist", num_images=12, image_size=32,
        object_size=16, clutter=3,
    )  # fmt: skip
    assert data.images.shape == (12, 3, 32, 32)
    # Real items are not binary: the target's pixels take many intensities.
    target = data.images[0][:, data.maps[0, 0] > 0]
    assert target.unique().numel() > 10
    with pytest.raises(FileNotFoundError, match="t10k-images"):
        load_dataset("synthetic", split="test", root=tmp_path, source="fashion-mnist")
