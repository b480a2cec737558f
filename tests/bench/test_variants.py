"""Ablation variants on the leaderboard: ``NAME[key=value,...]`` entries."""

import json

import pytest
import torch

from _fashion_files import write_fashion
from attnzoo.bench.entries import BenchSettings, parse_variant, resolve_entries, split_names
from attnzoo.bench.runs import run_one
from attnzoo.modules.gala import GALA

TINY_DATA = {"num_images": 48, "num_test": 16, "num_classes": 4, "clutter": 1}


def test_the_list_splits_outside_brackets_and_quotes():
    text = 'se, gala[stages=[2,3],squash="a,b"] ,gala+maps[map_weight=0.3],gattanet'
    assert split_names(text) == [
        "se", 'gala[stages=[2,3],squash="a,b"]', "gala+maps[map_weight=0.3]", "gattanet",
    ]  # fmt: skip
    for bad in ("gala[stages=[2,3]", "gala]", 'gala[squash="tanh]'):
        with pytest.raises(ValueError, match="--attentions"):
            split_names(bad)


def test_values_are_json_or_plain_strings():
    assert parse_variant("se") == ("se", {})
    assert parse_variant('gala[stages=[2,3],squash=sigmoid,gate_init="code"]') == (
        "gala",
        {"stages": [2, 3], "squash": "sigmoid", "gate_init": "code"},
    )
    assert parse_variant("gattanet[iterations=3,d=8]") == ("gattanet", {"iterations": 3, "d": 8})
    for bad, why in (
        ("gala[]", "empty option list"),
        ("gala[squash]", "expected key=value"),
        ("gala[d=1,d=2]", "given twice"),
        ("gala[d=1]x", "ending in"),
        ("[d=1]", "expected NAME"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_variant(bad)


def test_a_variant_builds_the_module_with_its_options():
    settings = BenchSettings(image_size=16, seeds=[0], data_options=TINY_DATA)
    names = (
        "gala,gala[placement=block_end,stages=[2,3],squash=sigmoid],"
        "gala+maps[map_weight=0.25],gattanet[iterations=1]"
    )
    entries, skipped = resolve_entries(names, settings)
    assert not skipped
    by_name = {e.name: e for e in entries}
    variant = by_name["gala[placement=block_end,stages=[2,3],squash=sigmoid]"]
    assert dict(variant.attention_options) == {
        "placement": "block_end", "stages": [2, 3], "squash": "sigmoid",
    }  # fmt: skip
    assert variant.map_weight == 0.0
    assert by_name["gala+maps[map_weight=0.25]"].map_weight == 0.25
    assert dict(by_name["gattanet[iterations=1]"].attention_options) == {"iterations": 1}
    # The options reach the model: GALA in stages 2 and 3 (ResNet-8: one block each), sigmoid.
    from attnzoo.train.engine import build_model, load_split

    config = settings.config(variant, 0)
    model = build_model(config, load_split(config, "test"))
    galas = [m for m in model.modules() if isinstance(m, GALA)]
    assert len(galas) == 2 and all(g.squash_name == "sigmoid" for g in galas)
    assert torch.sigmoid(torch.tensor(0.3)) == galas[0].squash(torch.tensor(0.3))


def test_bad_variants_fail_before_training():
    settings = BenchSettings(image_size=16, seeds=[0], data_options=TINY_DATA)
    with pytest.raises(ValueError, match="baseline has no attention"):
        resolve_entries("baseline[d=1]", settings)
    with pytest.raises(ValueError, match="map_weight applies to NAME\\+maps only"):
        resolve_entries("gala[map_weight=2]", settings)
    with pytest.raises(ValueError, match="map_weight must be a number > 0"):
        resolve_entries("gala+maps[map_weight=-1]", settings)
    with pytest.raises(ValueError, match="squash"):  # the module's own option check
        resolve_entries("gala[squash=cube]", settings)


def test_a_variant_trains_in_its_own_run_folder(tmp_path):
    settings = BenchSettings(
        image_size=8, seeds=[0], data_options=TINY_DATA, batch_size=16, max_steps=2
    )
    entries, _ = resolve_entries("gala[squash=sigmoid]", settings)
    variant = entries[1]
    config = settings.config(variant, 0)
    result, how = run_one(config, tmp_path / "run")
    assert how == "trained" and 0.0 <= result["accuracy"] <= 1.0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["attention"] == "gala" and saved["attention_options"] == {"squash": "sigmoid"}


def test_num_images_takes_the_first_n_of_a_real_dataset(tmp_path, capsys):
    from attnzoo.cli import main

    root = tmp_path / "fmnist"
    root.mkdir()
    write_fashion(root, n=40, gz=False)
    write_fashion(root, n=12, gz=False, split="test")
    common = ["bench", "--data", "fashion-mnist", "--data-root", str(root), "--seeds", "1"]
    common += ["--attentions", "se", "--batch-size", "8", "--max-steps", "1", "--no-plots"]
    out = tmp_path / "board"
    assert main([*common, "--num-images", "16", "--out", str(out)]) == 0
    saved = json.loads((out / "runs" / "se" / "seed0" / "config.json").read_text())
    assert saved["limit_train"] == 16 and saved["data"] == "fashion-mnist"
    board = json.loads((out / "results.json").read_text())
    assert board["meta"]["recipe"]["num_images"] == 16  # the subset is part of the recipe
    assert "num_images=16" in (out / "results.md").read_text()
    # More than the split holds: an error before any training, not a silently smaller set.
    with pytest.raises(SystemExit) as exit_info:
        main([*common, "--num-images", "41", "--out", str(tmp_path / "too_many")])
    assert exit_info.value.code == 1
    assert "has only 40 images" in capsys.readouterr().err
    assert not (tmp_path / "too_many" / "runs").exists()
    # The synthetic-only flags stay synthetic-only.
    with pytest.raises(SystemExit) as exit_info:
        main([*common, "--num-test", "5", "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2


def test_gattanet_runs_are_started_first_and_the_table_keeps_its_order(tmp_path, capsys):
    # The slowest runs (two passes) go first so that no core idles behind one at the end.
    from attnzoo.cli import main

    tiny = ["--image-size", "8", "--num-images", "24", "--num-test", "8", "--batch-size", "8"]
    args = ["bench", "--attentions", "se,gattanet", "--seeds", "1", "--jobs", "1", "--no-plots"]
    assert main([*args, *tiny, "--max-steps", "1", "--out", str(tmp_path)]) == 0
    done = [line for line in capsys.readouterr().err.splitlines() if " done, " in line]
    assert [line.split("] ")[1].split(" seed")[0] for line in done] == [
        "gattanet", "baseline", "se",
    ]  # fmt: skip
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [row["entry"] for row in rows] == ["baseline", "se", "gattanet"]
