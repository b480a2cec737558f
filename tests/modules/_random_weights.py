"""Random, well-scaled weights and eval-mode BatchNorm statistics for the naive-equation tests:
zero-initialised layers (identity at init) would otherwise hide most of a module's equation."""

import math

import torch
from torch import nn

import attnzoo


def randomize_batchnorm(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random eval-mode statistics and affine parameters for every BatchNorm of ``module``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g, dtype=torch.float64) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g, dtype=torch.float64) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g, dtype=torch.float64) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g, dtype=torch.float64) * 0.1)
    return module


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter ~ N(0, 1/fan_in), then random BatchNorm statistics and affine."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) / math.sqrt(p[0].numel()))
    return randomize_batchnorm(module, seed + 1)


def randomized(name: str, channels: int, **options) -> nn.Module:
    """``attnzoo.create(name, channels, **options)`` in float64, eval mode, random weights."""
    torch.manual_seed(0)
    return randomize(attnzoo.create(name, channels, **options).double().eval(), seed=1)
