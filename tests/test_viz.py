"""attnzoo.viz: attention grids drawn from a model's recorded maps, and `attnzoo viz`."""

import json
import struct

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attnzoo
from attnzoo import models
from attnzoo.cli import main
from attnzoo.viz import attention_grid, capture_attention

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    """(width, height) from the IHDR chunk; fails on anything that is not a PNG."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


class TwoMaps(nn.Module):
    """conv -> cbam -> conv -> scse -> pool -> fc: two modules that record a spatial map."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.cbam = attnzoo.create("cbam", 8, rd_ratio=1 / 4)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.scse = attnzoo.create("scse", 8, rd_ratio=1 / 4)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = self.cbam(torch.relu(self.conv1(x)))
        x = self.scse(torch.relu(self.conv2(x)))
        return self.fc(x.mean(dim=(2, 3)))


def test_capture_returns_each_modules_own_map():
    torch.manual_seed(0)
    model = TwoMaps().train()
    x = torch.randn(2, 3, 12, 10)
    capture = capture_attention(model, x)
    assert model.training, "training flag restored"
    assert list(capture.spatial) == ["cbam", "scse"] and capture.agreement == {}
    assert capture.spatial["cbam"].shape == (2, 1, 12, 10)
    assert capture.spatial["scse"].shape == (2, 1, 6, 5)
    # Recompute CBAM's spatial map directly: the module's spatial gate on its channel-gated input.
    model.eval()
    with torch.no_grad(), attnzoo.recording_maps(model.cbam):
        model.cbam(torch.relu(model.conv1(x)))
        expected = model.cbam.maps["spatial"]
    torch.testing.assert_close(capture.spatial["cbam"], expected)
    assert attnzoo.collect_maps(model) == {}, "recording switched off again"


def test_grid_columns_panels_and_overlays(tmp_path):
    torch.manual_seed(0)
    model = TwoMaps()
    x = torch.randn(3, 3, 12, 10)
    truth = torch.zeros(3, 1, 12, 10)
    truth[0, 0, 2:5, 3:6] = 1.0
    truth[2, 0, 7:, :4] = 0.5  # image 1 has no map (all zeros)
    grid = attention_grid(model, x, importance_maps=truth, row_titles=["a", "b", "c"])
    assert grid.columns == ["image", "ground truth", "cbam (cbam)", "scse (scse)"]
    assert grid.column_kinds == ["image", "ground_truth", "spatial", "spatial"]
    assert grid.rows == 3 and grid.panels == 12
    axes = grid.figure.axes
    assert len(axes) == 12
    # Row-major axes: panel (row, col) = axes[row * 4 + col]. The scse column overlays the
    # scse map upsampled bilinearly to 12x10 and min-max scaled.
    recorded = capture_attention(model, x).spatial["scse"]
    up = F.interpolate(recorded, size=(12, 10), mode="bilinear", align_corners=False)[:, 0]
    for row in range(3):
        layers = axes[row * 4 + 3].get_images()
        assert len(layers) == 2  # image, then the map
        want = (up[row] - up[row].min()) / (up[row].max() - up[row].min())
        got = torch.as_tensor(layers[1].get_array().data)
        torch.testing.assert_close(got.float(), want.float(), atol=1e-6, rtol=0)
        assert layers[1].get_alpha() == 0.5
    # Ground truth: drawn where an image has a map, blank (image only) where it has none.
    assert [len(axes[row * 4 + 1].get_images()) for row in range(3)] == [2, 1, 2]
    path = grid.save(tmp_path / "g.png", dpi=50)
    width, height = png_size(path)
    assert (width, height) == (round(1.6 * 4 * 50), round(1.6 * 3 * 50))


def test_gattanet_agreement_columns_conv_maps_and_dense_bars():
    torch.manual_seed(0)
    model = models.create(
        "gattanet_toy",
        attention="gattanet",
        num_classes=5,
        image_size=16,
        widths=(4, 8, 8),
        hidden=12,
    )
    grid = attention_grid(model, torch.randn(2, 3, 16, 16))
    assert grid.columns == ["image"] + [
        f"GAttANet {n}" for n in ("conv1", "conv2", "conv3", "fc1", "fc2")
    ]
    assert grid.column_kinds[1:] == ["agreement"] * 3 + ["agreement_dense"] * 2
    axes = grid.figure.axes
    assert len(axes) == grid.panels == 12
    assert len(axes[4].patches) == 12 and len(axes[5].patches) == 5  # one bar per unit
    assert len(axes[1].get_images()) == 2  # conv1 agreement over the image


def test_models_without_a_spatial_map_are_refused_with_a_reason():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), attnzoo.create("se", 8))
    with pytest.raises(ValueError, match="recorded no spatial attention map"):
        capture_attention(model, torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\) tensor"):
        capture_attention(model, torch.randn(3, 8, 8))
    with pytest.raises(ValueError, match="importance_maps"):
        attention_grid(TwoMaps(), torch.randn(2, 3, 8, 8), importance_maps=torch.zeros(3, 1, 8, 8))


def test_viz_command_writes_png_grids_of_a_trained_checkpoint(tmp_path, capsys, cbam_checkpoint):
    out = tmp_path / "viz"
    args = ["viz", "--checkpoint", str(cbam_checkpoint), "--num-images", "3"]
    assert main([*args, "--rows-per-grid", "2", "--out", str(out)]) == 0
    record = json.loads((out / "viz.json").read_text())
    # resnet20 has 9 basic blocks, each with a CBAM at the block end.
    cbam_columns = [c for c in record["columns"] if c != "image" and c != "ground truth"]
    assert record["columns"][:2] == ["image", "ground truth"] and len(cbam_columns) == 9
    assert all(c.startswith("layer") and c.endswith(" (cbam)") for c in cbam_columns), cbam_columns
    assert len(record["files"]) == 2 and record["images"] == 3
    for file, rows in zip(record["files"], (2, 1), strict=True):
        width, height = png_size(tmp_path / "viz" / file.split("/")[-1])
        assert (width, height) == (160 * 11, 160 * rows)  # 1.6 in per panel at 100 dpi
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([*args, "--num-images", "0"])
    assert "--num-images must be >= 1" in capsys.readouterr().err
