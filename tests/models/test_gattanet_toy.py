"""The GAttANet toy CNN: shapes on CIFAR and Fashion-MNIST sizes, the wrapped version built by
name, the attention system's parameter overhead, and the baseline at α = 0."""

from __future__ import annotations

import pytest
import torch

import attnzoo
from attnzoo.gattanet import GAttANet
from attnzoo.models.gattanet_toy import GAttANetToy

WIDTHS = (8, 16, 32)  # small widths keep the tests fast; the defaults are (64, 128, 256)


def test_registered_and_defaults_documented():
    assert "gattanet_toy" in attnzoo.models.list_models()
    model = attnzoo.models.create("gattanet_toy")
    assert isinstance(model, GAttANetToy)
    assert model.conv1[0].out_channels == 64 and model.conv3[0].out_channels == 256
    assert model.fc1[0].out_features == 256 and model.fc2.out_features == 10
    assert model.gattanet_layers == ("conv1", "conv2", "conv3", "fc1", "fc2")


@pytest.mark.parametrize(
    ("in_channels", "size", "maps"),
    [(3, 32, (32, 16, 8)), (1, 28, (28, 14, 7))],
    ids=["cifar", "fashion_mnist"],
)
def test_wrapped_toy_shapes_and_agreement_maps(in_channels, size, maps):
    torch.manual_seed(0)
    model = attnzoo.models.create(
        "gattanet_toy",
        attention="gattanet",
        num_classes=10,
        in_channels=in_channels,
        image_size=size,
        widths=WIDTHS,
        hidden=24,
    )
    assert isinstance(model, GAttANet)
    assert model.layers == ("conv1", "conv2", "conv3", "fc1", "fc2") and model.d == 16
    out = model(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert model.global_query.shape == (2, 16)
    for name, side in zip(("conv1", "conv2", "conv3"), maps, strict=True):
        assert model.agreement[name].shape == (2, 1, side, side)
    assert model.agreement["fc1"].shape == (2, 24)
    assert model.agreement["fc2"].shape == (2, 10)  # which class the global query favours


def test_parameter_overhead_is_2d_per_channel_per_layer_plus_one_alpha_per_layer():
    torch.manual_seed(0)
    base = attnzoo.models.create("gattanet_toy", widths=WIDTHS, hidden=24, num_classes=7)
    wrapped = attnzoo.models.create(
        "gattanet_toy",
        attention="gattanet",
        widths=WIDTHS,
        hidden=24,
        num_classes=7,
        attention_options={"d": 5},
    )
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    channels = sum(WIDTHS) + 24 + 7
    assert count(wrapped) - count(base) == 2 * 5 * channels + 5


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_wrapped_toy_at_zero_alpha_is_the_baseline(train):
    torch.manual_seed(0)
    base = attnzoo.models.create("gattanet_toy", widths=WIDTHS, hidden=24).train(train)
    wrapped = attnzoo.models.create(
        "gattanet_toy", attention="gattanet", widths=WIDTHS, hidden=24
    ).train(train)
    wrapped.model.load_state_dict(base.state_dict())
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(wrapped(x), base(x))
    with torch.no_grad():
        for alpha in wrapped.alphas.values():
            alpha.fill_(0.5)
    assert not torch.allclose(wrapped(x), base(x))


def test_wrong_input_is_rejected_with_the_expected_size():
    model = attnzoo.models.create("gattanet_toy", widths=WIDTHS, hidden=24)
    with pytest.raises(ValueError, match=r"32x32.*got 28x28.*image_size=28"):
        model(torch.randn(1, 3, 28, 28))
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\).*\(1, 1, 32, 32\)"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="image_size must be >= 8"):
        attnzoo.models.create("gattanet_toy", image_size=4)


def test_no_norm_variant_and_iterations_option():
    torch.manual_seed(0)
    model = attnzoo.models.create(
        "gattanet_toy",
        attention="gattanet",
        widths=WIDTHS,
        hidden=24,
        norm=False,
        attention_options={"iterations": 3},
    )
    assert model.iterations == 3
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
