"""Progress: a rich progress bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any


class Progress:
    """``mode``: ``auto`` (bar if stdout is a TTY and rich is installed), ``bar``, ``plain``,
    ``none``. Plain mode prints a line every ``log_every`` steps and one per epoch."""

    def __init__(self, mode: str = "auto", log_every: int = 50) -> None:
        if mode == "auto":
            mode = "bar" if sys.stdout.isatty() and _has_rich() else "plain"
        if mode == "bar" and not _has_rich():
            raise ValueError("--progress bar needs rich (pip install 'attnzoo[train]')")
        self.mode = mode
        self.log_every = max(1, log_every)
        self._bar: Any = None
        self._task: Any = None
        self._epoch = (0, 0)
        self._steps = 0

    def __enter__(self) -> Progress:
        if self.mode == "bar":
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
            )
            self._bar.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(kind, error, traceback)

    def start_epoch(self, epoch: int, epochs: int, steps: int, start: int = 0) -> None:
        self._epoch, self._steps = (epoch + 1, epochs), steps
        if self._bar is not None:
            if self._task is not None:
                self._bar.remove_task(self._task)
            self._task = self._bar.add_task(
                f"epoch {epoch + 1}/{epochs}", total=steps, completed=start, status=""
            )

    def step(self, step: int, loss: float, accuracy: float, lr: float) -> None:
        status = f"loss {loss:.4f} acc {accuracy:.3f} lr {lr:.4g}"
        if self._bar is not None:
            self._bar.update(self._task, completed=step, status=status)
        elif self.mode == "plain" and (step % self.log_every == 0 or step == self._steps):
            epoch, epochs = self._epoch
            print(f"epoch {epoch}/{epochs} step {step}/{self._steps} {status}", flush=True)

    def end_epoch(self, record: dict[str, Any]) -> None:
        if self.mode == "none":
            return
        parts = [f"epoch {record['epoch']}"] + [
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in record.items()
            if k != "epoch"
        ]
        line = " | ".join(parts)
        if self._bar is not None:
            self._bar.console.print(line)
        else:
            print(line, flush=True)


def _has_rich() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True
