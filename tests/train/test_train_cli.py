"""`attnzoo train` / `attnzoo eval` on the embedded data, in-process and small."""

import json

import pytest
import torch
from safetensors.torch import load_file

from attnzoo.cli import main
from attnzoo.train import TrainConfig, learning_rate, load_checkpoint

TINY = [
    "--data", "synthetic", "--data-opt", "num_images=64", "--data-opt", "num_test=32",
    "--data-opt", "clutter=2", "--image-size", "16", "--batch-size", "16", "--progress", "plain",
]  # fmt: skip


def test_train_then_eval_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--model", "tiny_models:classifier", *TINY, "--epochs", "2", "--out", str(out)]
    assert main([*args, "--lr", "0.05", "--warmup-epochs", "0.5", "--label-smoothing", "0.1"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["lr"] == 0.05 and config["data_options"]["num_images"] == 64
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2] and lines[-1]["step"] == 8
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "throughput"):
        assert key in lines[-1]
    weights, meta, state = load_checkpoint(out)
    assert meta["step"] == 8 and meta["epoch"] == 2 and set(state) >= {"optimizer", "rng"}
    assert torch.equal(
        weights["fc.weight"],
        load_file(out / "checkpoints/step_00000008/model.safetensors")["fc.weight"],
    )
    printed = capsys.readouterr().out
    assert "epoch 2/2 step 4/4" in printed  # plain progress lines off a TTY

    # The run folder names code (tiny_models:classifier): refused unless trusted.
    with pytest.raises(SystemExit) as refused:
        main(["eval", "--checkpoint", str(out)])
    assert refused.value.code == 1 and "--trust-run-folder" in capsys.readouterr().err
    assert (
        main(
            [
                "eval",
                "--trust-run-folder",
                "--checkpoint",
                str(out),
                "--noise-sigmas",
                "0,0.2",
                "--out",
                str(tmp_path / "e.json"),
                "--noise-report",
                str(tmp_path / "noise"),
            ]
        )
        == 0
    )
    table = (tmp_path / "noise" / "noise_robustness.csv").read_text().splitlines()
    assert table[0] == "model,sigma,accuracy" and len(table) == 3
    assert (tmp_path / "noise" / "noise_robustness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["images"] == 32
    assert result["accuracy"] == pytest.approx(lines[-1]["val_accuracy"])
    assert result["loss"] == pytest.approx(lines[-1]["val_loss"], rel=1e-5)
    assert set(result["accuracy_under_noise"]) == {"0", "0.2"}
    assert result["accuracy_under_noise"]["0"] == pytest.approx(result["accuracy"])

    # A fresh run into the same folder is refused; a different setting on resume too.
    with pytest.raises(SystemExit):
        main(args)
    assert "already holds a run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--resume", "--lr", "0.5"])
    assert "these settings differ from it: lr" in capsys.readouterr().err


def test_map_supervision_and_alignment(tmp_path):
    out = tmp_path / "gala"
    args = ["train", "--model", "tiny_models:gala_classifier", *TINY, "--epochs", "1",
            "--map-weight", "0.5", "--out", str(out), "--optimizer", "adamw", "--lr", "1e-3"]  # fmt: skip
    assert main(args) == 0
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert -1 <= record["val_map_rho"] <= 1
    assert record["val_map_fraction"] == pytest.approx(record["val_map_rho"] / 0.65753)
    with pytest.raises(SystemExit):  # no spatial map in the plain tiny model
        main(["train", "--model", "tiny_models:classifier", *TINY, "--map-weight", "1",
              "--out", str(tmp_path / "x")])  # fmt: skip


def test_segmentation_task_reports_miou(tmp_path):
    out = tmp_path / "seg"
    args = ["train", "--model", "tiny_models:segmenter", *TINY, "--task", "segment",
            "--epochs", "1", "--schedule", "step", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0 <= record["val_miou"] <= 1 and record["val_accuracy"] > 0


def test_learning_rate_schedules():
    cosine = TrainConfig(model="m", lr=1.0, epochs=4, warmup_epochs=1)
    rates = [learning_rate(cosine, s, 10, 40) for s in range(40)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert rates[10] == pytest.approx(1.0) and rates[25] == pytest.approx(0.5)
    assert all(rates[i] >= rates[i + 1] for i in range(10, 39))
    step = TrainConfig(model="m", lr=1.0, epochs=4, schedule="step", milestones=[1, 3])
    assert [learning_rate(step, s * 10, 10, 40) for s in range(4)] == pytest.approx(
        [1.0, 0.1, 0.1, 0.01]
    )


def test_amp_channels_last_clip_and_step_caps(tmp_path):
    out = tmp_path / "amp"
    args = ["train", "--model", "tiny_models:classifier", *TINY, "--epochs", "3", "--amp", "bf16",
            "--channels-last", "--clip-grad", "1.0", "--max-steps", "3", "--limit-train", "32",
            "--limit-val", "8", "--nesterov", "--progress", "bar", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    # 32 images / batch 16 = 2 steps per epoch; stopped after 3 steps, i.e. inside epoch 2.
    assert [x["step"] for x in lines] == [2, 3]
    assert all(torch.isfinite(torch.tensor(x["train_loss"])) for x in lines)
    _, meta, state = load_checkpoint(out)
    assert meta["step"] == 3 and state["scaler"] == {}  # no scaler state without fp16


@pytest.mark.parametrize(("every", "validated"), [(2, [False, True, True]), (0, [False] * 3)])
def test_val_every_validates_every_nth_epoch_and_the_last(tmp_path, every, validated):
    out = tmp_path / "run"
    args = ["train", "--model", "tiny_models:classifier", *TINY, "--epochs", "3"]
    assert main([*args, "--val-every", str(every), "--out", str(out)]) == 0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2, 3]
    assert ["val_accuracy" in x for x in lines] == validated
    assert all("train_accuracy" in x for x in lines)


def test_a_negative_val_every_is_a_usage_error(tmp_path, capsys):
    args = ["train", "--model", "tiny_models:classifier", *TINY, "--val-every", "-1"]
    with pytest.raises(SystemExit) as refused:
        main([*args, "--out", str(tmp_path / "run")])
    assert refused.value.code == 2 and "--val-every" in capsys.readouterr().err
