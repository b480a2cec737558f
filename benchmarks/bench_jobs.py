"""`attnzoo bench --jobs 1` against `--jobs 2` on the same board, side by side.

Runs the same small leaderboard (6 entries x 2 seeds, the default data at 3 epochs: 12 runs) twice
into fresh folders, one after the other, first with --jobs 1 and then with --jobs 2, and
writes the wall times, their ratio, the load average around each (the machine may be shared)
the CPU time they used (on a machine shared with other jobs the wall times say more about the
load than about --jobs; equal CPU times say the parallel board did no extra work) and whether
the two boards hold the same results (everything but the timing) to
``benchmarks/results/bench_jobs/``:

    .venv/bin/python benchmarks/bench_jobs.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
# A short recipe pinned here, so the comparison does not grow with the default board's recipe.
BOARD = ["--attentions", "se,eca,cbam,gc,gala", "--seeds", "2", "--epochs", "3", "--no-plots"]


def run_board(jobs: int, out: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "attnzoo.cli", "bench", *BOARD, "--jobs", str(jobs)]
    command += ["--out", str(out)]
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)
    environment = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    environment["MKL_NUM_THREADS"] = "1"
    load_before = os.getloadavg()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, env=environment, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sum(getattr(cpu_after, k) - getattr(cpu_before, k) for k in ("ru_utime", "ru_stime"))
    document = json.loads((out / "results.json").read_text())
    return {
        "jobs": jobs,
        "wall_s": round(wall, 2),
        # CPU time of the command and its workers: the work done, whatever the machine's load.
        "cpu_s": round(cpu, 2),
        "runs_wall_s": document["meta"]["wall_s"],
        "runs": document["meta"]["runs"],
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "rows": [{k: v for k, v in row.items() if k != "images_per_s"} for row in document["rows"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/bench_jobs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        serial = run_board(1, Path(scratch) / "jobs1")
        parallel = run_board(2, Path(scratch) / "jobs2")
    report = {
        "command": "python benchmarks/bench_jobs.py",
        "board": "attnzoo bench " + " ".join(BOARD) + " --jobs N",
        "cpu": platform.processor() or platform.machine(),
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "speedup_wall": round(serial["wall_s"] / parallel["wall_s"], 3),
        "speedup_runs": round(serial["runs_wall_s"] / parallel["runs_wall_s"], 3),
        "identical_results": serial["rows"] == parallel["rows"],
        "jobs1": {k: v for k, v in serial.items() if k != "rows"},
        "jobs2": {k: v for k, v in parallel.items() if k != "rows"},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
