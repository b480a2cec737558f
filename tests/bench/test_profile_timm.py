"""timm peers of `attnzoo profile`: each computes the same function as our module.

A speed ratio only means something if both sides compute the same thing. For every entry of
TIMM_PEERS, ours (with the peer's ``ours`` options) and timm's layer are given the same random
weights; outputs and gradients (input and every parameter) must agree in float64, in train
mode (as timed) and in eval mode.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _vision_imports import import_timm
from attnzoo.bench.profile import (
    TIMM_PEERS,
    Peer,
    build_at_shape,
    copy_weights_to_peer,
    peer_difference,
    profile_modules,
)
from attnzoo.registry import module_info

timm_layers = import_timm().layers

CASES = [
    pytest.param(name, peer, id=f"{name}-{index}")
    for name, peers in TIMM_PEERS.items()
    for index, peer in enumerate(peers)
]
# (C, H, W): odd, non-square and a ResNet-like width; SK needs C divisible by its 32 groups
SHAPES = [(32, 7, 9), (64, 6, 6)]


def _pair(name: str, peer: Peer, shape: tuple[int, int, int], seed: int):
    channels, height, width = shape
    ours = build_at_shape(name, channels, height, width, **peer.ours).double()
    theirs = peer.build(timm_layers, channels).double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in ours.parameters():  # random: the zero-initialised layers would hide a lot
            param.copy_(0.5 * torch.randn(param.shape, generator=generator, dtype=param.dtype))
        for buffer_name, buffer in ours.named_buffers():
            if buffer_name.endswith("running_var"):
                buffer.copy_(0.5 + torch.rand(buffer.shape, generator=generator))
            elif buffer_name.endswith("running_mean"):
                buffer.copy_(torch.randn(buffer.shape, generator=generator))
        for param_name, param in theirs.named_parameters():
            if param_name in peer.unmapped:  # must not matter: give it something non-zero
                param.copy_(torch.randn(param.shape, generator=generator, dtype=param.dtype))
    copy_weights_to_peer(ours, theirs, peer)
    x = torch.randn(4, channels, height, width, generator=generator, dtype=torch.float64)
    return ours, theirs, x


def _run(module: nn.Module, x: torch.Tensor, upstream: torch.Tensor):
    x = x.clone().requires_grad_(True)
    out = module(x)
    (out * upstream).sum().backward()
    return out.detach(), x.grad


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name,peer", CASES)
def test_peer_computes_the_same_function(name, peer, shape):
    ours, theirs, x = _pair(name, peer, shape, seed=sum(shape))
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=x.dtype)
    for train in (True, False):
        ours.train(train)
        theirs.train(train)
        ours.zero_grad()
        theirs.zero_grad()
        out, grad = _run(ours, x, upstream)
        ref_out, ref_grad = _run(theirs, x, upstream)
        assert not torch.allclose(out, x, atol=1e-3), "a gate that does nothing tests nothing"
        torch.testing.assert_close(out, ref_out, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-10)
        theirs_params = dict(theirs.named_parameters())
        for key, param in ours.named_parameters():
            prefix = next(p for p in peer.weights if key.startswith(p))
            other = theirs_params[peer.weights[prefix] + key[len(prefix) :]]
            torch.testing.assert_close(
                param.grad.reshape(other.shape), other.grad, rtol=1e-9, atol=1e-10
            )
    # the same running statistics after the train-mode passes (BN momentum included)
    theirs_buffers = dict(theirs.named_buffers())
    for key, buffer in ours.named_buffers():
        prefix = next(p for p in peer.weights if key.startswith(p))
        torch.testing.assert_close(
            buffer, theirs_buffers[peer.weights[prefix] + key[len(prefix) :]]
        )


def test_every_timm_mechanism_of_ours_has_a_peer():
    # timm.layers mechanisms (create_attn.py) that are ours too; the rest of timm's list
    # (ese, ceca, ecam, lcbam, coord, splat, lambda, halo, bottleneck, bat...) are other
    # mechanisms that attnzoo does not implement.
    assert set(TIMM_PEERS) == {"se", "eca", "ge", "cbam", "gc", "nonlocal", "sk"}
    for name in TIMM_PEERS:
        module_info(name)  # every key is a registered module


def test_peer_difference_sees_a_different_function():
    # GC with timm's own LayerNorm eps (1e-6 instead of the official 1e-5) differs slightly;
    # CBAM's paper form (spatial conv with bias, no BN) cannot even be mapped onto timm's.
    torch.manual_seed(0)  # a fixed draw: how much eps matters depends on the random weights
    (gc_add, _) = TIMM_PEERS["gc"]
    ours = build_at_shape("gc", 64, 6, 6)
    theirs = gc_add.build(timm_layers, 64)
    x = torch.randn(2, 64, 6, 6)
    assert peer_difference(ours, theirs, gc_add, (x,)) < 1e-5
    theirs.mlp_add.norm.eps = 10.0  # far from 1e-5: a clearly different function
    assert peer_difference(ours, theirs, gc_add, (x,)) > 1e-3
    (cbam,) = TIMM_PEERS["cbam"]
    with pytest.raises(ValueError, match=r"spatial_conv\.bias"):
        copy_weights_to_peer(build_at_shape("cbam", 32, 6, 6), cbam.build(timm_layers, 32), cbam)


def test_profile_rows_with_timm_peers():
    rows = profile_modules(
        ["se", "ge"], [(32, 6, 6)], batch=2, min_run_time=0.01, log=lambda _: None
    )
    assert [(r.module, r.options) for r in rows] == [("se", None), ("ge", None), ("ge", "extent=4")]
    for row in rows:
        assert row.error is None and row.peer.startswith("timm.layers.")
        assert row.peer_max_rel_diff < 1e-5
        assert row.ratio_to_peer == pytest.approx(
            row.forward_backward_ms / row.peer_forward_backward_ms
        )
