"""A hostile user against real `python -m attnzoo` processes: two runs into one folder at once,
kill -9 in the middle of the first checkpoint write, a run folder that names code to run,
corrupt and empty data files, garbled JSON, everyday mistakes. Every failure must be one line
on stderr with exit status 2 (usage) or 1 (failure), and no run folder may be lost."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--data", "synthetic", "--data-opt", "num_images=64", "--data-opt", "num_test=8",
    "--data-opt", "clutter=1", "--image-size", "16", "--batch-size", "16", "--device", "cpu",
    "--progress", "none",
]  # fmt: skip


def _env(extra_path: Path | None = None, **more: str) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **more)
    paths = [str(ROOT / "src"), str(ROOT / "tests" / "train")]
    if extra_path is not None:
        paths.append(str(extra_path))
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    env.pop("ATTNZOO_DEBUG", None)
    env.update(more)
    return env


def _attnzoo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "attnzoo", *args],
        env=env or _env(), capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def _one_error_line(result: subprocess.CompletedProcess, code: int) -> str:
    assert result.returncode == code, result.stderr[-2000:]
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    errors = [x for x in lines if ": error: " in x]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    return errors[0]


def _ctrl_c_reaches_python() -> None:
    """In the child before exec: SIGINT back to its default action. A process started with
    SIGINT ignored (a background job of a shell without job control, and so every process
    below it, pytest's workers included) passes that on, and Python then installs no
    KeyboardInterrupt handler: the run would ignore the test's Ctrl-C. A user's terminal
    delivers it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(process: subprocess.Popen, errors: Path) -> None:
    """Ctrl-C; a run that does not stop within 60 s is killed and the test fails with its
    stderr."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        # Where is it? SIGABRT makes faulthandler (PYTHONFAULTHANDLER=1) print every thread.
        process.send_signal(signal.SIGABRT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        pytest.fail(f"the run ignored SIGINT; its stderr:\n{errors.read_text()[-6000:]}")


def test_two_runs_into_one_folder_at_once(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "attnzoo", "train", "--model", "tiny_models:classifier",
            *TINY, "--epochs", "100000", "--out", str(out)]  # fmt: skip
    errors = tmp_path / "first.err"  # a file, not a pipe nobody reads while the run goes on
    with open(errors, "w") as sink:
        first = subprocess.Popen(
            args,
            env=_env(PYTHONFAULTHANDLER="1"),
            stdout=subprocess.DEVNULL,
            stderr=sink,
            preexec_fn=_ctrl_c_reaches_python,
        )
    try:
        lock = out / ".lock"
        deadline = time.monotonic() + 120
        while not (lock.is_file() and lock.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.01)
        second = _attnzoo(*args[3:])
        assert first.poll() is None, "the first run must still hold the folder"
        line = _one_error_line(second, 1)
        assert f"{out} is in use by another attnzoo run (pid {first.pid})" in line
    finally:
        _interrupt(first, errors)
    # Only the first run wrote: one line per epoch, in order, nothing interleaved.
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == list(range(1, len(lines) + 1))


def test_kill_during_the_first_checkpoint_write_then_resume_or_rerun(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--model", "tiny_models:heavy_classifier", *TINY, "--epochs", "1",
            "--deterministic", "--out", str(out)]  # fmt: skip
    process = subprocess.Popen([sys.executable, "-m", "attnzoo", *args], env=_env())
    checkpoints = out / "checkpoints"
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if checkpoints.is_dir() and list(checkpoints.glob(".step_*.tmp")):
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.001)
    assert process.wait(timeout=60) == -signal.SIGKILL, "the run ended before it was killed"
    assert list(checkpoints.glob(".step_*.tmp")) and not list(checkpoints.glob("step_*"))
    rerun = tmp_path / "rerun"
    shutil.copytree(out, rerun)

    resumed = _attnzoo(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (
        "no complete checkpoint (killed before its first); starting from step 0" in resumed.stderr
    )
    again = _attnzoo(*args[:-1], str(rerun))  # the same command, no --resume: reuses the folder
    assert again.returncode == 0, again.stderr[-2000:]
    for folder in (out, rerun):
        assert not list((folder / "checkpoints").glob(".*.tmp"))  # temporaries cleaned up
        assert json.loads((folder / "checkpoints" / "latest.json").read_text())["step"] == 4
    metrics = [(f / "metrics.jsonl").read_text().splitlines() for f in (out, rerun)]
    strip = [{k: v for k, v in json.loads(m[0]).items() if k not in ("time", "throughput")}
             for m in metrics]  # fmt: skip
    assert len(metrics[0]) == len(metrics[1]) == 1 and strip[0] == strip[1]


def test_a_run_folder_naming_code_never_runs_it_unless_trusted(tmp_path):
    # A folder received from someone else: its config names a builder in a module shipped
    # alongside, which would leave a marker (or worse) when imported.
    evil = tmp_path / "shipped"
    evil.mkdir()
    marker = tmp_path / "imported"
    (evil / "evil_models.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nfrom tiny_models import classifier as build\n"
    )
    out = tmp_path / "run"
    env = _env(evil)
    trained = _attnzoo("train", "--model", "evil_models:build", *TINY, "--epochs", "1",
                       "--out", str(out), env=env)  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-2000:]
    marker.unlink()
    line = _one_error_line(_attnzoo("eval", "--checkpoint", str(out), env=env), 1)
    assert "names the model 'evil_models:build'" in line and "--trust-run-folder" in line
    assert not marker.exists()
    trusted = _attnzoo("eval", "--checkpoint", str(out), "--trust-run-folder", env=env)
    assert trusted.returncode == 0 and marker.exists()


def test_corrupt_and_empty_data_files(tmp_path):
    root = tmp_path / "fmnist"
    root.mkdir()
    labels = bytes([0, 0, 8, 1, 0, 0, 0, 100]) + bytes(100)
    images = bytes([0, 0, 8, 3, 0, 0, 0, 100, 0, 0, 0, 28, 0, 0, 0, 28]) + bytes(100 * 784)
    (root / "train-images-idx3-ubyte").write_bytes(images)
    (root / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00" + labels)  # not deflate
    train = ["train", "--model", "resnet20", "--device", "cpu", "--progress", "none"]
    line = _one_error_line(
        _attnzoo(*train, "--data", "fashion-mnist", "--data-root", str(root),
                 "--out", str(tmp_path / "a")),
        1,
    )  # fmt: skip
    assert "train-labels-idx1-ubyte.gz: cannot read it as an IDX file" in line

    for label in ("cat", "dog"):
        (tmp_path / "img" / "train" / label).mkdir(parents=True)
        np.save(tmp_path / "img" / "train" / label / "a.npy", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "img" / "train" / "dog" / "b.npy").write_bytes(b"")
    line = _one_error_line(
        _attnzoo(*train, "--data", "folder", "--data-root", str(tmp_path / "img"),
                 "--out", str(tmp_path / "b")),
        1,
    )  # fmt: skip
    assert "dog/b.npy: cannot read it" in line and "the file is empty" in line


def test_garbled_run_folder_and_the_debug_traceback(tmp_path):
    out = tmp_path / "run"
    trained = _attnzoo("train", "--model", "resnet20", *TINY, "--epochs", "1", "--out", str(out))
    assert trained.returncode == 0, trained.stderr[-2000:]
    pointer = out / "checkpoints" / "latest.json"
    pointer.write_text('{"checkpoint": "step_0000')  # garbled by hand: falls back, says so
    evaluated = _attnzoo("eval", "--checkpoint", str(out), "--device", "cpu")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert "latest.json is damaged; using the newest intact checkpoint" in evaluated.stderr
    (out / "config.json").write_text("{ this is not json")
    line = _one_error_line(_attnzoo("train", "--resume", "--out", str(out)), 1)
    assert f"{out / 'config.json'}: damaged or hand-edited configuration" in line

    debug = _attnzoo("--debug", "eval", "--checkpoint", str(out), "--device", "tpu")
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "UsageError" in debug.stderr
