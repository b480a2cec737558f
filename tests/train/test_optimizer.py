"""The optimizers run in PyTorch's fused form, with the result of the per-tensor one (to
float rounding: the fused kernel orders the operations differently)."""

import pytest
import torch

from attnzoo import models
from attnzoo.train.config import TrainConfig
from attnzoo.train.steps import make_optimizer


def _train(optimizer_factory, steps: int = 12) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = models.create("resnet8", num_classes=4, attention="se")
    optimizer = optimizer_factory(model)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for group in optimizer.param_groups:
            group["lr"] *= 0.9  # a changing learning rate, as under the schedules
        x = torch.randn(6, 3, 12, 12, generator=generator)
        y = torch.randint(0, 4, (6,), generator=generator)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_fused_optimizer_equals_the_per_tensor_one(name):
    config = TrainConfig(
        model="resnet8", optimizer=name, lr=3e-3 if name == "adamw" else 0.1, nesterov=True
    )
    ours = make_optimizer(config, torch.nn.Linear(2, 2))
    assert ours.defaults["fused"] is True
    if name == "adamw":

        def reference(model):
            return torch.optim.AdamW(
                model.parameters(), lr=config.lr, weight_decay=config.weight_decay, foreach=False
            )
    else:

        def reference(model):
            return torch.optim.SGD(
                model.parameters(), lr=config.lr, momentum=config.momentum, nesterov=True,
                weight_decay=config.weight_decay, foreach=False,
            )  # fmt: skip

    fast = _train(lambda model: make_optimizer(config, model))
    slow = _train(reference)
    torch.manual_seed(0)
    start = [
        p.detach() for p in models.create("resnet8", num_classes=4, attention="se").parameters()
    ]
    moved = max(float((a - b).abs().max()) for a, b in zip(slow, start, strict=True))
    apart = max(float((a - b).abs().max()) for a, b in zip(fast, slow, strict=True))
    # Training moved the weights (by about 0.1), the two forms differ by float rounding only
    # (3e-7 for AdamW, 2e-5 for SGD at lr 0.1 after 12 steps).
    assert moved > 0.01 and apart < 1e-3 * moved


def test_parameters_the_fused_kernels_do_not_take_get_the_foreach_form():
    model = torch.nn.Linear(2, 2).to(torch.float64).to("meta")
    optimizer = make_optimizer(TrainConfig(model="resnet8", optimizer="adamw"), model)
    assert optimizer.defaults["foreach"] is True and not optimizer.defaults.get("fused")
