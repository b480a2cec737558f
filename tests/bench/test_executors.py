"""`attnzoo bench --jobs N`: worker processes give the results of --jobs 1, a failing run is
reported while the others finish, and a board killed mid-run resumes to the same results."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from tiny_boards import BOARD, RUNS, board_rows, run_results

from attnzoo.bench.entries import BenchSettings, Entry
from attnzoo.bench.executors import Execution, run_leaderboard
from attnzoo.bench.placement import WorkerGroup
from attnzoo.cli import main


def test_jobs_2_gives_exactly_the_results_of_jobs_1(serial_board, tmp_path, capsys):
    out = tmp_path / "parallel"
    assert main(["bench", *BOARD, "--jobs", "2", "--tensorboard", "--out", str(out)]) == 0
    assert run_results(out) == run_results(serial_board)
    assert board_rows(out) == board_rows(serial_board)
    meta = json.loads((out / "results.json").read_text())["meta"]
    assert meta["jobs"] == 2 and meta["runs"] == {"trained": 4, "resumed": 0, "reused": 0}
    progress = capsys.readouterr().err
    assert "4 to run, 2 at a time (local)" in progress
    assert "[4/4 done, 0 running]" in progress and "ETA" in progress
    # --tensorboard: every run wrote its event file beside metrics.jsonl.
    for run in RUNS:
        assert len(list((out / "runs" / run).glob("events.out.tfevents.*"))) == 1


def test_a_run_that_raises_is_reported_while_the_others_finish(tmp_path):
    settings = BenchSettings(
        image_size=8,
        batch_size=16,
        max_steps=2,
        seeds=[0],
        data_options={"num_images": 48, "num_test": 16, "num_classes": 4, "clutter": 1},
    )
    # Passes every check here; building it in the worker raises (SE has no such option).
    broken = Entry("broken", "se", attention_options=(("no_such_option", 3),))
    entries = [Entry("baseline"), broken, Entry("se", "se")]
    lines: list[str] = []
    execution = Execution(groups=[WorkerGroup(2)])
    board = run_leaderboard(settings, entries, tmp_path, log=lines.append, execution=execution)
    assert [row["entry"] for row in board.rows] == ["baseline", "se"]
    assert board.counts == {"trained": 2, "resumed": 0, "reused": 0}
    assert [(f["entry"], f["seed"]) for f in board.failed] == [("broken", 0)]
    assert "no_such_option" in board.failed[0]["error"]
    assert any("broken seed 0: FAILED" in line and "no_such_option" in line for line in lines)
    assert not (tmp_path / "runs" / "broken" / "seed0" / "result.json").exists()


def test_the_command_exits_non_zero_and_writes_the_board_of_what_finished(
    serial_board, tmp_path, capsys
):
    out = tmp_path / "board"
    subprocess.run(["cp", "-r", str(serial_board), str(out)], check=True)
    # se seed 1 lost its result and its training state is garbage: resuming it fails, in the
    # worker, while baseline seed 1 (result removed) trains again. (A pointer to a missing
    # checkpoint no longer fails: resume falls back to the intact older checkpoint.)
    (out / "runs/se/seed1/result.json").unlink()
    for state in (out / "runs/se/seed1/checkpoints").glob("step_*/state.pt"):
        state.write_bytes(b"not a torch file")
    (out / "runs/baseline/seed1/result.json").unlink()
    subprocess.run(["rm", "-r", str(out / "runs/baseline/seed1/checkpoints")], check=True)
    assert main(["bench", *BOARD, "--jobs", "2", "--out", str(out)]) == 1
    document = json.loads((out / "results.json").read_text())
    assert [row["entry"] for row in document["rows"]] == ["baseline"]
    assert board_rows(out) == board_rows(serial_board)[:1]
    assert [(f["entry"], f["seed"]) for f in document["failed"]] == [("se", 1)]
    assert "FAILED se seed 1" in capsys.readouterr().err
    assert "Failed runs" in (out / "results.md").read_text()


@pytest.mark.slow
def test_a_board_killed_mid_run_resumes_to_the_uninterrupted_results(serial_board, tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "attnzoo.cli", "bench", *BOARD, "--jobs", "2"]
    command += ["--save-every", "1", "--out", str(out)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    # Its own session: the kill takes the command and its worker processes, as a job
    # scheduler's or an out-of-memory kill does.
    process = subprocess.Popen(
        command, env=environment, start_new_session=True, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    try:
        while not list(out.glob("runs/*/seed*/checkpoints/latest.json")):
            assert process.poll() is None, "the board ended before any checkpoint"
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert len(list(out.glob("runs/*/seed*/result.json"))) < 4
    assert main(["bench", *BOARD, "--jobs", "2", "--save-every", "1", "--out", str(out)]) == 0
    counts = json.loads((out / "results.json").read_text())["meta"]["runs"]
    assert counts["resumed"] >= 1 and sum(counts.values()) == 4
    assert run_results(out) == run_results(serial_board)
    assert board_rows(out) == board_rows(serial_board)
