"""Checkpoints: safetensors weights + JSON metadata + tensor-only training state.

A checkpoint is a folder ``RUN/checkpoints/step_00000123/`` holding

- ``model.safetensors``: the model's state (parameters and buffers);
- ``meta.json``: the resolved config, epoch, step, running sums of the epoch, data statistics;
- ``state.pt``: optimizer, grad-scaler and RNG states: plain tensors and numbers, saved with
  ``torch.save`` and loaded with ``weights_only=True`` (no arbitrary unpickling).

The folder is written under a temporary name and renamed into place, then ``latest.json`` is
replaced atomically to point at it: a run killed at any moment leaves the previous checkpoint
intact and never a half-written one behind the pointer.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

LATEST = "latest.json"


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def write_json_atomic(path: str | Path, content: Any) -> None:
    """Write JSON to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as handle:
        json.dump(content, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state of the underlying model (DDP and torch.compile wrappers removed), on the CPU."""
    inner = unwrap(model)
    # clone(): safetensors refuses tensors that share storage (tied weights).
    return {k: v.detach().cpu().clone().contiguous() for k, v in inner.state_dict().items()}


def unwrap(model: nn.Module) -> nn.Module:
    inner: Any = model
    while True:
        if hasattr(inner, "_orig_mod"):  # torch.compile
            inner = inner._orig_mod
        elif isinstance(inner, nn.parallel.DistributedDataParallel):
            inner = inner.module
        else:
            return inner


def save_checkpoint(
    directory: str | Path,
    step: int,
    model: nn.Module,
    meta: dict[str, Any],
    state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write checkpoint ``step`` under ``directory`` atomically; keep the ``keep`` newest."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:08d}"
    final = directory / name
    tmp = directory / f".{name}.{os.getpid()}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(model_state(model), str(tmp / "model.safetensors"), metadata={"step": str(step)})
    torch.save(state, tmp / "state.pt")
    with open(tmp / "meta.json", "w") as handle:
        json.dump({**meta, "step": step}, handle, indent=2, sort_keys=True)
    for file in tmp.iterdir():
        _fsync_file(file)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_json_atomic(directory / LATEST, {"checkpoint": name, "step": step})
    steps = sorted(p for p in directory.glob("step_*") if p.is_dir())
    for old in steps[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def find_checkpoint(path: str | Path) -> Path:
    """Resolve a run folder, its ``checkpoints`` folder or a ``step_*`` folder to a checkpoint."""
    path = Path(path)
    for directory in (path / "checkpoints", path):
        pointer = directory / LATEST
        if pointer.is_file():
            name = json.loads(pointer.read_text())["checkpoint"]
            return directory / name
    if (path / "meta.json").is_file():
        return path
    raise FileNotFoundError(
        f"no checkpoint at {path}: expected a run folder (with checkpoints/{LATEST}), its "
        "checkpoints folder, or a checkpoints/step_* folder written by `attnzoo train`"
    )


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any] | None]:
    """(weights, metadata, training state or None) of a checkpoint; never unpickles objects."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = find_checkpoint(path)
    weights_file, meta_file, state_file = (
        folder / "model.safetensors",
        folder / "meta.json",
        folder / "state.pt",
    )
    for file, what in ((weights_file, "safetensors weights"), (meta_file, "JSON metadata")):
        if not file.is_file():
            raise FileNotFoundError(f"checkpoint {folder}: missing {file.name} ({what})")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{meta_file}: not valid JSON metadata ({error})") from None
    try:
        weights = load_file(str(weights_file), device=str(map_location))
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{weights_file}: not a valid safetensors file ({error})") from None
    state = None
    if state_file.is_file():
        try:
            state = torch.load(state_file, map_location=map_location, weights_only=True)
        except Exception as error:
            raise ValueError(
                f"{state_file}: not a tensor-only training state ({type(error).__name__}: {error})"
            ) from None
    return weights, meta, state
