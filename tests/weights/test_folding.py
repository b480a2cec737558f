"""Biases that attnzoo drops carry over exactly in eval mode.

For every module that leaves out a bias the official code keeps, the "official" form is built
(the same module with a random bias on each such layer), run in eval mode with random
BatchNorm statistics, and its state dict converted with :mod:`attnzoo.weights.folding` into
the bias-free module: the outputs must agree. Dropping the biases instead must not."""

from __future__ import annotations

import copy

import pytest
import torch
from _reference import randomize
from torch import nn

from attnzoo import module_info
from attnzoo.weights.folding import (
    drop_softmax_shift,
    fold_bias_into_next_conv,
    fold_bias_into_norm,
    norm_after_biasless,
)

# modules whose docstrings say a bias before a BatchNorm is left out (SK: W_z, no bias)
BEFORE_NORM = ["bam", "ocr_head", "ciau", "siau", "apnb", "afnb", "gsop", "sk"]


def _example(name: str) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    info = module_info(name)
    torch.manual_seed(0)
    module = randomize(info.build_example().double(), seed=1).eval()
    g = torch.Generator().manual_seed(2)
    inputs = info.example_inputs(batch=2, height=8, width=8, dtype=torch.float64, generator=g)
    return module, inputs


def _outputs(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    with torch.no_grad():
        out = module.eval()(*inputs)
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _with_bias(module: nn.Module, names: list[str], seed: int = 3) -> nn.Module:
    """The official form: each named bias-free conv/linear gets a random bias."""
    official = copy.deepcopy(module)
    g = torch.Generator().manual_seed(seed)
    for name in names:
        layer = official.get_submodule(name)
        layer.bias = nn.Parameter(torch.randn(layer.weight.shape[0], generator=g).double() * 0.5)
    return official


def _differs(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return any(not torch.allclose(x, y, rtol=1e-6, atol=1e-8) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("name", BEFORE_NORM)
def test_bias_before_norm_folds_exactly_in_eval(name):
    module, inputs = _example(name)
    pairs = norm_after_biasless(module, inputs)
    assert pairs, f"{name}: no bias-free layer feeding a BatchNorm found"
    official = _with_bias(module, [layer for layer, _ in pairs])
    expected = _outputs(official, inputs)
    state = dict(official.state_dict())
    dropped = {k: v for k, v in state.items() if not any(k == f"{la}.bias" for la, _ in pairs)}
    for layer, norm in pairs:
        fold_bias_into_norm(state, f"{layer}.bias", norm)
    module.load_state_dict(state, strict=True)
    got = _outputs(module, inputs)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)
    module.load_state_dict(dropped, strict=True)  # the naive mapping: biases just dropped
    assert _differs(_outputs(module, inputs), expected)


@pytest.mark.parametrize("name", ["apnb", "afnb"])
def test_ann_value_bias_folds_into_the_output_conv(name):
    module, inputs = _example(name)
    official = _with_bias(module, ["value"])
    expected = _outputs(official, inputs)
    state = dict(official.state_dict())
    fold_bias_into_next_conv(state, "value.bias", "out_conv")
    module.load_state_dict(state, strict=True)
    for g, e in zip(_outputs(module, inputs), expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


def test_gc_mask_bias_is_a_softmax_shift():
    module, inputs = _example("gc")
    official = _with_bias(module, ["conv_mask"])
    expected = _outputs(official, inputs)
    state = dict(official.state_dict())
    drop_softmax_shift(state, "conv_mask.bias")
    module.load_state_dict(state, strict=True)
    torch.testing.assert_close(_outputs(module, inputs)[0], expected[0], rtol=1e-10, atol=1e-10)


def test_fold_errors_name_the_keys():
    state = {"a.bias": torch.ones(3), "n.running_mean": torch.zeros(4)}
    with pytest.raises(ValueError, match=r"a\.bias .*n\.running_mean"):
        fold_bias_into_norm(dict(state), "a.bias", "n")
    with pytest.raises(ValueError, match=r"no m\.running_mean"):
        fold_bias_into_norm(dict(state), "a.bias", "m")
    with pytest.raises(ValueError, match="single logit bias"):
        drop_softmax_shift({"c.bias": torch.ones(2)}, "c.bias")
