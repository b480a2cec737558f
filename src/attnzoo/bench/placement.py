"""How many runs at a time, and where: CPU cores, visible GPUs, runs per GPU.

``--jobs auto`` picks, on the CPU, one run per physical core the process may use (each run
with ``--threads`` threads, default 1: ``cores // threads`` runs); on CUDA, one run per visible
GPU times ``--runs-per-gpu``. Each worker process of a GPU sees only that GPU
(``CUDA_VISIBLE_DEVICES`` set in the worker before CUDA starts), so a run's ``cuda`` device is
that GPU and its config (``device``) is the same whichever GPU ran it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WorkerGroup", "parse_jobs", "physical_cores", "plan_workers"]


@dataclass(frozen=True)
class WorkerGroup:
    """``size`` worker processes that all see ``cuda_visible`` (None: leave it as it is)."""

    size: int
    cuda_visible: str | None = None


def parse_jobs(text: str) -> int | None:
    """``--jobs``: a count >= 1, or ``auto`` (None)."""
    if text.strip() == "auto":
        return None
    try:
        jobs = int(text)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise ValueError(f"--jobs: expected a count >= 1 or auto, got {text!r}")
    return jobs


def physical_cores(
    cpus: set[int] | None = None, sysfs: Path = Path("/sys/devices/system/cpu")
) -> int:
    """Physical cores among the CPUs this process may run on (hyper-threads counted once).

    Where the topology cannot be read (not Linux), every usable logical CPU counts as a core.
    """
    if cpus is None:
        cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if cpus is None:
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        topology = sysfs / f"cpu{cpu}" / "topology"
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            return len(cpus)
        cores.add((package, core))
    return max(1, len(cores))


def _visible_gpu_ids(gpu_count: int, environment: str | None) -> list[str]:
    """The ids to put in a worker's CUDA_VISIBLE_DEVICES, one per GPU this process sees."""
    if environment is None or not environment.strip():
        return [str(index) for index in range(gpu_count)]
    ids = [part.strip() for part in environment.split(",") if part.strip()]
    return ids[:gpu_count]


def plan_workers(
    jobs: int | None,
    device: str,
    threads: int,
    gpu_count: int = 0,
    runs_per_gpu: int = 1,
    cuda_visible: str | None = None,
    cores: int | None = None,
) -> list[WorkerGroup]:
    """The worker groups for ``jobs`` runs at a time (None: ``auto``) on ``device``.

    ``device`` is the resolved device (``cpu``, ``cuda`` or ``cuda:K``); ``gpu_count`` and
    ``cuda_visible`` describe the GPUs this process sees (torch.cuda.device_count() and its
    CUDA_VISIBLE_DEVICES). On CUDA the runs are spread over the GPUs in turn, at most
    ``runs_per_gpu`` on each; an explicit ``cuda:K`` keeps every run on GPU K.
    """
    if runs_per_gpu < 1:
        raise ValueError(f"--runs-per-gpu: expected a count >= 1, got {runs_per_gpu}")
    if not device.startswith("cuda"):
        if jobs is None:
            jobs = max(1, (cores if cores is not None else physical_cores()) // max(1, threads))
        return [WorkerGroup(jobs)]
    if device != "cuda":  # cuda:K: every worker uses that GPU through the run's device
        capacity = runs_per_gpu
        groups = [WorkerGroup(capacity if jobs is None else jobs)]
        if jobs is not None and jobs > capacity:
            raise ValueError(
                f"--jobs {jobs} on {device}: at most --runs-per-gpu ({runs_per_gpu}) runs share "
                "one GPU; raise --runs-per-gpu or use --device cuda for every visible GPU"
            )
        return groups
    ids = _visible_gpu_ids(gpu_count, cuda_visible)
    if not ids:
        raise ValueError("--device cuda: no CUDA GPU is visible to this process")
    capacity = len(ids) * runs_per_gpu
    if jobs is None:
        jobs = capacity
    if jobs > capacity:
        raise ValueError(
            f"--jobs {jobs}: {len(ids)} visible GPU(s) x --runs-per-gpu {runs_per_gpu} run "
            f"at most {capacity} at a time; raise --runs-per-gpu or lower --jobs"
        )
    sizes = [0] * len(ids)
    for slot in range(jobs):
        sizes[slot % len(ids)] += 1
    return [WorkerGroup(size, gpu) for size, gpu in zip(sizes, ids, strict=True) if size]
