"""`attnzoo bench --num-images A,B`: one board per training-set size, and curves over sizes."""

import json

import pytest

from _vision_imports import import_torchvision
from attnzoo.bench.sizes import epochs_for_size, parse_sizes, size_curves
from attnzoo.cli import main

import_torchvision()  # pytorch-grad-cam (the baseline's map) imports torchvision

TINY = [
    "--image-size", "8", "--num-test", "12", "--num-classes", "3", "--clutter", "1",
    "--batch-size", "8", "--max-steps", "1", "--seeds", "2", "--attentions", "gala+maps",
]  # fmt: skip


def test_parse_sizes():
    assert parse_sizes("1000") == [1000]
    assert parse_sizes("500,250") == [250, 500]
    assert parse_sizes(None) is None
    for bad in ("0", "250,250", "a,b", ""):
        with pytest.raises(ValueError, match="--num-images"):
            parse_sizes(bad)


def test_a_size_list_gives_one_board_per_size(tmp_path, capsys):
    assert main(["bench", "--num-images", "24,16", "--out", str(tmp_path), *TINY]) == 0
    for size in (16, 24):
        board = json.loads((tmp_path / f"n{size}" / "results.json").read_text())
        assert board["meta"]["recipe"]["num_images"] == size
        assert [row["entry"] for row in board["rows"]] == ["baseline", "gala+maps"]
        assert {c["entry"] for c in board["claims"]} == {"gala+maps"}
        config = json.loads(
            (tmp_path / f"n{size}" / "runs" / "baseline" / "seed1" / "config.json").read_text()
        )
        assert config["data_options"]["num_images"] == size
        assert config["data_options"]["seed"] == 0  # the same data for every run seed
        # The steps of the default epochs (8) of the default 1,000 images, at every size.
        assert config["epochs"] == {16: 500, 24: 333}[size] == round(8 * 1000 / size)
    summary = json.loads((tmp_path / "sizes.json").read_text())
    assert summary["sizes"] == [16, 24]
    points = {(p["entry"], p["num_images"]): p for p in summary["points"]}
    assert set(points) == {(e, n) for e in ("baseline", "gala+maps") for n in (16, 24)}
    for (entry, size), point in points.items():
        row = next(
            r
            for r in json.loads((tmp_path / f"n{size}" / "results.json").read_text())["rows"]
            if r["entry"] == entry
        )
        assert point["accuracy_mean"] == pytest.approx(row["accuracy_mean"], abs=1e-6)
        assert point["accuracy_ci_low"] <= point["accuracy_mean"] <= point["accuracy_ci_high"]
        assert point["map_rho_mean"] == pytest.approx(row["map_rho_mean"], abs=1e-6)  # 6 decimals
    assert (tmp_path / "sizes.png").stat().st_size > 0
    assert "| gala+maps | 16 |" in (tmp_path / "sizes.md").read_text()


def test_epochs_keep_the_steps():
    assert [epochs_for_size(10, n, 1000) for n in (250, 500, 1000, 2000, 4000)] == [
        40,
        20,
        10,
        5,
        2,
    ]
    assert epochs_for_size(1, 100_000, 1000) == 1


def test_size_curves_intervals_by_hand():
    rows = [
        {
            "entry": "baseline",
            "seeds": 3,
            "accuracy_per_seed": "0:0.5;1:0.6;2:0.7",
            "map_rho_per_seed": "",
        }
    ]
    (point,) = size_curves({100: rows})
    # mean 0.6, sd 0.1, t(0.975, 2) = 4.302653: half-width 0.1 * 4.302653 / sqrt(3)
    assert point["accuracy_mean"] == pytest.approx(0.6)
    assert point["accuracy_ci_high"] - 0.6 == pytest.approx(0.1 * 4.302653 / 3**0.5, rel=1e-6)
    assert point["map_rho_mean"] is None and point["map_rho_ci_low"] is None
