"""Loading is safe and every failure names the file and the keys."""

from __future__ import annotations

import argparse

import pytest
import torch
from _reference import logits, randomize

from attnzoo import models
from attnzoo.weights import read_checkpoint, read_plan, save_safetensors


@pytest.fixture(scope="module")
def resnet18_state() -> dict[str, torch.Tensor]:
    """A ResNet-18 in torchvision's layout (attnzoo's plain resnet18 uses the same keys)."""
    return randomize(models.create("resnet18", num_classes=7), seed=2).state_dict()


def test_missing_key_is_named(resnet18_state, tmp_path):
    state = dict(resnet18_state)
    del state["layer1.0.conv1.weight"]
    path = tmp_path / "missing.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"missing\.pth.*missing keys: layer1\.0\.conv1\.weight"):
        models.create("resnet18", weights=path)


def test_unexpected_key_is_named(resnet18_state, tmp_path):
    path = tmp_path / "extra.pth"
    torch.save({**resnet18_state, "head.weight": torch.zeros(4, 64)}, path)
    with pytest.raises(ValueError, match=r"extra\.pth: unrecognised checkpoint layout"):
        read_plan(path)
    with pytest.raises(ValueError, match=r"extra\.pth: not a torchvision .*unexpected keys: head"):
        read_plan(path, weights_format="torchvision")
    torch.save({**resnet18_state, "layer1.0.se.fc1.weight": torch.zeros(4, 64, 1, 1)}, path)
    with pytest.raises(ValueError, match=r"extra\.pth: not a timm .*missing keys: layer1\.0\.se"):
        read_plan(path)  # one SE module in a plain network: the others are missing


def test_wrong_forced_layout_is_refused(resnet18_state, tmp_path):
    path = tmp_path / "tv.pth"
    torch.save(resnet18_state, path)
    with pytest.raises(ValueError, match=r"tv\.pth: not a jongchan_cbam checkpoint: missing"):
        read_plan(path, weights_format="jongchan_cbam")
    with pytest.raises(ValueError, match="unknown weights format 'nope'"):
        read_plan(path, weights_format="nope")


def test_unknown_layout_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match=r"other\.pth: unrecognised checkpoint layout"):
        read_plan(path)


@pytest.mark.parametrize("kind", ["pth", "safetensors"])
def test_truncated_file_is_named(resnet18_state, tmp_path, kind):
    path = tmp_path / f"full.{kind}"
    if kind == "pth":
        torch.save(resnet18_state, path)
    else:
        save_safetensors(resnet18_state, path)
    cut = tmp_path / f"cut.{kind}"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"cut\.{kind}: cannot read it .*truncated or corrupt"):
        read_checkpoint(cut)


def test_pickled_objects_are_refused(resnet18_state, tmp_path):
    path = tmp_path / "pickled.pth.tar"
    torch.save({"state_dict": resnet18_state, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(ValueError, match=r"pickled\.pth\.tar: refused: .*pickled Python objects"):
        read_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.pth"):
        read_checkpoint(tmp_path / "nothing.pth")


def test_wrapper_and_prefix_are_unwrapped(resnet18_state, tmp_path):
    path = tmp_path / "wrapped.pth.tar"
    wrapped = {f"module.{k}": v for k, v in resnet18_state.items()}
    torch.save({"epoch": 3, "state_dict": wrapped, "optimizer": {"state": {}}}, path)
    state, _ = read_checkpoint(path)
    assert state.keys() == resnet18_state.keys()


def test_architecture_and_attention_must_match_the_file(resnet18_state, tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(resnet18_state, path)
    with pytest.raises(ValueError, match=r"r18\.pth holds a resnet18 .*resnet50 was asked"):
        models.create("resnet50", weights=path)
    with pytest.raises(ValueError, match=r"holds a resnet18 \(torchvision.*attention='se'"):
        models.create("resnet18", attention="se", weights=path)
    with pytest.raises(ValueError, match="weights_format applies with weights"):
        models.create("resnet18", weights_format="timm")


def test_new_head_for_fine_tuning(resnet18_state, tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(resnet18_state, path)
    same = models.create("resnet18", weights=path)
    tuned = models.create("resnet18", num_classes=3, weights=path)
    assert same.fc.out_features == 7 and tuned.fc.out_features == 3
    for key, value in tuned.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(value, resnet18_state[key]), key


def test_safetensors_conversion_round_trip(resnet18_state, tmp_path):
    from attnzoo.weights.build import build_model

    path = tmp_path / "r18.pth"
    torch.save(resnet18_state, path)
    plan = read_plan(path)
    out = save_safetensors(plan.state, tmp_path / "r18.safetensors", plan.recipe())
    again = read_plan(out)
    assert again.layout == "torchvision" and again.arch == "resnet18"
    x = torch.randn(1, 3, 32, 32)
    a, b = build_model(plan), build_model(again)
    assert torch.equal(logits(a, x), logits(b, x))


@pytest.mark.parametrize("content", [b"root:x:0:0:root:/root:/bin/bash\n", bytes(range(256)) * 4])
def test_a_file_that_is_not_a_checkpoint_is_named_not_called_pickled(tmp_path, content):
    # Text or random bytes make the weights-only unpickler fail in arbitrary ways (IndexError,
    # "Unsupported operand"): that is a damaged file, not one that holds Python objects.
    path = tmp_path / "notes.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"notes\.pth: cannot read it as a PyTorch checkpoint"):
        read_checkpoint(path)
