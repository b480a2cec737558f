"""Helpers for the weights tests: random, well-scaled weights with random BatchNorm statistics
(so that a wrong mapping, a missed fold or a swapped channel shows in the outputs), and the
comparison of eval-mode logits in float64."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter ~ N(0, 1/fan_in) and every BatchNorm with random statistics/affine."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 1
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
    return model


def random_state(shapes: Mapping[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict of the given shapes: ``running_var`` positive, counters zero, the rest
    N(0, 1/fan_in) (BN weights around 1, running means and biases around 0)."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif len(shape) == 1 and key.endswith("weight"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif len(shape) == 1:
            state[key] = torch.randn(shape, generator=g) * 0.2
        else:
            fan_in = math.prod(shape[1:])
            state[key] = torch.randn(shape, generator=g) / math.sqrt(fan_in)
    return state


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model = model.double().eval()
    with torch.no_grad():
        return model(x.double())


def assert_same(got: torch.Tensor, expected: torch.Tensor, tolerance: float = 1e-9) -> None:
    assert got.shape == expected.shape
    scale = expected.abs().max().item()
    assert scale > 1e-3, "degenerate reference: logits are all near zero"
    torch.testing.assert_close(got, expected, rtol=tolerance, atol=tolerance * scale)
