"""Joint transforms keep image, map and mask aligned; the device loader covers the data,
is reproducible from (seed, epoch, step), and shards global batches across ranks exactly."""

import torch

from attnzoo.data import (
    Compose,
    DeviceLoader,
    RandomCrop,
    RandomHorizontalFlip,
    Resize,
    TensorData,
    make_synthetic,
    standard_augmentation,
)


def _aligned_batch(b=6, h=10, w=12):
    # Every entry encodes the pixel position, so any misalignment shows.
    position = (torch.arange(h)[:, None] * w + torch.arange(w)[None, :]).float() + 1  # (h, w)
    image = position.expand(b, 3, h, w).clone()
    return {
        "image": image,
        "map": position.expand(b, 1, h, w).clone(),
        "mask": position.expand(b, h, w).long().clone(),
        "label": torch.arange(b),
    }


def test_crop_and_flip_are_joint_and_per_example():
    batch = _aligned_batch()
    generator = torch.Generator().manual_seed(0)
    out = Compose([RandomCrop((8, 9), padding=2), RandomHorizontalFlip(0.5)])(batch, generator)
    assert out["image"].shape == (6, 3, 8, 9) and out["mask"].shape == (6, 8, 9)
    image0 = out["image"][:, 0]
    padded = image0 == 0
    assert torch.equal(out["mask"] == 255, padded)  # masks pad with the ignore value
    assert torch.equal(out["map"][:, 0], image0)
    assert torch.equal(out["mask"][~padded].float(), image0[~padded])
    assert torch.equal(out["label"], batch["label"])
    # Crop offsets differ between examples.
    assert len({tuple(img.flatten().tolist()) for img in image0}) > 1


def test_crop_matches_naive_slicing():
    batch = _aligned_batch(b=4)
    generator = torch.Generator().manual_seed(3)
    out = RandomCrop(5, padding=1)(batch, generator)
    generator = torch.Generator().manual_seed(3)
    top = torch.randint(10 + 2 - 5 + 1, (4,), generator=generator)
    left = torch.randint(12 + 2 - 5 + 1, (4,), generator=generator)
    padded = torch.nn.functional.pad(batch["image"], (1, 1, 1, 1))
    for i in range(4):
        t, l = int(top[i]), int(left[i])
        assert torch.equal(out["image"][i], padded[i, :, t : t + 5, l : l + 5])


def test_flip_matches_naive_and_resize_keeps_mask_labels():
    batch = _aligned_batch(b=8)
    generator = torch.Generator().manual_seed(1)
    out = RandomHorizontalFlip(0.5)(batch, generator)
    flipped = [bool(torch.equal(out["image"][i], batch["image"][i].flip(-1))) for i in range(8)]
    assert 0 < sum(flipped) < 8
    for i in range(8):
        expected = batch["mask"][i].flip(-1) if flipped[i] else batch["mask"][i]
        assert torch.equal(out["mask"][i], expected)
    resized = Resize(5)(batch)
    assert resized["image"].shape == (8, 3, 5, 5) and resized["map"].shape == (8, 1, 5, 5)
    assert set(resized["mask"].unique().tolist()) <= set(batch["mask"].unique().tolist())


def _data(n=24):
    return make_synthetic(num_images=n, image_size=16, num_classes=3, clutter=1)


def test_loader_covers_the_data_normalises_and_reproduces():
    data = _data()
    loader = DeviceLoader(data, 5, shuffle=True, seed=1)
    seen = torch.cat([b["label"] for b in loader])
    assert len(loader) == 5 and sorted(seen.tolist()) == sorted(data.labels.tolist())
    batch = next(iter(loader))
    assert batch["image"].dtype == torch.float32 and batch["map"].max() <= 1.0
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    first = loader.order()[:5]
    assert torch.allclose(batch["image"], (data.images[first].float() / 255 - mean) / std)
    loader.set_epoch(1)
    assert not torch.equal(loader.order(), DeviceLoader(data, 5, shuffle=True, seed=1).order())
    # Resuming at step k yields exactly the batches k.. of an uninterrupted pass.
    augmented = DeviceLoader(
        data, 4, shuffle=True, drop_last=True, seed=2, transform=standard_augmentation((16, 16))
    )
    augmented.set_epoch(3)
    full = list(augmented.iterate())
    tail = list(augmented.iterate(start_step=2))
    assert len(full) == 6 and len(tail) == 4
    for a, b in zip(full[2:], tail, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_ranks_split_each_global_batch_like_one_process():
    data = _data()
    kwargs = dict(shuffle=True, drop_last=True, seed=4, transform=standard_augmentation((16, 16)))
    single = list(DeviceLoader(data, 8, **kwargs))
    ranks = [list(DeviceLoader(data, 8, rank=r, world_size=2, **kwargs)) for r in range(2)]
    for step, whole in enumerate(single):
        for key in whole:
            joined = torch.cat([ranks[0][step][key], ranks[1][step][key]])
            assert torch.equal(joined, whole[key]), key
    # Evaluation: the short last batch is split, every example seen once over the ranks.
    evals = [DeviceLoader(data, 10, rank=r, world_size=2) for r in range(2)]
    labels = torch.cat([b["label"] for loader in evals for b in loader])
    assert sorted(labels.tolist()) == sorted(data.labels.tolist())


def test_bad_inputs_raise_value_errors():
    data = _data(6)
    import pytest

    with pytest.raises(ValueError, match="must divide by the number of processes"):
        DeviceLoader(data, 5, world_size=2)
    with pytest.raises(ValueError, match="exceeds the 6 examples"):
        DeviceLoader(data, 8, drop_last=True)
    with pytest.raises(ValueError, match="uint8"):
        TensorData(torch.zeros(2, 3, 4, 4), torch.zeros(2), 2, "x", (0.0,), (1.0,))
