"""`attnzoo bench`: end to end on a tiny configuration, resume, the paired interval, errors."""

import csv
import json
import math
import shutil
import statistics

import pytest
import torch
from safetensors.torch import load_file
from scipy import stats

from _vision_imports import import_torchvision
from attnzoo.bench.entries import BenchSettings, Entry, parse_seeds, resolve_entries
from attnzoo.bench.runs import run_one
from attnzoo.bench.stats import paired_interval
from attnzoo.cli import main

import_torchvision()  # pytorch-grad-cam (the baseline's map) imports torchvision

TINY = [
    "--image-size", "8", "--num-images", "48", "--num-test", "16",
    "--batch-size", "16", "--max-steps", "2", "--seeds", "1",
]  # fmt: skip
TINY_DATA = {"num_images": 48, "num_test": 16, "num_classes": 4, "clutter": 1}
CSV_COLUMNS = [
    "entry", "attention", "map_weight", "seeds", "accuracy_mean", "accuracy_std",
    "train_accuracy_mean", "delta_mean", "delta_ci_low", "delta_ci_high", "params", "macs",
    "images_per_s", "map_rho_mean", "map_rho_std", "map_fraction_mean", "map_source",
    "accuracy_per_seed", "map_rho_per_seed",
]  # fmt: skip


@pytest.fixture
def one_thread():
    # As `attnzoo bench` does on the CPU: tiny convolutions run fastest on one thread.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert main(["bench", "--attentions", "se,gala+maps", "--out", str(out), *TINY]) == 0
    return out


def test_bench_writes_every_file_with_its_schema(bench_dir):
    with open(bench_dir / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == CSV_COLUMNS
    assert [r["entry"] for r in rows] == ["baseline", "se", "gala+maps"]
    assert [r["map_weight"] for r in rows] == ["0.0", "0.0", "1.0"]

    document = json.loads((bench_dir / "results.json").read_text())
    assert set(document) == {"meta", "rows", "skipped", "failed", "claims"}
    assert document["failed"] == []
    assert document["meta"]["runs"] == {"trained": 3, "resumed": 0, "reused": 0}
    assert document["meta"]["threads"] == 1 and document["meta"]["seeds"] == [0]
    by_name = {row["entry"]: row for row in document["rows"]}
    baseline, se, gala = by_name["baseline"], by_name["se"], by_name["gala+maps"]
    for row in document["rows"]:
        assert 0.0 <= row["accuracy_mean"] <= 1.0
        assert row["accuracy_std"] is None  # one seed: no spread
        assert row["params"] > 0 and row["macs"] > 0 and row["images_per_s"] > 0
    assert baseline["delta_mean"] is None
    # One seed: a difference but never an interval.
    assert se["delta_mean"] == pytest.approx(se["accuracy_mean"] - baseline["accuracy_mean"])
    assert se["delta_ci_low"] is None and se["delta_ci_high"] is None
    # Attention costs something; every entry is aligned with the maps, with the map it has.
    assert se["params"] > baseline["params"] and gala["macs"] > baseline["macs"]
    assert baseline["map_source"] == se["map_source"] == "gradcam:layer3"
    assert gala["map_source"] == "attention"
    for row in (baseline, se, gala):
        assert -1.0 <= row["map_rho_mean"] <= 1.0
        assert 0.0 <= row["train_accuracy_mean"] <= 1.0
    assert gala["map_fraction_mean"] == pytest.approx(gala["map_rho_mean"] / 0.65753)

    for entry in ("baseline", "se", "gala+maps"):
        result = json.loads((bench_dir / "runs" / entry / "seed0" / "result.json").read_text())
        assert result["steps"] == 2 and result["config"]["deterministic"] is True
    assert json.loads((bench_dir / "runs" / "gala+maps" / "seed0" / "config.json").read_text())[
        "map_weight"
    ] == pytest.approx(1.0)

    table, claims = (bench_dir / "results.md").read_text().split("## Claims")
    assert table.count("\n| ") == 4  # header + 3 rows (the separator starts with "|-")
    # One seed: the claims (se and gala+maps vs the baseline) are there, undecided.
    assert claims.count("\n| ") == 3 and claims.count("**inconclusive**") == 2
    assert claims.strip() in (bench_dir / "claims.md").read_text()
    assert "[n/a: one seed]" in table
    for name in ("accuracy_vs_macs.png", "delta.png"):
        assert (bench_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_second_invocation_reuses_every_run(bench_dir, capsys):
    results = sorted(bench_dir.glob("runs/*/seed*/result.json"))
    weights = sorted(bench_dir.glob("runs/*/seed*/checkpoints/*/model.safetensors"))
    assert len(results) == 3 and len(weights) == 3
    before = {p: p.stat().st_mtime_ns for p in results + weights}
    first = json.loads((bench_dir / "results.json").read_text())["rows"]
    assert main(["bench", "--attentions", "se,gala+maps", "--out", str(bench_dir), *TINY]) == 0
    assert "0 trained, 0 resumed, 3 reused" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in results + weights} == before
    again = json.loads((bench_dir / "results.json").read_text())
    assert again["meta"]["runs"] == {"trained": 0, "resumed": 0, "reused": 3}
    assert [r["accuracy_mean"] for r in again["rows"]] == [r["accuracy_mean"] for r in first]


def test_other_settings_in_a_run_folder_are_an_error(bench_dir):
    settings = BenchSettings(
        image_size=8, batch_size=16, max_steps=2, seeds=[0], lr=0.5, data_options=TINY_DATA
    )
    with pytest.raises(ValueError, match=r"other settings \(.*lr: 0.003 -> 0.5"):
        run_one(settings.config(Entry("se", "se"), 0), bench_dir / "runs" / "se" / "seed0")


def test_interrupted_run_resumes_and_ends_as_an_uninterrupted_one(tmp_path, one_thread):
    data = {**TINY_DATA, "num_images": 32}
    settings = BenchSettings(image_size=8, batch_size=16, epochs=2, data_options=data)
    config = settings.config(Entry("se", "se"), seed=3)
    whole, how = run_one(config, tmp_path / "whole")
    assert how == "trained" and whole["epochs"] == 2

    # The same run killed after its first epoch: the epoch-2 checkpoint, metrics line and
    # result never written.
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "whole", cut)
    (cut / "result.json").unlink()
    steps = sorted((cut / "checkpoints").glob("step_*"))
    assert len(steps) == 2
    shutil.rmtree(steps[1])
    (cut / "checkpoints" / "latest.json").write_text(
        json.dumps({"checkpoint": steps[0].name, "step": int(steps[0].name[5:])})
    )
    lines = (cut / "metrics.jsonl").read_text().splitlines()
    (cut / "metrics.jsonl").write_text(lines[0] + "\n")

    resumed, how = run_one(config, cut)
    assert how == "resumed"
    assert resumed["accuracy"] == whole["accuracy"] and resumed["loss"] == whole["loss"]
    final_whole = load_file(
        str(max((tmp_path / "whole" / "checkpoints").glob("step_*")) / "model.safetensors")
    )
    final_cut = load_file(str(max((cut / "checkpoints").glob("step_*")) / "model.safetensors"))
    assert final_whole.keys() == final_cut.keys()
    assert all(torch.equal(final_whole[k], final_cut[k]) for k in final_whole)
    assert run_one(config, cut)[1] == "reused"


