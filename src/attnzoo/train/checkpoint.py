"""Checkpoints: safetensors weights + JSON metadata + tensor-only training state.

A checkpoint is a folder ``RUN/checkpoints/step_00000123/`` holding

- ``model.safetensors``: the model's state (parameters and buffers);
- ``meta.json``: the resolved config, epoch, step, running sums of the epoch, data statistics;
- ``state.pt``: optimizer, grad-scaler and RNG states: plain tensors and numbers, saved with
  ``torch.save`` and loaded with ``weights_only=True`` (no arbitrary unpickling).

The folder is written under a temporary name and renamed into place, then ``latest.json`` is
replaced atomically to point at it: a run killed at any moment leaves the previous checkpoint
intact and never a half-written one behind the pointer. Temporary folders of killed writes are
removed by the next write. A pointer that is damaged or names a missing or incomplete folder
falls back, with a warning, to the newest intact checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnzoo.errors import RunFolderError, warn

LATEST = "latest.json"
STEP_GLOB = "step_[0-9]*"


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


def rng_state(device: torch.device) -> dict[str, Any]:
    """The RNG states (torch, CUDA, Python) as tensors and numbers, for ``state.pt``."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    py_version, py_state, py_gauss = random.getstate()
    state["python"] = torch.tensor(py_state, dtype=torch.int64)
    state["python_version"] = py_version
    state["python_gauss"] = py_gauss
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)
    random.setstate(
        (state["python_version"], tuple(state["python"].tolist()), state["python_gauss"])
    )


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
    for stale in directory.glob(".step_*.tmp"):  # left by killed writes
        shutil.rmtree(stale, ignore_errors=True)
    tmp = directory / f".{name}.{os.getpid()}.tmp"
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
    steps = step_folders(directory)
    for old in steps[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def step_folders(directory: Path) -> list[Path]:
    """The ``step_*`` folders under ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob(STEP_GLOB) if p.is_dir())


def _missing_part(folder: Path) -> str | None:
    """Why ``folder`` is not a complete checkpoint, or None when it is."""
    if not folder.is_dir():
        return "it does not exist"
    for file in ("model.safetensors", "meta.json"):
        if not (folder / file).is_file():
            return f"it has no {file}"
    try:
        json.loads((folder / "meta.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "its meta.json is not valid JSON"
    return None


def _pointed(directory: Path) -> str | None:
    """The folder name ``latest.json`` names, or None (with a warning when it is damaged)."""
    pointer = directory / LATEST
    if not pointer.is_file():
        return None
    try:
        name = json.loads(pointer.read_text())["checkpoint"]
        if isinstance(name, str) and Path(name).name == name and name.startswith("step_"):
            return name
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        pass
    warn(f"{pointer} is damaged; using the newest intact checkpoint instead")
    return None


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint ``latest.json`` of ``directory`` names, or, when that one is missing or
    incomplete, the newest intact ``step_*`` folder (with a warning); None when there is none."""
    directory = Path(directory)
    name = _pointed(directory)
    if name is not None and _missing_part(directory / name) is None:
        return directory / name
    intact = [p for p in reversed(step_folders(directory)) if _missing_part(p) is None]
    if name is not None:
        why = _missing_part(directory / name)
        fallback = f"falling back to {intact[0].name}" if intact else "no intact one is left"
        warn(f"{directory / LATEST} names {name}, but {why}; {fallback}")
    elif intact and not (directory / LATEST).is_file():
        warn(f"{directory} has no {LATEST}; using the newest intact checkpoint {intact[0].name}")
    return intact[0] if intact else None


def find_checkpoint(path: str | Path) -> Path:
    """Resolve a run folder, its ``checkpoints`` folder or a ``step_*`` folder to a checkpoint."""
    path = Path(path)
    for directory in (path / "checkpoints", path):
        if (directory / LATEST).is_file() or step_folders(directory):
            found = latest_checkpoint(directory)
            if found is None:
                why = "; ".join(f"{p.name}: {_missing_part(p)}" for p in step_folders(directory))
                raise RunFolderError(
                    f"{directory}: no complete checkpoint ({why or 'no step_* folder'}); "
                    "resume the run with `attnzoo train --resume --out RUN` or train again"
                )
            return found
    if (path / "meta.json").is_file() or (path.is_dir() and path.match(STEP_GLOB)):
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
            raise RunFolderError(f"checkpoint {folder}: missing {file.name} ({what})")
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunFolderError(
            f"{meta_file}: damaged or hand-edited (not valid JSON metadata: {error})"
        ) from None
    if not isinstance(meta, dict):
        raise RunFolderError(f"{meta_file}: expected a JSON object of checkpoint metadata")
    try:
        weights = load_file(str(weights_file), device=str(map_location))
    except (SafetensorError, OSError) as error:
        raise RunFolderError(f"{weights_file}: not a valid safetensors file ({error})") from None
    state = None
    if state_file.is_file():
        try:
            state = torch.load(state_file, map_location=map_location, weights_only=True)
        except Exception as error:
            # torch's message runs to many lines; its first says what failed.
            first = (str(error).splitlines() or [""])[0]
            raise RunFolderError(
                f"{state_file}: not a tensor-only training state ({type(error).__name__}: {first})"
            ) from None
    return weights, meta, state
