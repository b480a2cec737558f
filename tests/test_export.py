"""attnzoo.export: ONNX and torch.export round trips, dynamic where the model allows, and
`attnzoo export` on a trained checkpoint."""

import json

import onnx
import pytest
import torch
from torch import nn

import attnzoo
from attnzoo import models
from attnzoo.cli import main
from attnzoo.export import ExportReport, export_model, size_bound_modules


class Tiny(nn.Module):
    """conv -> attention module -> pool -> fc, small enough to export in seconds."""

    def __init__(self, attention, **options):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.attention = attnzoo.create(attention, 16, **options)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(self.attention(torch.relu(self.conv(x))).mean(dim=(2, 3)))


def test_argument_errors_name_what_was_expected(tmp_path):
    model = Tiny("se")
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="onnx, torch-export"):
        export_model(model, x, "tflite", tmp_path / "m")
    with pytest.raises(ValueError, match=r"\.pt2"):
        export_model(model, x, "torch-export", tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="batch of at least 2"):
        export_model(model, x[:1], "onnx", tmp_path / "m.onnx")
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        export_model(model, x[0], "onnx", tmp_path / "m.onnx")


def test_size_bound_modules_are_found_and_the_verdict_follows_the_tolerance():
    model = nn.Sequential(Tiny("rga_s", spatial_size=(6, 5)), Tiny("se"))
    assert size_bound_modules(model) == {"0.attention": (6, 5)}
    assert size_bound_modules(Tiny("ge", variant="theta", spatial_size=4)) == {"attention": (4, 4)}
    assert size_bound_modules(Tiny("ge")) == {}
    report = ExportReport("onnx", "m.onnx", (2, 3, 8, 8), ["batch"], [], None, [], 2e-4, 1e-4)
    assert not report.ok and not report.to_dict()["ok"]


def _check_dynamic(report, example):
    assert report.ok, report
    assert report.dynamic_dims == ["batch", "height", "width"] and report.static_dims == []
    b, c, h, w = example
    assert report.checked_shapes == [(b, c, h, w), (b + 1, c, h + 8, w + 16)]


@pytest.mark.slow
@pytest.mark.parametrize("attention", ["se", "cbam", "cca"])
def test_torch_export_round_trip_with_dynamic_batch_and_size(tmp_path, attention):
    torch.manual_seed(0)
    model = Tiny(attention).train()
    path = tmp_path / "m.pt2"
    report = export_model(model, torch.randn(2, 3, 8, 8), "torch-export", path)
    _check_dynamic(report, (2, 3, 8, 8))
    assert model.training, "training flag restored"
    # The saved program runs on yet another shape and matches eager.
    loaded = torch.export.load(str(path)).module()
    x = torch.randn(5, 3, 7, 9)
    torch.testing.assert_close(loaded(x), model.eval()(x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("attention", ["se", "cbam", "cca"])
def test_onnx_round_trip_with_dynamic_batch_and_size(tmp_path, attention):
    import onnxruntime

    torch.manual_seed(0)
    model = Tiny(attention).eval()
    path = tmp_path / "m.onnx"
    report = export_model(model, torch.randn(2, 3, 8, 8), "onnx", path)
    _check_dynamic(report, (2, 3, 8, 8))
    graph_input = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in graph_input] == [True, False, True, True]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, 11, 6)
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("fmt,suffix", [("onnx", "onnx"), ("torch-export", "pt2")])
def test_size_bound_module_keeps_its_spatial_size_and_says_why(tmp_path, fmt, suffix):
    torch.manual_seed(0)
    model = Tiny("rga_s", spatial_size=8)
    report = export_model(model, torch.randn(2, 3, 8, 8), fmt, tmp_path / f"m.{suffix}")
    assert report.ok, report
    assert report.dynamic_dims == ["batch"] and report.static_dims == ["height", "width"]
    assert "size-bound" in report.static_reason and "attention (8x8)" in report.static_reason
    assert report.checked_shapes == [(2, 3, 8, 8), (3, 3, 8, 8)]


@pytest.mark.slow
@pytest.mark.parametrize("fmt,suffix", [("onnx", "onnx"), ("torch-export", "pt2")])
def test_gattanet_wrapped_toy_exports_with_dynamic_batch(tmp_path, fmt, suffix):
    torch.manual_seed(0)
    model = models.create(
        "gattanet_toy", attention="gattanet", image_size=16, widths=(4, 8, 8), hidden=12
    )
    with torch.no_grad():  # non-zero alphas: the second pass really modulates the first
        for alpha in model.alphas.values():
            alpha.fill_(0.5)
    report = export_model(model, torch.randn(2, 3, 16, 16), fmt, tmp_path / f"m.{suffix}")
    assert report.ok, report
    # The toy CNN flattens conv3 into fc1: its input size is fixed by construction.
    assert report.dynamic_dims == ["batch"] and report.static_dims == ["height", "width"]
    assert "flatten" in report.static_reason
    assert any("GAttANet" in note for note in report.notes)


@pytest.mark.slow
def test_export_command_on_a_trained_checkpoint(tmp_path, capsys, cbam_checkpoint):
    out = tmp_path / "resnet20_cbam.pt2"
    args = ["export", "--checkpoint", str(cbam_checkpoint), "--format", "torch-export"]
    assert main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "max abs difference vs PyTorch" in printed and "dynamic: batch, height, width" in printed
    record = json.loads(printed.strip().splitlines()[-1])
    assert record["ok"] and record["max_abs_diff"] <= 1e-4 and len(record["mean"]) == 3
    assert record["checked_shapes"] == [[2, 3, 16, 16], [3, 3, 24, 32]]
    assert out.is_file()
    with pytest.raises(SystemExit):
        main([*args, "--out", str(tmp_path / "wrong.onnx")])
    assert ".pt2" in capsys.readouterr().err
