"""GAttANet on layers that declare no channel count (ReLU, pooling): keys and queries are
materialised from the layer's first output, so ``wrap`` needs no ``example_input``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnzoo.gattanet import wrap

LAYERS = ["features.1", "features.3", "head.1"]  # ReLU, MaxPool2d, ReLU


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, padding=1), nn.MaxPool2d(2)
        )
        self.head = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return Net()


def batch() -> torch.Tensor:
    return torch.randn(2, 3, 8, 6, generator=torch.Generator().manual_seed(1))


def test_parameter_free_layers_are_inferred_on_the_first_forward():
    model = make_model()
    wrapper = wrap(model, LAYERS, d=4)
    assert all(wrapper.layer_attention(n).is_lazy for n in LAYERS)
    assert "inferred at the first forward" in repr(wrapper)
    optimizer = torch.optim.SGD(wrapper.parameters(), lr=0.1)  # before the first forward
    with pytest.raises(ValueError, match="uninitialized parameter"):  # shapes unknown yet
        sum(p.numel() for p in wrapper.parameters())
    x = batch()
    plain = model(x)
    out = wrapper(x)
    torch.testing.assert_close(out, plain, rtol=0, atol=0)  # α = 0: the plain model
    counts = [wrapper.layer_attention(n).channels for n in LAYERS]
    assert counts == [6, 5, 7]
    assert [tuple(wrapper.layer_attention(n).key.shape) for n in LAYERS] == [(6, 4), (5, 4), (7, 4)]
    # the optimizer built before materialisation trains the same parameter objects
    with torch.no_grad():
        for name in LAYERS:
            wrapper.layer_attention(name).alpha.fill_(0.5)
    key = wrapper.layer_attention("features.1").key
    before = key.detach().clone()
    wrapper(x).square().sum().backward()
    optimizer.step()
    assert key.grad is not None and not torch.equal(key.detach(), before)


def test_state_dict_loads_into_a_fresh_lazy_wrapper():
    trained = wrap(make_model(), LAYERS, d=4)
    x = batch()
    trained(x)
    with torch.no_grad():
        for name in LAYERS:
            trained.layer_attention(name).alpha.fill_(0.3)
    fresh = wrap(make_model(), LAYERS, d=4)
    assert fresh.layer_attention("head.1").is_lazy
    fresh.load_state_dict(trained.state_dict())
    assert not any(fresh.layer_attention(n).is_lazy for n in LAYERS)
    torch.testing.assert_close(fresh(x), trained(x), rtol=0, atol=0)


def test_explicit_channels_are_validated_and_checked_at_the_first_forward():
    with pytest.raises(ValueError, match=r"channels\['features.1'\]=0 is not allowed"):
        wrap(make_model(), LAYERS, channels={"features.1": 0})
    wrong = wrap(make_model(), LAYERS, channels={"features.1": 9})
    with pytest.raises(ValueError, match="built for 9 channels, got 6"):
        wrong(batch())
