"""``--executor ray``: each leaderboard run as a Ray task, on a local instance or a cluster.

A task asks for the CPUs (``--threads``) and the GPU share (``1 / --runs-per-gpu``) of one run;
Ray places it and sets its ``CUDA_VISIBLE_DEVICES``. The task writes its run folder under
``--out``, which on a cluster must be storage every node sees, so reuse and resume work as
with local workers. Every node needs attnzoo installed (the same version) and the data.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from attnzoo.bench.executors import Outcome, RunTask

__all__ = ["ray_outcomes", "require_ray"]


def require_ray() -> ModuleType:
    """The ``ray`` module, or a one-line ValueError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ValueError(
            "--executor ray needs Ray, which is not installed: pip install 'attnzoo[ray]'"
        ) from None
    return ray


def ray_outcomes(
    tasks: list[RunTask], threads: int, gpus_per_run: float, address: str | None
) -> Iterator[tuple[Outcome, int]]:
    """(outcome, runs queued or running) as the Ray tasks finish, in completion order."""
    from attnzoo.bench.executors import Outcome, execute_run

    ray = require_ray()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=threads, num_gpus=gpus_per_run, max_retries=0)(execute_run)
        waiting = {remote.remote(task): task for task in tasks}
        while waiting:
            ready, _ = ray.wait(list(waiting), num_returns=1)
            for reference in ready:
                task = waiting.pop(reference)
                try:
                    outcome = ray.get(reference)
                except Exception as error:  # the worker died or Ray lost the task
                    message = f"Ray task failed: {type(error).__name__}: {error}".splitlines()[0]
                    outcome = Outcome(task.entry, task.seed, "failed", error=message)
                yield outcome, len(waiting)
    finally:
        if started_here:
            ray.shutdown()
