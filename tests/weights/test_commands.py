"""``attnzoo convert`` and ``--weights`` on train / eval / viz / export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _reference import logits, randomize

from attnzoo import models
from attnzoo.cli import main
from attnzoo.train.checkpoint import load_checkpoint
from attnzoo.weights import Plan, read_plan, save_safetensors
from attnzoo.weights.build import build_model


@pytest.fixture(scope="module")
def cbam_weights(tmp_path_factory) -> tuple:
    """A resnet18 + CBAM with random weights, as an attnzoo safetensors file (5 classes)."""
    torch.manual_seed(0)
    model = randomize(models.create("resnet18", attention="cbam", num_classes=5), seed=1)
    plan = Plan("attnzoo", "resnet18", 5, {}, attention="cbam")
    path = tmp_path_factory.mktemp("weights") / "cbam18.safetensors"
    save_safetensors(model.state_dict(), path, plan.recipe())
    return path, model.state_dict()


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """ROOT/{train,test}/<class>/*.npy: 3 small RGB images in two classes per split."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label, count in (("cat", 2), ("dog", 1)):
            (root / split / label).mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 256, size=(40, 36, 3), dtype=np.uint8)
                np.save(root / split / label / f"{i}.npy", image)
    return root


def test_convert_command_writes_an_attnzoo_safetensors(tmp_path, capsys):
    state = randomize(models.create("resnet18", num_classes=4), seed=3).state_dict()
    source = tmp_path / "released.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 1}, source)
    out = tmp_path / "r18.safetensors"
    assert main(["convert", str(source), str(out)]) == 0
    assert "torchvision layout, resnet18, 4 classes" in capsys.readouterr().out
    plan = read_plan(out)
    assert (plan.layout, plan.arch, plan.num_classes) == ("torchvision", "resnet18", 4)
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(logits(build_model(plan), x), logits(build_model(read_plan(source)), x))
    with pytest.raises(SystemExit):
        main(["convert", str(source), str(tmp_path / "r18.pth")])
    assert "must be a .safetensors file" in capsys.readouterr().err


def test_viz_with_weights_draws_a_folder(cbam_weights, image_folder, tmp_path, capsys):
    out = tmp_path / "viz"
    args = ["viz", "--weights", str(cbam_weights[0]), "--data", "folder"]
    args += ["--data-root", str(image_folder), "--image-size", "32", "--out", str(out)]
    assert main(args) == 0
    record = json.loads((out / "viz.json").read_text())
    assert record["weights"] == str(cbam_weights[0]) and record["images"] == 3
    assert record["column_kinds"].count("spatial") == 8  # one CBAM per block of resnet18
    assert (out / "attention_000.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        main(["viz", "--weights", str(cbam_weights[0]), "--checkpoint", str(tmp_path)])
    assert "exactly one of --checkpoint" in capsys.readouterr().err


def test_eval_with_weights(cbam_weights, image_folder, capsys):
    args = ["eval", "--weights", str(cbam_weights[0]), "--data", "folder"]
    assert main([*args, "--data-root", str(image_folder), "--image-size", "32"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 3 and result["model"] == "resnet18+cbam"
    assert 0.0 <= result["accuracy"] <= 1.0


def test_train_from_weights_keeps_them_and_gets_a_new_head(cbam_weights, tmp_path, capsys):
    path, state = cbam_weights
    run = tmp_path / "run"
    args = ["train", "--model", "resnet18", "--attention", "cbam", "--weights", str(path)]
    args += ["--data", "synthetic", "--data-opt", "num_images=8", "--data-opt", "num_test=4"]
    args += ["--image-size", "32", "--batch-size", "4", "--epochs", "1", "--max-steps", "1"]
    args += ["--lr", "1e-12", "--weight-decay", "0", "--progress", "none", "--device", "cpu"]
    assert main([*args, "--out", str(run)]) == 0
    trained, meta, _ = load_checkpoint(run)
    assert meta["config"]["weights"] == str(path)
    assert trained["fc.weight"].shape[0] != state["fc.weight"].shape[0]  # the data's classes
    for key in ("conv1.weight", "layer2.0.conv1.weight", "layer3.1.bn2.1.mlp.0.weight"):
        # lr 1e-12: the file's weights, up to one negligible step
        torch.testing.assert_close(trained[key], state[key], rtol=0, atol=1e-9)


@pytest.mark.slow
def test_export_with_weights(cbam_weights, tmp_path, capsys):
    out = tmp_path / "cbam18.pt2"
    args = ["export", "--weights", str(cbam_weights[0]), "--format", "torch-export"]
    assert main([*args, "--image-size", "32", "--static", "--out", str(out)]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["ok"] and out.is_file()
