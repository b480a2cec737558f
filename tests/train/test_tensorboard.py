"""`--tensorboard`: the event file beside metrics.jsonl holds the same numbers."""

import json
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from attnzoo.cli import main

TINY = [
    "--model", "tiny_models:classifier", "--data", "synthetic", "--data-opt", "num_images=32",
    "--data-opt", "num_test=16", "--image-size", "16", "--batch-size", "16", "--progress", "none",
]  # fmt: skip


def scalars(run_dir):
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {
        tag: [(event.step, event.value) for event in events.Scalars(tag)]
        for tag in events.Tags()["scalars"]
    }


def test_train_writes_every_metric_of_every_epoch_to_tensorboard(tmp_path):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "2", "--tensorboard", "--out", str(out)]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = scalars(out)
    assert set(logged) >= {"train/loss", "train/accuracy", "val/loss", "val/accuracy", "lr"}
    for tag, key in (("train/loss", "train_loss"), ("val/accuracy", "val_accuracy")):
        expected = [(r["step"], r[key]) for r in records]
        assert [step for step, _ in logged[tag]] == [step for step, _ in expected] == [2, 4]
        # TensorBoard stores float32.
        assert [v for _, v in logged[tag]] == pytest.approx([v for _, v in expected], rel=1e-6)


def test_a_resumed_run_continues_the_same_curves(tmp_path):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--tensorboard", "--out", str(out)]) == 0
    args = [*TINY, "--epochs", "2", "--tensorboard", "--out", str(out), "--resume"]
    assert main(["train", *args]) == 0
    assert [step for step, _ in scalars(out)["val/accuracy"]] == [2, 4]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [v for _, v in scalars(out)["val/loss"]] == pytest.approx(
        [r["val_loss"] for r in records], rel=1e-6
    )


def test_without_tensorboard_the_error_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *TINY, "--tensorboard", "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "pip install 'attnzoo[tensorboard]'" in message


def test_a_damaged_checkpoint_pointer_is_repaired_by_the_engine_not_refused_by_the_log(tmp_path):
    # The log takes its purge step from its first record, so it never reads latest.json: a
    # garbled pointer is left to the run folder's repair (newest intact checkpoint).
    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--tensorboard", "--out", str(out)]) == 0
    (out / "checkpoints" / "latest.json").write_text("{garbled")
    args = [*TINY, "--epochs", "2", "--tensorboard", "--out", str(out), "--resume"]
    assert main(["train", *args]) == 0
    assert [step for step, _ in scalars(out)["val/accuracy"]] == [2, 4]
