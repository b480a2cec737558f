"""The run folder's guard: one process at a time, nothing another run wrote is overwritten,
nothing a folder names is imported unless trusted, and damage from a killed run is repaired.

- :class:`RunLock`: an exclusive ``fcntl.flock`` on ``OUT/.lock`` held for the whole run. The
  kernel releases it when the holder dies (even ``kill -9``), so a stale lock is simply taken
  over; the file records the holder's pid for the error message of a second run.
- :func:`check_fresh`: a fresh run refuses a folder that holds another run's checkpoints,
  metrics or configuration; a folder whose only content is this very configuration (a run
  killed before its first checkpoint) is reused.
- :func:`read_metrics` / :func:`rewrite_metrics`: ``metrics.jsonl`` with a half-written last
  line (a kill during the append) is repaired; any other damage is an error naming the line.
- :func:`check_trusted`: a config read from a run folder that names code
  (``package.module:function``) is refused unless the caller opted in.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import TracebackType
from typing import Any

from attnzoo.errors import RunFolderError, UsageError, warn
from attnzoo.train.config import TrainConfig

LOCK = ".lock"
TRUST_HINT = "pass --trust-run-folder (API: trust_code=True) if you trust who wrote the folder"
# Settings that do not change what a run computes; a restart may differ in them.
_COSMETIC = ("progress", "log_every")


def prepare_out(out: Path) -> None:
    """Create ``out`` (a usage error when it or a parent is a file)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file, not a folder; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocking = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
        raise UsageError(
            f"--out {out}: {blocking or 'a parent'} is a file, so the folder cannot be created "
            "below it; choose another --out"
        ) from None


class RunLock:
    """Exclusive use of a run folder by this process (see the module docstring)."""

    def __init__(self, out: Path) -> None:
        self.path = out / LOCK
        self.handle: Any = None

    def __enter__(self) -> RunLock:
        import fcntl

        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RunFolderError(
                f"{self.path.parent} is in use by another attnzoo run (pid {holder}); wait for "
                "it to finish, stop it, or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self.handle = handle
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self.handle is not None:
            self.handle.close()  # closing releases the flock
            self.handle = None


def remove_temporaries(out: Path) -> None:
    """Remove what writes killed half-way left behind (call while holding the lock)."""
    for folder in (out, out / "checkpoints"):
        if not folder.is_dir():
            continue
        for path in folder.glob(".*.tmp"):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def read_json(path: Path, what: str) -> Any:
    """The JSON content of a run-folder file, or an error naming it and what is wrong."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunFolderError(
            f"{path}: damaged or hand-edited {what} (not valid JSON: {error}); restore it from a "
            "copy or start a new run with another --out"
        ) from None


def config_from_json(values: Any, source: Path) -> TrainConfig:
    """A validated TrainConfig from a run folder's JSON, errors naming the file."""
    if not isinstance(values, dict):
        raise RunFolderError(f"{source}: expected a JSON object with the run's settings")
    try:
        config = TrainConfig.from_dict(values)
        config.validate()
    except UsageError as error:
        raise RunFolderError(f"{source}: damaged or hand-edited configuration: {error}") from None
    return config


def check_trusted(config: TrainConfig, source: Path, trust_code: bool) -> None:
    """Refuse a run folder's config that names code to import, unless trusted."""
    if ":" in config.model and not trust_code:
        raise RunFolderError(
            f"{source} names the model {config.model!r}, code that loading it would import and "
            f"run; only registered model names load by default; {TRUST_HINT}"
        )


def check_fresh(out: Path, config: TrainConfig) -> None:
    """A fresh run may use ``out`` only if it holds no other run (see the module docstring)."""
    from attnzoo.train.checkpoint import step_folders

    hint = "pass --resume to continue it or choose another --out"
    if step_folders(out / "checkpoints"):
        raise RunFolderError(f"{out} already holds a run (checkpoints/); {hint}")
    metrics = out / "metrics.jsonl"
    if metrics.is_file() and metrics.stat().st_size > 0:
        raise RunFolderError(f"{out} already holds a run (metrics.jsonl); {hint}")
    saved_file = out / "config.json"
    if not saved_file.is_file():
        return
    saved = read_json(saved_file, "run configuration")
    saved = saved if isinstance(saved, dict) else {}
    new = config.to_dict()
    keys = (set(new) | set(saved)) - set(_COSMETIC)
    differ = sorted(k for k in keys if saved.get(k) != new.get(k))
    if differ:
        raise RunFolderError(
            f"{saved_file} belongs to another run (it differs in {', '.join(differ)}); {hint}"
        )


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl``; a half-written last line is dropped with a warning."""
    if not path.is_file():
        return []
    lines = path.read_text(errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
                raise ValueError("no integer 'epoch'")
        except ValueError as error:
            if number == len(lines):
                warn(f"{path}: dropping its half-written last line {number} ({error})")
                break
            raise RunFolderError(
                f"{path}: line {number} is damaged or hand-edited ({error}); fix or delete that "
                "line, then resume"
            ) from None
        records.append(record)
    return records


def rewrite_metrics(path: Path, records: list[dict[str, Any]]) -> None:
    """Replace ``metrics.jsonl`` atomically with ``records``."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(tmp, path)


def metrics_for_resume(path: Path, completed_epochs: int, last: dict[str, Any] | None) -> None:
    """Make ``metrics.jsonl`` hold exactly the epochs up to the checkpoint resumed from: later
    lines are dropped (they are recomputed), and the checkpoint's own epoch line, written after
    the checkpoint and possibly lost to a kill, is restored from the checkpoint's metadata."""
    records = [r for r in read_metrics(path) if r["epoch"] <= completed_epochs]
    if last is not None and last.get("epoch") == completed_epochs:
        if not records or records[-1]["epoch"] < completed_epochs:
            records.append(last)
    rewrite_metrics(path, records)


_META_KEYS = {"config": dict, "mean": list, "std": list, "num_classes": int, "step": int}
_RESUME_KEYS = {"epoch": int, "step_in_epoch": int, "running": dict}


def load_run(
    path: str | Path, trust_code: bool = False, for_resume: bool = False
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None, TrainConfig]:
    """(weights, metadata, training state, config) of a checkpoint, every part checked: the
    metadata's keys and types, the config (refused when it names code and ``trust_code`` is
    False)."""
    from attnzoo.train.checkpoint import find_checkpoint, load_checkpoint

    folder = find_checkpoint(path)
    weights, meta, state = load_checkpoint(folder)
    source = folder / "meta.json"
    wanted = {**_META_KEYS, **(_RESUME_KEYS if for_resume else {})}
    for key, kind in wanted.items():
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise RunFolderError(
                f"{source}: damaged or hand-edited: {key!r} should be a {kind.__name__}, got "
                f"{meta.get(key)!r}"
            )
    config = config_from_json(meta["config"], source)
    check_trusted(config, source, trust_code)
    return weights, meta, state, config


def load_weights(model: Any, weights: dict[str, Any], source: str | Path) -> None:
    """Load a checkpoint's weights into the model its config builds; a checkpoint of another
    model (missing, unexpected or differently shaped tensors) is an error naming a few."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    shapes = sorted(
        k
        for k in set(expected) & set(weights)
        if tuple(expected[k].shape) != tuple(weights[k].shape)
    )
    if missing or unexpected or shapes:
        parts = [
            f"{what} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for what, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("shape of", shapes),
            )
            if keys
        ]
        raise RunFolderError(
            f"{source}: these weights belong to another model ({'; '.join(parts)}); use the "
            "checkpoint with the run folder it was written in"
        )
    model.load_state_dict(weights)
