"""An optional TensorBoard log of a run (``--tensorboard``), beside its metrics.jsonl.

Written with torch's own :class:`torch.utils.tensorboard.SummaryWriter` into the run folder,
one scalar per number of each epoch's metrics.jsonl record at that record's global step:
``train_loss`` as ``train/loss``, ``val_accuracy`` as ``val/accuracy``, ``lr``, ``throughput``.
``tensorboard --logdir runs/`` then shows every run under its folder's name. A resumed run
appends a new event file; TensorBoard drops the events of the old file from the step the
run restarted at (``purge_step``), so a step logged before a kill is never shown twice.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["TensorBoardLog", "require_summary_writer"]


def require_summary_writer() -> Any:
    """torch's SummaryWriter class, or a one-line ValueError saying how to install it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ValueError(
            "--tensorboard needs the tensorboard package: pip install 'attnzoo[tensorboard]'"
        ) from None
    return SummaryWriter


def _tag(key: str) -> str:
    for prefix in ("train_", "val_"):
        if key.startswith(prefix):
            return f"{prefix[:-1]}/{key[len(prefix) :]}"
    return key


class TensorBoardLog:
    """Use as ``with TensorBoardLog(run_dir) as log: train(..., on_record=log.add_record)``."""

    def __init__(self, run_dir: str | Path) -> None:
        self._writer_class = require_summary_writer()
        self.run_dir = Path(run_dir)
        # Made at the first record: under torchrun only rank 0 gets records and writes a file.
        self.writer: Any = None

    def add_record(self, record: dict[str, Any]) -> None:
        step = int(record["step"])
        if self.writer is None:
            # Records are written at epoch ends after the checkpoint that a resume restarts
            # from, so every older event at or after this step belongs to a killed attempt.
            self.writer = self._writer_class(log_dir=str(self.run_dir), purge_step=step)
        for key, value in record.items():
            if key not in ("epoch", "step") and isinstance(value, int | float):
                self.writer.add_scalar(_tag(key), float(value), step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()
