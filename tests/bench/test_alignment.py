"""Map alignment for every leaderboard entry: Grad-CAM where the model has no spatial map."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from _vision_imports import import_torchvision
from attnzoo import metrics
from attnzoo.bench.alignment import GRADCAM_IMAGES, final_evaluation, gradcam_maps, last_stage
from attnzoo.models import create as create_model
from attnzoo.train import TrainConfig, train
from attnzoo.train.evaluate import evaluate_checkpoint

import_torchvision()  # pytorch-grad-cam imports torchvision (see tests/_vision_imports.py)

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _naive_gradcam(model, layer, images):
    """Grad-CAM (Selvaraju et al. 2017) by hand: weights = spatial mean of d(score of the
    predicted class)/d(activations); map = ReLU(Σ_k w_k A_k), bilinearly resized."""
    saved = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: saved.setdefault("a", out))
    try:
        logits = model(images)
    finally:
        handle.remove()
    activations = saved["a"]  # (N, K, h, w)
    score = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
    (gradients,) = torch.autograd.grad(score, activations)
    weights = gradients.mean(dim=(2, 3), keepdim=True)  # (N, K, 1, 1)
    cam = F.relu((weights * activations).sum(1, keepdim=True))  # (N, 1, h, w)
    return F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("baseline") / "run"
    config = TrainConfig(
        model="resnet20",
        data_options={"num_images": 64, "num_test": 24, "num_classes": 4, "clutter": 2},
        image_size=16,
        batch_size=16,
        epochs=1,
        max_steps=3,
        limit_val=8,
        optimizer="adamw",
        lr=3e-3,
        deterministic=True,
        progress="none",
        device="cpu",
    )
    train(config, run)
    return run


def test_last_stage_of_a_cifar_resnet_is_its_last_residual_stage():
    model = create_model("resnet20", num_classes=4)
    name, layer = last_stage(model, (3, 16, 16))
    assert name == "layer3" and layer is model.layer3


def test_gradcam_of_a_baseline_matches_a_direct_computation():
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=4).eval()
    images = torch.randn(6, 3, 16, 16)
    maps = gradcam_maps(model, model.layer3, images)
    assert maps.shape == (6, 1, 16, 16)
    naive = _naive_gradcam(model, model.layer3, images)
    for got, expected in zip(maps, naive, strict=True):
        # The library rescales each map to [0, 1] (and resizes with OpenCV): compare shapes
        # of the maps by their correlation, which neither rescaling changes much.
        got, expected = got.flatten().double(), expected.flatten().double()
        assert float(got.min()) >= 0.0 and float(got.max()) <= 1.0 + 1e-6
        correlation = torch.corrcoef(torch.stack([got, expected]))[0, 1]
        assert correlation > 0.98


def test_final_evaluation_aligns_a_baseline_through_gradcam(baseline_run):
    result = final_evaluation(baseline_run)
    assert result["map_source"] == "gradcam:layer3"
    assert -1.0 <= result["map_rho"] <= 1.0
    assert result["map_fraction"] == pytest.approx(result["map_rho"] / metrics.CLICKME_CEILING)
    # The whole test split (24 images) is evaluated, though training validated on 8 only.
    whole = evaluate_checkpoint(baseline_run, device="cpu")
    assert whole["images"] == 24
    assert result["accuracy"] == whole["accuracy"] and result["loss"] == pytest.approx(
        whole["loss"]
    )
    assert GRADCAM_IMAGES >= 24


def test_without_gradcam_the_row_says_why(baseline_run):
    """In a fresh process without the tests' torchvision helper: where pytorch-grad-cam cannot
    be imported (as on a machine whose torchvision build does not match torch) the result says
    so; where it can, it is used."""
    code = (
        "import json, sys; from pathlib import Path\n"
        "try:\n    import pytorch_grad_cam; ok = True\nexcept Exception: ok = False\n"
        "from attnzoo.bench.alignment import final_evaluation\n"
        "print(json.dumps([ok, final_evaluation(Path(sys.argv[1]))['map_source']]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(baseline_run)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    importable, source = json.loads(done.stdout.strip().splitlines()[-1])
    if importable:
        assert source == "gradcam:layer3"
    else:
        assert source.startswith("n/a: pytorch-grad-cam unavailable (")


def test_gattanet_is_aligned_through_its_agreement_maps(tmp_path):
    run = tmp_path / "run"
    config = TrainConfig(
        model="resnet20",
        attention="gattanet",
        data_options={"num_images": 32, "num_test": 12, "num_classes": 4, "clutter": 2},
        image_size=16,
        batch_size=16,
        epochs=1,
        max_steps=1,
        limit_val=4,
        progress="none",
        device="cpu",
    )
    train(config, run)
    result = final_evaluation(run)
    assert result["map_source"] == "agreement"
    # The same ρ from the model's agreement maps of its spatial layers (layer1..layer3; the
    # classifier's agreement has no positions).
    from attnzoo.bench.alignment import _load

    model, data, _ = _load(run)
    from attnzoo.data import DeviceLoader

    batch = next(iter(DeviceLoader(data, 12, torch.device("cpu"))))
    with torch.no_grad():
        model(batch["image"])
    spatial = {k: v for k, v in model.agreement.items() if v.dim() == 4}
    assert set(spatial) == {"layer1", "layer2", "layer3"}
    expected = metrics.map_alignment(spatial, batch["map"], batch["has_map"])
    assert result["map_rho"] == pytest.approx(expected.rho)
