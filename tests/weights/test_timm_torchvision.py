"""timm and torchvision ResNets load into attnzoo with identical eval-mode logits.

Each network is built by the real library with random weights and random BatchNorm statistics,
saved as its own state dict, loaded with ``attnzoo.models.create(..., weights=PATH)``, and the
float64 logits of both are compared."""

from __future__ import annotations

import pytest
import torch
from _reference import assert_same, logits, randomize

from _vision_imports import import_timm, import_torchvision
from attnzoo import models
from attnzoo.weights import read_plan

# timm name -> (attnzoo arch, attention, layout)
TIMM = {
    "resnet18": ("resnet18", None, "torchvision"),
    "resnet34d": ("resnet34", None, "timm"),
    "resnet50d": ("resnet50", None, "timm"),
    "seresnet18": ("resnet18", "se", "timm"),
    "seresnet50": ("resnet50", "se", "timm"),
    "ecaresnet50d": ("resnet50", "eca", "timm"),
    "ecaresnet50t": ("resnet50", "eca", "timm"),
    "skresnet18": ("resnet18", "sk", "timm"),
    "skresnet50": ("resnet50", "sk", "timm"),
}


def _check(reference: torch.nn.Module, path, arch, attention, layout, size=64):
    torch.save(reference.state_dict(), path)
    assert read_plan(path).layout == layout
    model = models.create(arch, attention=attention, num_classes=1000, weights=path)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    assert_same(logits(model, x), logits(reference, x))


@pytest.mark.parametrize("name", sorted(TIMM))
def test_timm_resnets_load_exactly(name, tmp_path):
    timm = import_timm()
    reference = randomize(timm.create_model(name, pretrained=False), seed=3)
    _check(reference, tmp_path / f"{name}.pth", *TIMM[name])


@pytest.mark.parametrize(
    ("name", "arch"), [("resnet18", "resnet18"), ("resnet34", "resnet34"), ("resnet50", "resnet50")]
)
def test_torchvision_resnets_load_exactly(name, arch, tmp_path):
    torchvision = import_torchvision()
    reference = randomize(getattr(torchvision.models, name)(), seed=4)
    _check(reference, tmp_path / f"{name}.pth", arch, None, "torchvision")
