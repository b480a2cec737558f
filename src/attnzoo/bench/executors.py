"""Running a leaderboard's runs: in this process, in worker processes, or as Ray tasks.

Every run is independent and deterministic per seed, so where it runs changes nothing in
what it computes: ``--jobs 2`` and Ray give the results of ``--jobs 1`` exactly. Runs whose
folder already holds a result are read here and never sent anywhere. A run that raises is
reported with its error and the others carry on; the leaderboard then lists it under
``failed``.

Worker processes come from :class:`concurrent.futures.ProcessPoolExecutor` with the ``spawn``
start method (a fresh interpreter: no state of this process, no forked threads), one pool per
GPU on CUDA (:mod:`attnzoo.bench.placement`), and never more runs in flight than workers.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from attnzoo.bench.entries import BenchSettings, Entry
from attnzoo.bench.placement import WorkerGroup
from attnzoo.bench.runs import check_run_folder, run_one
from attnzoo.bench.stats import summarise
from attnzoo.train.config import TrainConfig

__all__ = [
    "Execution",
    "Leaderboard",
    "Outcome",
    "RunTask",
    "execute_run",
    "format_duration",
    "run_leaderboard",
]


def format_duration(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60}m{whole % 60:02d}s"


@dataclass(frozen=True)
class RunTask:
    """One (entry, seed) run, as sent to a worker: everything it needs, picklable."""

    entry: str
    seed: int
    config: TrainConfig
    run_dir: Path
    threads: int = 1
    tensorboard: bool = False


@dataclass
class Outcome:
    """What a run came back with: a result and how, or the error it raised."""

    entry: str
    seed: int
    how: str  # trained, resumed, reused or failed
    result: dict[str, Any] | None = None
    error: str = ""


@dataclass
class Execution:
    """Where the runs go: ``local`` worker groups (one group of 1: this process) or ``ray``."""

    executor: str = "local"
    groups: list[WorkerGroup] = field(default_factory=lambda: [WorkerGroup(1)])
    threads: int = 1
    gpus_per_run: float = 0.0
    ray_address: str | None = None
    tensorboard: bool = False

    @property
    def jobs(self) -> int:
        return sum(group.size for group in self.groups)


@dataclass
class Leaderboard:
    rows: list[dict[str, Any]]
    skipped: list[dict[str, str]]
    counts: dict[str, int]
    wall_s: float
    failed: list[dict[str, Any]] = field(default_factory=list)


def execute_run(task: RunTask) -> Outcome:
    """Run one task here (this process or a worker); an exception becomes a failed Outcome."""
    previous_threads = torch.get_num_threads()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(task.threads)
    try:
        result, how = run_one(task.config, task.run_dir, tensorboard=task.tensorboard)
        return Outcome(task.entry, task.seed, how, result)
    except Exception as error:
        last = traceback.extract_tb(error.__traceback__)[-1]
        where = f" (at {Path(last.filename).name}:{last.lineno})"
        return Outcome(task.entry, task.seed, "failed", error=f"{error!r}{where}")
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(was_deterministic)


def _init_worker(cuda_visible: str | None) -> None:
    if cuda_visible is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = cuda_visible  # before CUDA starts in this worker


def _in_process(tasks: list[RunTask]) -> Iterator[tuple[Outcome, int]]:
    for task in tasks:
        yield execute_run(task), 0


def _died(task: RunTask) -> Outcome:
    error = "its worker process died (killed, or out of memory); run the bench again to resume"
    return Outcome(task.entry, task.seed, "failed", error=error)


def _in_workers(tasks: list[RunTask], groups: list[WorkerGroup]) -> Iterator[tuple[Outcome, int]]:
    """(outcome, runs still in flight) as runs finish, at most ``group.size`` per group."""
    context = multiprocessing.get_context("spawn")
    pools = [
        ProcessPoolExecutor(
            group.size, mp_context=context, initializer=_init_worker, initargs=(group.cuda_visible,)
        )
        for group in groups
    ]
    queue, load = deque(tasks), [0] * len(groups)
    running: dict[Future[Outcome], tuple[int, RunTask]] = {}
    try:
        while queue or running:
            free = [i for i, group in enumerate(groups) if load[i] < group.size]
            while queue and free:
                index = min(free, key=lambda i: load[i])
                task = queue.popleft()
                try:
                    running[pools[index].submit(execute_run, task)] = (index, task)
                    load[index] += 1
                except BrokenProcessPool:
                    yield _died(task), len(running)
                free = [i for i, group in enumerate(groups) if load[i] < group.size]
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                index, task = running.pop(future)
                load[index] -= 1
                try:
                    outcome = future.result()
                except BrokenProcessPool:
                    outcome = _died(task)
                yield outcome, len(running)
    finally:
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)


def _outcomes(tasks: list[RunTask], execution: Execution) -> Iterator[tuple[Outcome, int]]:
    if execution.executor == "ray":
        from attnzoo.bench.ray_executor import ray_outcomes

        return ray_outcomes(tasks, execution.threads, execution.gpus_per_run, execution.ray_address)
    if min(execution.jobs, len(tasks)) <= 1:  # one run at a time: no worker to start
        return _in_process(tasks)
    return _in_workers(tasks, execution.groups)


def _progress_line(outcome: Outcome, done: int, total: int, running: int, timing: str) -> str:
    head = f"[{done}/{total} done, {running} running] {outcome.entry} seed {outcome.seed}"
    if outcome.result is None:
        return f"{head}: FAILED: {outcome.error} ({timing})"
    result = outcome.result
    return (
        f"{head}: {outcome.how}, accuracy {result['accuracy']:.3f}, "
        f"{result['images_per_s']:.0f} img/s ({timing})"
    )


def run_leaderboard(
    settings: BenchSettings,
    entries: list[Entry],
    out: Path,
    skipped: list[dict[str, str]] | None = None,
    log: Callable[[str], None] = print,
    execution: Execution | None = None,
) -> Leaderboard:
    """Train (or reuse) every (entry, seed) run under ``out/runs`` and summarise the entries
    whose runs all finished; the failed runs are listed with their errors."""
    execution = execution or Execution()
    if not entries or entries[0].attention is not None:
        raise ValueError("the first entry must be the baseline (attention None)")
    tasks = []
    for entry in entries:
        for seed in settings.seeds:
            config = settings.config(entry, seed)
            run_dir = out / "runs" / entry.name / f"seed{seed}"
            check_run_folder(config, run_dir)  # other settings: an error before any training
            task = RunTask(
                entry.name, seed, config, run_dir, execution.threads, execution.tensorboard
            )
            tasks.append(task)
    complete = [t for t in tasks if (t.run_dir / "result.json").is_file()]
    # GAttANet's runs (two forward passes: the slowest) go first, so that no core idles
    # behind one of them at the end; the results are the same in any order.
    pending = sorted(
        (t for t in tasks if not (t.run_dir / "result.json").is_file()),
        key=lambda t: t.config.attention != "gattanet",
    )
    where = f"{min(execution.jobs, len(pending) or 1)} at a time (local)"
    if execution.executor == "ray":
        where = f"as Ray tasks of {execution.threads} CPU(s), {execution.gpus_per_run:g} GPU"
    log(
        f"{len(tasks)} runs ({len(entries)} entries x {len(settings.seeds)} seeds), "
        f"{len(tasks) - len(pending)} already complete; {len(pending)} to run, {where}"
    )
    results: dict[tuple[str, int], dict[str, Any]] = {}
    counts = {"trained": 0, "resumed": 0, "reused": 0}
    failed: list[dict[str, Any]] = []
    start = time.perf_counter()
    done, ran = 0, 0
    reused = ((execute_run(task), 0) for task in complete)  # each reads its result.json
    for outcome, running in itertools.chain(reused, _outcomes(pending, execution)):
        done += 1
        ran += outcome.how != "reused"
        elapsed = time.perf_counter() - start
        timing = f"elapsed {format_duration(elapsed)}"
        if ran and len(pending) > ran:
            timing += f", ETA {format_duration(elapsed / ran * (len(pending) - ran))}"
        log(_progress_line(outcome, done, len(tasks), running, timing))
        if outcome.result is None:
            failed.append({"entry": outcome.entry, "seed": outcome.seed, "error": outcome.error})
        else:
            counts[outcome.how] += 1
            results[(outcome.entry, outcome.seed)] = outcome.result
    rows = summarise(entries, settings.seeds, results)
    failed.sort(key=lambda f: ([e.name for e in entries].index(f["entry"]), f["seed"]))
    return Leaderboard(rows, list(skipped or []), counts, time.perf_counter() - start, failed)
