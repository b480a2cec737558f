"""The run folder and the command's errors, in-process: usage errors before anything runs, the
lock, runs that never overwrite each other, damage that resume repairs, divergence, trust."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from attnzoo.cli import main
from attnzoo.errors import DataError
from attnzoo.train import TrainConfig, evaluate
from attnzoo.train.runfolder import RunLock

TINY = [
    "--data", "synthetic", "--data-opt", "num_images=64", "--data-opt", "num_test=8",
    "--data-opt", "clutter=1", "--image-size", "16", "--batch-size", "16", "--progress", "none",
    "--device", "cpu",
]  # fmt: skip
TRAIN = ["train", "--model", "tiny_models:classifier", *TINY]


def _fails(capsys, argv, code):
    """Run the command; it must exit with ``code`` and say why in exactly one line."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == code
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if ": error: " in line]
    assert len(errors) == 1, err
    return errors[0]


def _metrics(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


NO_CUDA = "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"


@pytest.mark.parametrize(
    "extra, says",
    [
        (["--lr", "inf"], "--lr must be a finite number > 0, got inf"),
        (["--lr", "0"], "--lr must be a finite number > 0"),
        (["--clip-grad", "-1"], "--clip-grad must be a finite maximum gradient norm > 0"),
        (["--warmup-epochs", "-0.5"], "--warmup-epochs must be a finite number >= 0"),
        (["--save-every", "-2"], "--save-every must be an integer >= 0"),
        (["--limit-val", "0"], "--limit-val must be an integer >= 1"),
        (["--device", "gpu"], "--device 'gpu' is not a device"),
        (["--device", NO_CUDA], f"--device {NO_CUDA}: "),
        (["--data-opt", "cluter=3"], "--data-opt cluter: unknown option; did you mean 'clutter'"),
        (["--model-opt", "in_chanels=3"], "--model-opt in_chanels: unknown option"),
        (["--batch-size", "128"], "batch size 128 exceeds the 64 examples of synthetic; lower"),
        (["--lr", "abc"], "argument --lr: invalid float value: 'abc'"),
    ],
)
def test_usage_errors_are_one_line_exit_2_and_touch_no_folder(tmp_path, capsys, extra, says):
    line = _fails(capsys, [*TRAIN, *extra, "--out", str(tmp_path / "run")], 2)
    assert says in line
    assert not (tmp_path / "run" / "config.json").exists()


def test_attention_option_typos_and_out_below_a_file(tmp_path, capsys):
    registered = ["train", "--model", "resnet20", "--attention", "se", *TINY]
    line = _fails(
        capsys, [*registered, "--attention-opt", "rd_ration=4", "--out", str(tmp_path / "a")], 2
    )
    assert "unknown option(s) rd_ration; valid options: rd_ratio" in line
    line = _fails(
        capsys, [*registered, "--attention-opt", "rd_ratio=abc", "--out", str(tmp_path / "a")], 2
    )
    assert "rd_ratio" in line and "abc" in line  # the option and the value at fault
    (tmp_path / "file").write_text("x")
    line = _fails(capsys, [*TRAIN, "--out", str(tmp_path / "file" / "run")], 2)
    assert f"--out {tmp_path / 'file' / 'run'}: {tmp_path / 'file'} is a file" in line


def test_a_held_folder_is_refused_naming_the_holder_and_a_stale_lock_is_taken_over(
    tmp_path, capsys
):
    import os

    out = tmp_path / "run"
    out.mkdir()
    with RunLock(out):
        line = _fails(capsys, [*TRAIN, "--epochs", "1", "--out", str(out)], 1)
    assert f"{out} is in use by another attnzoo run (pid {os.getpid()})" in line
    assert not (out / "config.json").exists()
    # The holder is gone (its flock with it); the pid it left in the file does not matter.
    (out / ".lock").write_text("999999\n")
    assert main([*TRAIN, "--epochs", "1", "--out", str(out)]) == 0


def test_a_fresh_run_never_overwrites_another_runs_config_or_metrics(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    other = TrainConfig(model="tiny_models:classifier", lr=0.3).to_dict()
    (out / "config.json").write_text(json.dumps(other))
    line = _fails(capsys, [*TRAIN, "--epochs", "1", "--out", str(out)], 1)
    assert "config.json belongs to another run (it differs in" in line and "--resume" in line
    assert json.loads((out / "config.json").read_text()) == other
    (out / "config.json").unlink()
    (out / "metrics.jsonl").write_text('{"epoch": 1}\n')
    line = _fails(capsys, [*TRAIN, "--epochs", "1", "--out", str(out)], 1)
    assert "already holds a run (metrics.jsonl)" in line
    assert (out / "metrics.jsonl").read_text() == '{"epoch": 1}\n'


def test_resume_repairs_a_damaged_folder(tmp_path, capsys):
    out = tmp_path / "run"
    args = [*TRAIN, "--epochs", "2", "--save-every", "3", "--out", str(out)]
    assert main(args) == 0  # 4 steps per epoch; checkpoints kept: steps 6 and 8
    checkpoints = out / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("step_*")) == ["step_00000006", "step_00000008"]
    shutil.rmtree(checkpoints / "step_00000008")  # latest.json now points at nothing
    (checkpoints / ".step_00000010.4242.tmp").mkdir()  # a write killed half-way
    (out / ".config.json.4242.tmp").write_text("{")
    with open(out / "metrics.jsonl", "a") as handle:
        handle.write('{"epoch": 3, "step": 1')  # a kill during the append
    capsys.readouterr()
    assert main([*TRAIN, "--resume", "--epochs", "3", "--trust-run-folder", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert (
        "latest.json names step_00000008, but it does not exist; falling back to step_00000006"
        in err
    )
    assert "dropping its half-written last line 3" in err
    assert not list(out.glob(".*.tmp")) and not list(checkpoints.glob(".*.tmp"))
    # Epoch 2 is redone from step 6 (its old line dropped), then epoch 3.
    assert [r["epoch"] for r in _metrics(out)] == [1, 2, 3]
    assert json.loads((checkpoints / "latest.json").read_text())["step"] == 12


def test_garbled_json_and_a_damaged_middle_line_are_errors_naming_the_file(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TRAIN, "--epochs", "2", "--out", str(out)]) == 0
    resume = [*TRAIN, "--resume", "--epochs", "3", "--trust-run-folder", "--out", str(out)]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text(lines[0][:-3] + "\n" + lines[1] + "\n")
    line = _fails(capsys, resume, 1)
    assert "metrics.jsonl: line 1 is damaged or hand-edited" in line
    (out / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    config = (out / "config.json").read_text()
    (out / "config.json").write_text(config.replace('"lr": 0.1', '"lr": "fast"'))
    line = _fails(capsys, resume, 1)
    assert (
        "config.json: damaged or hand-edited configuration: config 'lr' must be of type float"
        in line
    )
    (out / "config.json").write_text(config[: len(config) // 2])
    line = _fails(capsys, resume, 1)
    assert "config.json: damaged or hand-edited configuration (not valid JSON" in line
    meta = out / "checkpoints" / "step_00000008" / "meta.json"
    meta.write_text(meta.read_text().replace('"mean": [', '"mean": "oops", "x": ['))
    line = _fails(capsys, ["eval", "--trust-run-folder", "--checkpoint", str(meta.parent)], 1)
    assert "meta.json: damaged or hand-edited: 'mean' should be a list, got 'oops'" in line


def test_a_non_finite_loss_stops_the_run_keeping_the_last_good_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--model", "tiny_models:classifier_no_dropout", *TINY, "--batch-size", "8",
            "--epochs", "2", "--save-every", "2", "--lr", "1e10", "--out", str(out)]  # fmt: skip
    line = _fails(capsys, args, 1)
    assert "training diverged: the loss at step 3 (epoch 1) is nan" in line
    assert f"the last good checkpoint {out / 'checkpoints' / 'step_00000002'} is kept" in line
    assert json.loads((out / "checkpoints" / "latest.json").read_text())["step"] == 2
    weights = load_file(out / "checkpoints" / "step_00000002" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text()


def test_evaluation_over_no_images_is_an_error_not_zero_accuracy():
    from attnzoo.data import DeviceLoader, TensorData

    empty = TensorData(torch.zeros(0, 3, 4, 4, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64),
                       2, "empty", (0.5,) * 3, (0.5,) * 3)  # fmt: skip
    loader = DeviceLoader(empty, 4, torch.device("cpu"))
    with pytest.raises(DataError, match="evaluation saw 0 images of dataset 'synthetic'"):
        evaluate(torch.nn.Conv2d(3, 2, 4), loader, TrainConfig(model="m"))


def test_run_folders_naming_code_load_only_when_trusted(tmp_path, capsys, cbam_checkpoint):
    out = tmp_path / "run"
    assert main([*TRAIN, "--epochs", "1", "--out", str(out)]) == 0
    hint = "pass --trust-run-folder (API: trust_code=True)"
    for argv in (
        ["eval", "--checkpoint", str(out)],
        ["viz", "--checkpoint", str(out), "--out", str(tmp_path / "viz")],
        ["export", "--checkpoint", str(out), "--format", "onnx"],
        ["train", "--resume", "--epochs", "2", "--out", str(out)],
    ):
        line = _fails(capsys, argv, 1)
        assert "names the model 'tiny_models:classifier'" in line and hint in line, argv
    # Naming the builder on the command line is the user's own choice: trusted.
    assert main([*TRAIN, "--resume", "--epochs", "2", "--out", str(out)]) == 0
    # Registered names need no opt-in.
    assert main(["eval", "--checkpoint", str(cbam_checkpoint), "--device", "cpu"]) == 0


def test_a_checkpoint_of_another_model_is_an_error(tmp_path, capsys, cbam_checkpoint):
    out = tmp_path / "copy"
    shutil.copytree(cbam_checkpoint, out)
    step = next((out / "checkpoints").glob("step_*"))
    foreign = {"fc.weight": torch.zeros(10, 16), "conv1.weight": torch.zeros(8, 3, 3, 3)}
    from safetensors.torch import save_file

    save_file(foreign, str(step / "model.safetensors"))
    line = _fails(capsys, ["eval", "--checkpoint", str(out)], 1)
    assert f"{step}: these weights belong to another model (missing" in line


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    from attnzoo.errors import UsageError

    argv = [*TRAIN, "--lr", "-1", "--out", str(tmp_path / "run")]
    with pytest.raises(UsageError, match="--lr must be"):
        main(["--debug", *argv])
    monkeypatch.setenv("ATTNZOO_DEBUG", "1")
    with pytest.raises(UsageError, match="--lr must be"):
        main(argv)
