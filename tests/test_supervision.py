"""The importance-map (ClickMe) loss against a naive float64 recomputation, and its contract."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from torch import nn

import attnzoo
from attnzoo.supervision import (
    ImportanceMapLoss,
    collect_spatial_maps,
    gaussian_blur,
    importance_map_loss,
    official_blur,
    spatial_map_modules,
)


def naive_loss(layers, target, has_map, weight, normalise, reduction, align_corners=False):
    """Loops over layers and examples; explicit sums; float64."""
    per_layer = []
    for layer in layers:
        h, w = layer.shape[-2:]
        resized = F.interpolate(
            target.double(), size=(h, w), mode="bilinear", align_corners=align_corners
        )
        total, count = 0.0, 0
        for n in range(target.shape[0]):
            if not has_map[n]:
                continue
            count += 1
            human, model = resized[n, 0], layer[n, 0].double()
            if normalise == "l2":
                human = human / math.sqrt(float((human**2).sum()))
                model = model / math.sqrt(float((model**2).sum()))
            else:
                human = human / math.sqrt(float(human.sum()))
                model = model / math.sqrt(float(model.sum()))
            d = 0.0
            for i in range(h):
                for j in range(w):
                    d += 0.5 * float(human[i, j] - model[i, j]) ** 2
            total += d
        if reduction == "mean":
            total = total / max(count, 1)
        per_layer.append(total)
    return weight * sum(per_layer) / len(per_layer)


def random_maps(batch=3, sizes=((8, 8), (4, 6)), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(batch, 1, h, w, generator=g, dtype=torch.float64) + 0.01 for h, w in sizes]


@pytest.mark.parametrize("normalise", ["l2", "sqrt_sum"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_loss_matches_naive_recomputation(normalise, reduction):
    layers = random_maps()
    target = torch.rand(3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    has_map = torch.tensor([True, False, True])
    got = importance_map_loss(
        layers, target, has_map, weight=0.3, normalise=normalise, reduction=reduction
    )
    expected = naive_loss(layers, target.unsqueeze(1), has_map, 0.3, normalise, reduction)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_align_corners_option_is_used_for_resizing():
    layers = random_maps(sizes=((5, 7),))
    target = torch.rand(
        3, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2)
    )
    has_map = torch.ones(3, dtype=torch.bool)
    for align in (False, True):
        got = importance_map_loss(layers, target, has_map, align_corners=align)
        expected = naive_loss(layers, target, has_map, 1.0, "l2", "mean", align_corners=align)
        assert got.item() == pytest.approx(expected, rel=1e-10)
    assert importance_map_loss(layers, target, align_corners=True) != importance_map_loss(
        layers, target, align_corners=False
    )


def test_zero_when_maps_match_up_to_scale_positive_otherwise():
    target = torch.rand(
        2, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3)
    )
    same_size = 7.0 * target
    resized = 0.2 * F.interpolate(target, size=(8, 8), mode="bilinear", align_corners=False)
    loss = importance_map_loss([same_size, resized], target)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    other = torch.rand(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    assert importance_map_loss([other], target).item() > 1e-3
    # sqrt_sum is not scale-invariant, but identical maps still give zero.
    assert importance_map_loss([target], target, normalise="sqrt_sum").item() == pytest.approx(
        0.0, abs=1e-12
    )


def test_examples_without_a_map_change_nothing():
    layers = random_maps()
    g = torch.Generator().manual_seed(5)
    target = torch.rand(3, 1, 16, 16, generator=g, dtype=torch.float64)
    has_map = torch.tensor([True, False, True])
    reference = importance_map_loss(layers, target, has_map)
    for placeholder in (torch.zeros(1, 16, 16), torch.rand(1, 16, 16, generator=g), torch.nan):
        changed = target.clone()
        changed[1] = placeholder
        for blur in (None, "official"):
            torch.testing.assert_close(
                importance_map_loss(layers, changed, has_map, blur_sigma=blur),
                importance_map_loss(layers, target, has_map, blur_sigma=blur),
            )
        torch.testing.assert_close(importance_map_loss(layers, changed, has_map), reference)
    # the mean over examples with a map: dropping the map-less example leaves the value alone
    kept = [m[[0, 2]] for m in layers]
    torch.testing.assert_close(
        importance_map_loss(kept, target[[0, 2]]), reference, rtol=1e-12, atol=0
    )
    nothing = torch.zeros(3, dtype=torch.bool)
    for reduction in ("mean", "sum"):
        assert importance_map_loss(layers, target, nothing, reduction=reduction).item() == 0.0


def test_sum_reduction_is_batch_sum_and_weight_scales():
    layers = random_maps(batch=4)
    target = torch.rand(
        4, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(6)
    )
    mean = importance_map_loss(layers, target, reduction="mean")
    total = importance_map_loss(layers, target, reduction="sum", weight=1e-5)
    assert total.item() == pytest.approx(4 * 1e-5 * mean.item(), rel=1e-12)


def test_multichannel_maps_are_collapsed_as_mean_of_squares():
    g = torch.Generator().manual_seed(7)
    mask = torch.rand(2, 5, 6, 6, generator=g, dtype=torch.float64)
    target = torch.rand(2, 1, 12, 12, generator=g, dtype=torch.float64)
    collapsed = (mask**2).mean(dim=1, keepdim=True)
    torch.testing.assert_close(
        importance_map_loss([mask], target), importance_map_loss([collapsed], target)
    )


def tiny_gala_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        attnzoo.create("gala", 16),
        nn.Conv2d(16, 16, 3, stride=2, padding=1),
        attnzoo.create("gala", 16, local_extra_conv=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    )


def test_model_maps_are_collected_and_gradient_reaches_gala_parameters():
    model = tiny_gala_net()
    assert spatial_map_modules(model) == {"1": "gala", "3": "gala"}
    x = torch.randn(2, 3, 12, 12)
    target = torch.rand(2, 12, 12)
    with attnzoo.recording_maps(model):
        model(x)
        maps = collect_spatial_maps(model)
        assert {k: tuple(v.shape) for k, v in maps.items()} == {
            "1": (2, 1, 12, 12),
            "3": (2, 1, 6, 6),
        }
        loss = ImportanceMapLoss(weight=2.0)(model, target, torch.tensor([True, True]))
        assert loss.item() == pytest.approx(
            importance_map_loss(list(maps.values()), target, weight=2.0).item()
        )
        loss.backward()
    for name, p in model.named_parameters():
        if name.startswith(("1.", "3.")):
            assert p.grad is not None and p.grad.abs().max() > 0, name
    assert model[6].weight.grad is None  # the map loss does not reach the classifier


def test_clear_errors_for_no_spatial_module_and_recording_off():
    plain = nn.Sequential(nn.Conv2d(3, 8, 3), attnzoo.create("se", 8))
    plain(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="no attention module that exposes a spatial map"):
        importance_map_loss(plain, torch.rand(1, 8, 8))
    model = tiny_gala_net()
    model(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"recording is off.*record_maps"):
        importance_map_loss(model, torch.rand(1, 8, 8))
    attnzoo.record_maps(model)
    with pytest.raises(ValueError, match="no spatial map was recorded"):
        importance_map_loss(model, torch.rand(1, 8, 8))


def test_invalid_arguments_raise():
    maps = random_maps(batch=2)
    with pytest.raises(ValueError, match="normalise"):
        importance_map_loss(maps, torch.rand(2, 8, 8), normalise="l1")
    with pytest.raises(ValueError, match="reduction"):
        importance_map_loss(maps, torch.rand(2, 8, 8), reduction="max")
    with pytest.raises(ValueError, match=r"batch size 2.*3"):
        importance_map_loss(maps, torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="one channel"):
        importance_map_loss(maps, torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"has_map must have shape \(2,\)"):
        importance_map_loss(maps, torch.rand(2, 8, 8), torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="blur_sigma"):
        importance_map_loss(maps, torch.rand(2, 8, 8), blur_sigma="strong")
    with pytest.raises(ValueError, match="empty"):
        importance_map_loss([], torch.rand(2, 8, 8))


@pytest.mark.parametrize(
    "name", [n for n in attnzoo.list_modules() if "spatial" in attnzoo.module_info(n).maps]
)
def test_every_module_with_a_spatial_map_can_be_supervised(name):
    info = attnzoo.module_info(name)
    torch.manual_seed(0)
    module = info.build_example()
    size = getattr(module, "expected_size", None)  # size-bound modules (RGA) accept one size
    h, w = (9, 9) if size is None else (int(size[0]), int(size[1]))
    inputs = info.example_inputs(2, h, w)
    with attnzoo.recording_maps(module):
        module(*inputs)
        loss = importance_map_loss(module, torch.rand(2, 1, 18, 18), blur_sigma=2.0)
        loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in module.parameters())


def test_gaussian_blur_matches_scipy_and_official_scaling():
    g = torch.Generator().manual_seed(8)
    image = torch.rand(1, 1, 20, 17, generator=g, dtype=torch.float64)
    sigma, kernel = 2.5, 9
    ours = gaussian_blur(image, sigma, kernel)[0, 0].numpy()
    reference = gaussian_filter(
        image[0, 0].numpy(), sigma=sigma, mode="constant", cval=0.0, truncate=(kernel // 2) / sigma
    )
    np.testing.assert_allclose(ours, reference, rtol=1e-10, atol=1e-12)
    assert official_blur(224) == ((28.0, 28.0), (49, 49))
    assert official_blur(112, 56) == ((14.0, 7.0), (25, 13))
    with pytest.raises(ValueError, match="odd"):
        gaussian_blur(image, 1.0, 4)
