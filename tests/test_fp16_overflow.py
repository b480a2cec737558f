"""fp16 autocast at ordinary activation scales: reductions that can overflow fp16 (sums of many
products) must run in float32, as the attention softmaxes do. Each case first reproduced a NaN.

CPU autocast to float16 exists (``torch.autocast("cpu", dtype=torch.float16)``); every module
is also checked at 100x unit scale under bf16 autocast in test_conformance.py.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import attnzoo
from attnzoo.gattanet import wrap


def fp16_output(module: nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.float16):
        out = module(*inputs)
    return out[0] if isinstance(out, tuple) else out


def scaled_input(scale: float, channels: int, size=(8, 8), batch: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, channels, *size, generator=generator) * scale


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("scale", [30.0, 100.0])
def test_nonlocal_dot_product_is_finite_under_fp16(train, scale):
    torch.manual_seed(0)
    module = attnzoo.create("nonlocal", 32, pairwise="dot_product").train(train)
    nn.init.ones_(module.out_norm.weight)  # the zero init would multiply the branch away
    out = fp16_output(module, scaled_input(scale, 32))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["rga_s", "rga_c", "rga_sc"])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_rga_is_finite_under_fp16_at_200x(name, train):
    torch.manual_seed(0)
    module = attnzoo.create(name, 64, spatial_size=(8, 8)).train(train)
    out = fp16_output(module, scaled_input(200.0, 64))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    "options", [{}, {"mode": "spatial"}, {"mode": "spatial", "spatial_norm": "code"}]
)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_gsop_covariance_is_finite_under_fp16_at_large_scale(options, train):
    torch.manual_seed(0)
    module = attnzoo.create("gsop", 32, rd_channels=16, **options).train(train)
    out = fp16_output(module, scaled_input(1000.0, 32))
    assert torch.isfinite(out).all()


class Convs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.fc = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


@pytest.mark.parametrize("scale", [30.0, 1000.0])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_gattanet_with_zero_alphas_equals_the_plain_model_under_fp16(train, scale):
    torch.manual_seed(0)
    model = Convs().train(train)
    wrapped = wrap(model, ["conv1", "conv2", "fc"], d=16).train(train)
    x = scaled_input(scale, 3, size=(16, 16))
    plain = fp16_output(model, x)
    assert torch.isfinite(plain).all()  # the plain model does not overflow at this scale
    out = fp16_output(wrapped, x)
    torch.testing.assert_close(out, plain, rtol=0, atol=0)
