"""Biases that attnzoo drops, and how to carry a released model's values over exactly.

Several modules leave out a bias that official code keeps, because it cannot change what the
module learns (BAM, OCR, IAU, ANN, GSoP, SK: a conv bias right before a BatchNorm; GC: the mask
logit bias before a softmax; ANN: the value bias, which passes through the attention average).
In training these are exact: BatchNorm subtracts the batch mean, softmax ignores a shift. In
eval mode with a trained model's running statistics they are not, so a key mapping that just
drops them changes the outputs. The released values are carried over instead:

- bias ``b`` before a BatchNorm with running mean ``μ``:  ``BN(Wx + b)`` uses ``x - (μ - b)``,
  so ``μ' = μ - b`` (:func:`fold_bias_into_norm`; exact in eval and train);
- bias ``b`` of a value projection whose attention-weighted average (rows of the attention sum
  to 1; average pooling keeps a constant) feeds a conv ``W_o, b_o``: ``b_o' = b_o + W_o b``
  (:func:`fold_bias_into_next_conv`);
- a constant added to every logit of a softmax: nothing to carry (:func:`drop_softmax_shift`).

:func:`norm_after_biasless` finds, with one traced forward pass, every bias-free conv or linear
layer whose output goes straight into a BatchNorm: the places where a released bias folds.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "drop_softmax_shift",
    "fold_bias_into_next_conv",
    "fold_bias_into_norm",
    "norm_after_biasless",
]

State = MutableMapping[str, torch.Tensor]


def fold_bias_into_norm(state: State, bias_key: str, norm_prefix: str) -> None:
    """Remove ``state[bias_key]`` and fold it into the running mean of the norm at
    ``norm_prefix`` (``μ' = μ - b``): exact, as the norm sees ``Wx + b - μ``."""
    bias = state.pop(bias_key)
    mean_key = f"{norm_prefix}.running_mean"
    if mean_key not in state:
        raise ValueError(f"cannot fold {bias_key}: no {mean_key} to fold it into")
    mean = state[mean_key]
    if bias.shape != mean.shape:
        raise ValueError(
            f"cannot fold {bias_key} {tuple(bias.shape)} into {mean_key} {tuple(mean.shape)}"
        )
    state[mean_key] = (mean.double() - bias.double()).to(mean.dtype)


def fold_bias_into_next_conv(state: State, bias_key: str, next_prefix: str) -> None:
    """Remove a value-projection bias ``b`` and add ``W_o b`` to the bias of the 1x1 conv (or
    linear layer) at ``next_prefix``; exact when only convex averages (attention, average
    pooling) lie between the two."""
    bias = state.pop(bias_key).double()
    weight = state[f"{next_prefix}.weight"].double()
    weight = weight.reshape(weight.shape[0], -1)  # (C_out, C_in) for a 1x1 conv or a linear
    if weight.shape[1] != bias.shape[0]:
        raise ValueError(
            f"cannot fold {bias_key} ({bias.shape[0]} values) through {next_prefix}.weight "
            f"with {weight.shape[1]} inputs"
        )
    key = f"{next_prefix}.bias"
    old = state.get(key)
    shift = weight @ bias  # (C_out,)
    state[key] = (shift if old is None else old.double() + shift).to(
        state[f"{next_prefix}.weight"].dtype
    )


def drop_softmax_shift(state: State, bias_key: str) -> None:
    """Remove a bias that adds the same constant to every logit of a softmax (it cancels)."""
    bias = state.pop(bias_key)
    if bias.numel() != 1:
        raise ValueError(
            f"{bias_key} has {bias.numel()} values; only a single logit bias shifts every "
            "softmax logit equally"
        )


def norm_after_biasless(
    module: nn.Module, inputs: Sequence[torch.Tensor], **kwargs: Any
) -> list[tuple[str, str]]:
    """``(layer, norm)`` names: each bias-free Conv/Linear whose output tensor is the input of
    a BatchNorm in one forward pass of ``module(*inputs)`` (run in eval mode, no grad)."""
    names = {m: n for n, m in module.named_modules()}
    produced: dict[int, str] = {}
    alive: list[torch.Tensor] = []  # keeps ids unique while the pass runs
    pairs: list[tuple[str, str]] = []
    handles = []

    def after_layer(layer: nn.Module, args: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor) and getattr(layer, "bias", None) is None:
            produced[id(out)] = names[layer]
            alive.append(out)

    def before_norm(norm: nn.Module, args: Any) -> None:
        source = produced.get(id(args[0])) if args else None
        if source is not None and (source, names[norm]) not in pairs:
            pairs.append((source, names[norm]))

    for child in module.modules():
        if isinstance(child, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            handles.append(child.register_forward_hook(after_layer))
        elif isinstance(child, nn.modules.batchnorm._BatchNorm):
            handles.append(child.register_forward_pre_hook(before_norm))
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(*inputs, **kwargs)
    finally:
        module.train(was_training)
        for handle in handles:
            handle.remove()
    return pairs
