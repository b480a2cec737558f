"""Built-in ResNets: parameter counts against the papers, shapes, options, weight init."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnzoo import models
from attnzoo.models.resnet_cifar import ZeroPadShortcut


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def cifar_basic_count(n: int, classes: int = 10) -> int:
    """Counted from the paper's description (option A: shortcuts have no parameters)."""
    total = 3 * 16 * 9 + 2 * 16  # stem conv + BN
    width = 16
    for planes in (16, 32, 64):
        for _ in range(n):
            total += width * planes * 9 + planes * planes * 9 + 4 * planes
            width = planes
    return total + 64 * classes + classes


@pytest.mark.parametrize(
    ("name", "n", "paper"),
    [
        ("resnet20", 3, 0.27e6),
        ("resnet32", 5, 0.46e6),
        ("resnet56", 9, 0.85e6),
        ("resnet110", 18, 1.7e6),
    ],
)
def test_cifar_resnet_parameter_counts(name, n, paper):
    count = n_params(models.create(name, num_classes=10))
    assert count == cifar_basic_count(n)
    assert abs(count - paper) / paper < 0.02  # the paper rounds to 2 digits (Table 6)


def test_resnet8_is_the_n1_member_of_the_family():
    # Not in the paper's Table 6 (n = 1 is below its range); the same 6n+2 construction.
    model = models.create("resnet8", num_classes=10)
    assert n_params(model) == cifar_basic_count(1) == 75290
    assert [len(getattr(model, f"layer{i}")) for i in (1, 2, 3)] == [1, 1, 1]


def test_preact_resnet164_parameter_count():
    count = n_params(models.create("preact_resnet164", num_classes=10))
    assert abs(count - 1.7e6) / 1.7e6 < 0.01  # "1.7M" (He et al. 2016b, Table 2)


def test_imagenet_resnet_parameter_counts():
    assert n_params(models.create("resnet18", num_classes=1000)) == 11_689_512
    assert n_params(models.create("resnet34", num_classes=1000)) == 21_797_672
    assert n_params(models.create("resnet50", num_classes=1000)) == 25_557_032


def test_shortcut_options():
    a = models.create("resnet20", shortcut="A")
    b = models.create("resnet20", shortcut="B")
    assert isinstance(a.layer2[0].downsample, ZeroPadShortcut)
    assert isinstance(b.layer2[0].downsample, nn.Sequential)
    assert n_params(b) - n_params(a) == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    x = torch.randn(2, 16, 7, 9)
    out = ZeroPadShortcut(16, 32, 2)(x)
    assert out.shape == (2, 32, 4, 5)
    torch.testing.assert_close(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0
    with pytest.raises(ValueError, match="shortcut"):
        models.create("resnet20", shortcut="C")


@pytest.mark.parametrize("name", ["resnet20", "preact_resnet164", "resnet18", "resnet50"])
def test_forward_shapes_options_and_gattanet_layers(name):
    small = {"small_input": True} if name in ("resnet18", "resnet50") else {}
    model = models.create(name, num_classes=7, in_channels=1, **small).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 30)).shape == (1, 7)
    names = dict(model.named_modules())
    assert model.gattanet_layers[-1] == "fc"
    assert all(layer in names for layer in model.gattanet_layers)


def test_small_input_stem_keeps_resolution():
    model = models.create("resnet18", small_input=True).eval()
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 512, 4, 4)
        assert models.create("resnet18").eval().forward_features(
            torch.randn(1, 3, 32, 32)
        ).shape == (1, 512, 1, 1)


def test_weight_init_is_torchvision_style():
    torch.manual_seed(0)
    model = models.create("resnet50")
    conv = model.layer3[0].conv2
    fan_out = conv.out_channels * 9
    std = conv.weight.std().item()
    assert abs(std - (2 / fan_out) ** 0.5) / (2 / fan_out) ** 0.5 < 0.05
    assert torch.equal(model.layer1[0].bn3.weight, torch.ones(256))
    zero = models.create("resnet50", zero_init_residual=True)
    assert zero.layer1[0].bn3.weight.abs().sum() == 0


def test_preact_block_is_pre_activation():
    """x + conv3(relu(bn3(conv2(relu(bn2(conv1(relu(bn1(x))))))))): no ReLU after the add."""
    torch.manual_seed(0)
    block = models.create("preact_resnet164").layer1[1].double().eval()
    x = torch.randn(1, 64, 5, 5, dtype=torch.float64)
    h = F.conv2d(torch.relu(block.bn1(x)), block.conv1.weight)
    h = F.conv2d(torch.relu(block.bn2(h)), block.conv2.weight, padding=1)
    h = F.conv2d(torch.relu(block.bn3(h)), block.conv3.weight)
    torch.testing.assert_close(block(x), x + h)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="unknown model"):
        models.create("resnet21")
    with pytest.raises(ValueError, match="replace_stride_with_dilation"):
        models.create("resnet18", replace_stride_with_dilation=(True,))