def test_paired_interval_matches_a_hand_computation():
    entry = [0.61, 0.70, 0.64, 0.58]
    baseline = [0.55, 0.57, 0.62, 0.50]
    differences = [a - b for a, b in zip(entry, baseline, strict=True)]
    n = len(differences)
    mean = sum(differences) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    got = paired_interval(entry, baseline)
    assert got == pytest.approx((mean, mean - half, mean + half), rel=1e-12)
    low, high = stats.t.interval(0.95, n - 1, loc=mean, scale=sd / math.sqrt(n))
    assert got[1:] == pytest.approx((low, high), rel=1e-10)
    # Paired by seed: what a seed does to both (an easier split) cancels out.
    offsets = [0.2, -0.1, 0.05, 0.3]
    shifted = paired_interval(
        [a + o for a, o in zip(entry, offsets, strict=True)],
        [b + o for b, o in zip(baseline, offsets, strict=True)],
    )
    assert shifted == pytest.approx(got, abs=1e-12)
    assert statistics.stdev(differences) < statistics.stdev(
        [a + o for a, o in zip(entry, offsets, strict=True)]
    )


def test_one_seed_has_no_interval_and_lengths_must_match():
    assert paired_interval([0.7], [0.6]) == (pytest.approx(0.1), None, None)
    with pytest.raises(ValueError, match="equally many"):
        paired_interval([0.7, 0.8], [0.6])


def test_parse_seeds():
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("0,5,7") == [0, 5, 7]
    assert parse_seeds("7,") == [7]
    for bad in ("0", "x", "1,1"):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(bad)


def test_size_bound_modules_get_the_input_size(one_thread):
    settings = BenchSettings(image_size=16, seeds=[0], data_options=TINY_DATA)
    (baseline, rga), skipped = resolve_entries("rga_s", settings)
    assert baseline.name == "baseline" and not skipped
    # attach computes each insertion site's feature size from the model's input size.
    assert rga.attention == "rga_s" and dict(rga.attention_options)["input_size"] == [16, 16]


def test_unknown_or_inapplicable_names_fail_before_training(tmp_path, capsys):
    out = tmp_path / "bench"
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--attentions", "se,sq", "--out", str(out), *TINY])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert "unknown leaderboard entry 'sq'" in message and "Did you mean: se" in message
    assert not out.exists()
    settings = BenchSettings(image_size=8, seeds=[0], data_options=TINY_DATA)
    with pytest.raises(ValueError, match="records no spatial map"):
        resolve_entries("se+maps", settings)
    with pytest.raises(ValueError, match="video form"):
        resolve_entries("nonlocal3d", settings)


def test_default_entries_cover_the_gates_and_say_why_one_is_left_out(one_thread):
    settings = BenchSettings(image_size=8, seeds=[0], data_options=TINY_DATA)
    lines: list[str] = []
    entries, skipped = resolve_entries("all", settings, log=lines.append)
    names = [e.name for e in entries]
    assert names[0] == "baseline" and names[-1] == "gattanet"
    assert {"se", "cbam", "gala", "gala+maps", "gc"} <= set(names)
    assert names.index("gala+maps") == names.index("gala") + 1
    gala_maps = entries[names.index("gala+maps")]
    assert gala_maps.attention == "gala" and gala_maps.map_weight == settings.map_weight
    left_out = {s["name"]: s["reason"] for s in skipped}
    assert set(left_out) >= {"ciau3d", "nonlocal3d", "siau3d"}
    assert all("video form" in left_out[n] for n in ("ciau3d", "nonlocal3d", "siau3d"))
    # At 8 px the last stage is 2x2: RGA's spatial reduction cannot be built there, and the
    # leaderboard says so instead of dropping it silently.
    assert set(left_out) >= {"rga_c", "rga_s", "rga_sc"}
    assert f"cannot be built or run on {settings.model}: RGA" in left_out["rga_s"]
    assert not set(left_out) & set(names)
    assert any(line.startswith("skipped nonlocal3d:") for line in lines)
