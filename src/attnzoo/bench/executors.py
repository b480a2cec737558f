"""Running a leaderboard's runs and collecting their results."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from attnzoo.bench.entries import BenchSettings, Entry
from attnzoo.bench.runs import run_one
from attnzoo.bench.stats import summarise

__all__ = ["Leaderboard", "format_duration", "run_leaderboard"]


def format_duration(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60}m{whole % 60:02d}s"


@dataclass
class Leaderboard:
    rows: list[dict[str, Any]]
    skipped: list[dict[str, str]]
    counts: dict[str, int]
    wall_s: float


def run_leaderboard(
    settings: BenchSettings,
    entries: list[Entry],
    out: Path,
    skipped: list[dict[str, str]] | None = None,
    log: Callable[[str], None] = print,
) -> Leaderboard:
    """Train (or reuse) every (entry, seed) run under ``out/runs`` and summarise them."""
    if not entries or entries[0].attention is not None:
        raise ValueError("the first entry must be the baseline (attention None)")
    jobs = [(entry, seed) for entry in entries for seed in settings.seeds]
    pending = sum(
        not (out / "runs" / e.name / f"seed{s}" / "result.json").is_file() for e, s in jobs
    )
    log(
        f"{len(jobs)} runs ({len(entries)} entries x {len(settings.seeds)} seeds), "
        f"{len(jobs) - pending} already complete"
    )
    results: dict[tuple[str, int], dict[str, Any]] = {}
    counts = {"trained": 0, "resumed": 0, "reused": 0}
    start = time.perf_counter()
    spent, done = 0.0, 0
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        for index, (entry, seed) in enumerate(jobs, 1):
            run_dir = out / "runs" / entry.name / f"seed{seed}"
            tick = time.perf_counter()
            result, how = run_one(settings.config(entry, seed), run_dir)
            counts[how] += 1
            results[(entry.name, seed)] = result
            if how != "reused":
                spent += time.perf_counter() - tick
                done += 1
            left = pending - done
            eta = f", ETA {format_duration(spent / done * left)}" if done and left else ""
            log(
                f"[{index}/{len(jobs)}] {entry.name} seed {seed}: {how}, "
                f"accuracy {result['accuracy']:.3f}, {result['images_per_s']:.0f} img/s "
                f"(elapsed {format_duration(time.perf_counter() - start)}{eta})"
            )
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
    rows = summarise(entries, settings.seeds, results)
    return Leaderboard(rows, list(skipped or []), counts, time.perf_counter() - start)
