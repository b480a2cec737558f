"""Multi-process behaviour: kill -9 then --resume equals an uninterrupted run, weight for
weight; two DDP ranks under torchrun equal one process with the same global batch."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from attnzoo.train import find_checkpoint

HERE = Path(__file__).parent
COMMON = [
    "--data", "synthetic", "--data-opt", "num_images=64", "--data-opt", "num_test=16",
    "--data-opt", "clutter=2", "--image-size", "16", "--batch-size", "8", "--device", "cpu",
    "--progress", "none", "--seed", "3", "--lr", "0.05",
]  # fmt: skip


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(find_checkpoint(run) / "model.safetensors")


def _metrics(run: Path) -> list[dict]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in x.items() if k not in ("time", "throughput")} for x in lines]


@pytest.mark.slow
def test_kill_then_resume_equals_uninterrupted(tmp_path):
    args = [sys.executable, "-m", "attnzoo", "train", "--model", "tiny_models:classifier",
            *COMMON, "--epochs", "4", "--deterministic", "--save-every", "1"]  # fmt: skip
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run([*args, "--out", str(whole)], env=_env(), check=True, timeout=120)

    process = subprocess.Popen([*args, "--out", str(killed)], env=_env())
    latest = killed / "checkpoints" / "latest.json"
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if latest.is_file() and json.loads(latest.read_text())["step"] >= 3:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    assert process.wait(timeout=60) == -signal.SIGKILL, "the run ended before it was killed"
    step_at_kill = json.loads(latest.read_text())["step"]
    assert 3 <= step_at_kill < 32

    subprocess.run([*args, "--out", str(killed), "--resume"], env=_env(), check=True, timeout=120)
    expected, got = _weights(whole), _weights(killed)
    assert json.loads(latest.read_text())["step"] == 32
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    assert _metrics(killed) == _metrics(whole)


@pytest.mark.slow
def test_torchrun_two_ranks_equal_one_process(tmp_path):
    args = ["train", "--model", "tiny_models:classifier_no_dropout", *COMMON, "--epochs", "1"]
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run(
        [sys.executable, "-m", "attnzoo", *args, "--out", str(one)],
        env=_env(), check=True, timeout=120,
    )  # fmt: skip
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    result = subprocess.run(
        [*torchrun, "-m", "attnzoo", *args, "--out", str(two)],
        env=_env(), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    # Rank 0 alone printed the summary and wrote the run folder.
    assert result.stdout.count('"out"') == 1
    expected, got = _weights(one), _weights(two)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-5)
    one_metrics, two_metrics = _metrics(one), _metrics(two)
    assert len(one_metrics) == len(two_metrics) == 1
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        assert two_metrics[0][key] == pytest.approx(one_metrics[0][key], rel=1e-4, abs=1e-6)
