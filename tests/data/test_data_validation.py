"""Data that would silently train the wrong thing is refused when it is loaded: splits whose
class folders differ, empty classes, fractional labels, non-finite maps, empty or corrupt
files. Each error names the file (or image index) at fault."""

import gzip
import pickle

import numpy as np
import pytest
import torch

from attnzoo.data import TensorData, load_cifar, load_fashion_mnist, load_image_folder
from attnzoo.errors import DataError


def _image(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.full((8, 8, 3), value, np.uint8))


def test_folder_test_split_with_other_classes_is_an_error_naming_both_sets(tmp_path):
    for split, classes in (("train", ("cat", "dog")), ("test", ("cat", "cow"))):
        for label in classes:
            _image(tmp_path / split / label / "a.npy")
    assert load_image_folder(tmp_path, "train", image_size=8).classes == ["cat", "dog"]
    # Position would relabel every "cow" as "dog": refused, naming both class lists.
    with pytest.raises(
        DataError, match=r"\['cat', 'cow'\].*\['cat', 'dog'\].*only in test: \['cow'\]"
    ):
        load_image_folder(tmp_path, "test", image_size=8)
    _image(tmp_path / "test" / "dog" / "a.npy")  # a superset is just as wrong
    with pytest.raises(DataError, match=r"only in test: \['cow'\]; only in train: \[\]"):
        load_image_folder(tmp_path, "test", image_size=8)


def test_folder_empty_class_and_empty_or_nan_files(tmp_path):
    _image(tmp_path / "train" / "cat" / "a.npy")
    (tmp_path / "train" / "dog").mkdir()
    (tmp_path / "train" / "dog" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"train/dog has no .* images"):
        load_image_folder(tmp_path, "train", image_size=8)
    (tmp_path / "train" / "dog" / "b.npy").write_bytes(b"")  # 0-byte .npy
    with pytest.raises(DataError, match=r"dog/b\.npy: cannot read it .*the file is empty"):
        load_image_folder(tmp_path, "train", image_size=8)
    _image(tmp_path / "train" / "dog" / "b.npy")
    heat = np.ones((8, 8), np.float32)
    heat[2, 3] = np.nan
    (tmp_path / "maps" / "train" / "dog").mkdir(parents=True)
    np.save(tmp_path / "maps" / "train" / "dog" / "b.npy", heat)
    with pytest.raises(DataError, match=r"maps/train/dog/b\.npy: .* 1 NaN/inf value"):
        load_image_folder(tmp_path, "train", image_size=8, maps_root=tmp_path / "maps")


def test_tensor_data_refuses_non_finite_maps_naming_the_image():
    maps = torch.ones(4, 1, 2, 2)
    maps[2, 0, 1, 1] = float("inf")
    common = dict(labels=torch.zeros(4, dtype=torch.int64), num_classes=2, name="x",
                  mean=(0.5,), std=(0.5,))  # fmt: skip
    with pytest.raises(DataError, match=r"x: the importance maps of image\(s\) \[2\]"):
        TensorData(images=torch.zeros(4, 1, 2, 2, dtype=torch.uint8), maps=maps, **common)
    # A placeholder of an image without a map (has_map False) is never used: accepted.
    has_map = torch.tensor([True, True, False, True])
    data = TensorData(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), maps=maps, has_map=has_map,
                      **common)  # fmt: skip
    assert len(data) == 4


def test_importance_map_loss_refuses_nan_targets():
    from attnzoo.supervision import importance_map_loss

    target = torch.rand(3, 1, 4, 4)
    target[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"batch index\(es\) \[1\] hold NaN"):
        importance_map_loss(torch.rand(3, 1, 4, 4), target)
    loss = importance_map_loss(torch.rand(3, 1, 4, 4), target, torch.tensor([True, False, True]))
    assert torch.isfinite(loss)


def test_cifar_fractional_labels_are_an_error_not_truncated(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names = {b"label_names": [f"c{i}".encode() for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(names, 2))
    data = np.zeros((3, 3072), np.uint8)
    for labels, ok in (
        ([1.0, 2.0, 3.0], True),
        ([1, 2.5, 3], False),
        ([1, float("nan"), 3], False),
    ):
        batch = {b"data": data, b"labels": labels}
        (folder / "test_batch").write_bytes(pickle.dumps(batch, 2))
        if ok:  # whole numbers stored as floats are what they say
            assert load_cifar(tmp_path, 10, "test").labels.tolist() == [1, 2, 3]
        else:
            with pytest.raises(
                DataError, match=r"test_batch: 'labels' holds a non-integer .* index 1"
            ):
                load_cifar(tmp_path, 10, "test")


def test_corrupt_gzip_stream_is_a_data_error(tmp_path):
    labels = bytes([0, 0, 8, 1, 0, 0, 0, 200]) + bytes(range(200))
    packed = bytearray(gzip.compress(labels, mtime=0))
    packed[10:14] = b"\xff" * 4  # an invalid deflate block type: zlib.error, not an OSError
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(bytes(packed))
    images = bytes([0, 0, 8, 3, 0, 0, 0, 200, 0, 0, 0, 28, 0, 0, 0, 28]) + bytes(200 * 784)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(images)
    with pytest.raises(DataError, match=r"labels-idx1-ubyte\.gz: .*corrupt \(.*invalid block"):
        load_fashion_mnist(tmp_path)
