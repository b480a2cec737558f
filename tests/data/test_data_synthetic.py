"""The embedded cluttered dataset: determinism, labels, maps, masks, and that clutter is
made of fragments of other classes (so that finding the complete target is the task)."""

import torch
import torch.nn.functional as F

from attnzoo.data import load_dataset, make_synthetic
from attnzoo.data.synthetic import class_glyphs


def test_deterministic_per_seed_and_splits_differ():
    a = make_synthetic(num_images=40, image_size=32, seed=5)
    b = make_synthetic(num_images=40, image_size=32, seed=5)
    c = make_synthetic(num_images=40, image_size=32, seed=6)
    test = make_synthetic(num_images=40, image_size=32, seed=5, split="test")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    assert not torch.equal(a.images, test.images)


def test_shapes_dtypes_and_options():
    data = load_dataset(
        "synthetic", num_images=30, image_size=24, num_classes=4, clutter=3, channels=1
    )
    assert data.images.shape == (30, 1, 24, 24) and data.images.dtype == torch.uint8
    assert data.maps.shape == (30, 1, 24, 24) and data.masks.shape == (30, 24, 24)
    assert int(data.labels.max()) < 4 and data.num_mask_classes == 5
    assert len(load_dataset("synthetic", split="test", num_images=30)) == 6  # a fifth


def test_map_and_mask_mark_exactly_the_complete_target():
    size, obj = 32, 8
    data = make_synthetic(num_images=64, image_size=size, object_size=obj, clutter=6, seed=1)
    glyphs = F.interpolate(class_glyphs(10)[:, None], size=(obj, obj), mode="nearest")[:, 0]
    for i in range(len(data)):
        on = data.maps[i, 0] > 0
        assert torch.equal(data.masks[i] > 0, on)
        assert set(data.masks[i][on].tolist()) == {int(data.labels[i]) + 1}
        rows, cols = torch.nonzero(on, as_tuple=True)
        top, left = int(rows.min()), int(cols.min())
        # The glyph touches all four borders of its box, so the map's box is the object box
        # and its pixels are the label's glyph, complete (the target is drawn last).
        assert int(rows.max()) - top + 1 == obj and int(cols.max()) - left + 1 == obj
        box = on[top : top + obj, left : left + obj].float()
        assert torch.equal(box, glyphs[data.labels[i]])
        # Target pixels are coloured (not background) in the image.
        assert (data.images[i][:, on].float().mean(0) > 40).all()


def test_clutter_is_fragments_of_other_classes_and_fills_the_canvas():
    clean = make_synthetic(num_images=200, image_size=32, clutter=0, noise=0.0, seed=2)
    busy = make_synthetic(num_images=200, image_size=32, clutter=8, noise=0.0, seed=2)
    lit = lambda d: (d.images.float().amax(1) > 0).float().mean().item()  # noqa: E731
    assert lit(busy) > 2 * lit(clean)
    # Without clutter every lit pixel is the target; with clutter most lit pixels are not.
    on_target = (busy.maps[:, 0] > 0).float().sum() / (busy.images.amax(1) > 0).float().sum()
    assert on_target < 0.5
    # The target occupies a small part of the canvas.
    assert (busy.maps > 0).float().mean() < 0.1


def test_glyphs_are_distinct_and_fixed():
    glyphs = class_glyphs(10)
    assert torch.equal(glyphs, class_glyphs(10))
    differences = (glyphs[:, None] != glyphs[None]).sum(dim=(2, 3))
    assert int((differences + 100 * torch.eye(10)).min()) >= 6
    mirrored = (glyphs[:, None] != glyphs.flip(-1)[None]).sum(dim=(2, 3))
    assert int((mirrored + 100 * torch.eye(10)).min()) >= 6


def test_repeated_requests_share_one_generation_but_not_its_attributes():
    from attnzoo.data.synthetic import generate_synthetic

    first = make_synthetic(num_images=24, image_size=16, seed=3, split="test")
    again = make_synthetic(24, 16, seed=3, split="test")  # positional arguments bind the same
    fresh = generate_synthetic(num_images=24, image_size=16, seed=3, split="test")
    assert again is not first and again.images is first.images  # shared tensors, one generation
    assert torch.equal(fresh.images, again.images) and torch.equal(fresh.maps, again.maps)
    first.mean = (0.0, 0.0, 0.0)  # a caller re-normalising its copy ...
    assert make_synthetic(num_images=24, image_size=16, seed=3, split="test").mean == fresh.mean
    other = make_synthetic(num_images=24, image_size=16, seed=4, split="test")
    assert not torch.equal(other.images, fresh.images)
