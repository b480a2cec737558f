"""`attnzoo profile`: the output schema, shape parsing and the memory tracker."""

import json

import pytest
import torch

from attnzoo.bench.memory import peak_memory_bytes
from attnzoo.bench.profile import ProfileRow, parse_shapes, profile_modules
from attnzoo.cli import main


def test_peak_memory_counts_live_tensors_only():
    n = 512

    def quadratic():
        x = torch.randn(n, 8)
        scores = x @ x.T  # n*n floats live at once
        return scores.softmax(-1) @ x

    def linear():
        x = torch.randn(n, 8)
        for _ in range(4):
            x = x * 2  # each intermediate dies at once
        return x

    square = n * n * 4
    assert square <= peak_memory_bytes(quadratic) <= 2 * square + 4 * n * 8 * 4
    assert peak_memory_bytes(linear) <= 3 * n * 8 * 4


def test_parse_shapes():
    assert parse_shapes("cifar") == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    assert parse_shapes("8x5x7, resnet50")[:2] == [(8, 5, 7), (256, 56, 56)]
    with pytest.raises(ValueError, match="CxHxW"):
        parse_shapes("8x5")


def test_profile_rows_have_every_measurement():
    rows = profile_modules(
        ["se"], [(16, 8, 8)], batch=2, min_run_time=0.01, use_timm=False, log=lambda _: None
    )
    (row,) = rows
    assert isinstance(row, ProfileRow) and row.error is None
    assert row.params == 16 * 1 + 1 + 1 * 16 + 16  # C->C/16 (=1) -> C with biases
    assert row.macs == 2 * (16 + 16)  # batch 2 x (1x1 conv 16->1 + 1x1 conv 1->16) on GAP
    assert row.forward_ms > 0 and row.forward_backward_ms > 0
    assert row.peak_memory_mib > 0 and row.bandwidth_fraction > 0


def test_profile_command_writes_schema(tmp_path, capsys):
    assert (
        main(
            [
                "profile",
                "--modules",
                "se",
                "--shapes",
                "16x6x6",
                "--batch",
                "1",
                "--min-run-time",
                "0.01",
                "--no-timm",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    data = json.loads((tmp_path / "profile.json").read_text())
    assert data["meta"]["device"] == "cpu"
    assert set(data["rows"][0]) >= {
        "module",
        "params",
        "macs",
        "forward_ms",
        "forward_backward_ms",
        "peak_memory_mib",
        "ratio_to_peer",
    }
    assert (tmp_path / "profile.csv").read_text().startswith("module,")
    assert "| se | 16x6x6 |" in capsys.readouterr().out


def test_every_module_profiles_at_a_resnet_stage_shape():
    """Each module's example inputs fit the module built at another width (what profile,
    export and attach do), so no row is 'not applicable' at an ordinary stage shape."""
    from attnzoo import list_modules

    rows = profile_modules(
        list_modules(),
        [(64, 8, 8)],
        batch=2,
        min_run_time=0.001,
        use_timm=False,
        log=lambda _: None,
    )
    failed = {row.module: row.error for row in rows if row.error}
    assert not failed
