"""Safe reading and writing of checkpoint files.

Reading never unpickles arbitrary objects: ``.pth``/``.pth.tar``/``.pt`` files go through
``torch.load(weights_only=True)`` (tensors and plain containers only), safetensors files through
``safetensors``. The state dict is found inside the usual wrappers (``{"state_dict": ...}``,
``{"model": ...}``, with epoch/optimizer entries beside it), and the ``module.`` prefix that
``DataParallel`` adds is removed. Every failure is a ValueError that names the file.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch

__all__ = ["SAFETENSORS_PLAN_KEY", "read_checkpoint", "save_safetensors"]

# safetensors metadata key under which attnzoo records how to build the model (JSON)
SAFETENSORS_PLAN_KEY = "attnzoo.plan"
_WRAPPERS = ("state_dict", "model", "model_state_dict", "net")
_PREFIXES = ("module.", "model.")


def _is_safetensors(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(9)
    # an 8-byte little-endian header length, then the JSON header
    return len(head) == 9 and head[8:9] == b"{"


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:  # safetensors raises its own error types
        raise ValueError(
            f"{path}: cannot read it as a safetensors file (truncated or corrupt?): {error}"
        ) from None
    return state, metadata


def _read_torch(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        text = str(error)
        # The weights-only unpickler wraps every failure in this error; only an "Unsupported
        # global" means the file really holds Python objects. Anything else is a damaged file.
        if "Weights only load failed" in text and "Unsupported global" in text:
            reason = text.strip().splitlines()[0]
            raise ValueError(
                f"{path}: refused: the file holds pickled Python objects, not only tensors, and "
                f"attnzoo never unpickles arbitrary code ({reason}). Re-save its state_dict "
                "with torch.save, or convert it where you trust it"
            ) from None
        raise ValueError(
            f"{path}: cannot read it as a PyTorch checkpoint (not one, truncated or corrupt?)"
        ) from None
    except Exception as error:
        # Parsing an untrusted file can fail in any way (IndexError, KeyError, struct.error...
        # from a text or random-bytes file): each is a damaged file, named, not a traceback.
        raise ValueError(
            f"{path}: cannot read it as a PyTorch checkpoint (not one, truncated or corrupt?): "
            f"{type(error).__name__}: {error}"
        ) from None


def _unwrap(payload: Any, path: Path) -> dict[str, torch.Tensor]:
    while isinstance(payload, dict) and not _is_state_dict(payload):
        inner = next((payload[k] for k in _WRAPPERS if isinstance(payload.get(k), dict)), None)
        if inner is None:
            keys = ", ".join(sorted(map(str, payload))[:8])
            raise ValueError(
                f"{path}: no state dict inside: top-level keys are {keys} (expected tensors, or "
                f"one of {', '.join(_WRAPPERS)} holding them)"
            )
        payload = inner
    if not isinstance(payload, dict) or not payload:
        raise ValueError(f"{path}: expected a state dict (name -> tensor), got {type(payload)}")
    state = {str(k): v for k, v in payload.items()}
    for prefix in _PREFIXES:
        if all(key.startswith(prefix) for key in state):
            state = {key[len(prefix) :]: value for key, value in state.items()}
    return state


def _is_state_dict(payload: dict[Any, Any]) -> bool:
    return bool(payload) and all(isinstance(v, torch.Tensor) for v in payload.values())


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(state_dict, safetensors_metadata)`` of a checkpoint file, read safely.

    Raises FileNotFoundError for a missing file and ValueError (naming the file) for a
    truncated or corrupt one, a pickled non-tensor payload, or one without a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if _is_safetensors(path):
        state, metadata = _read_safetensors(path)
        return _unwrap(state, path), metadata
    return _unwrap(_read_torch(path), path), {}


def save_safetensors(
    state: dict[str, torch.Tensor], path: str | Path, plan: dict[str, Any] | None = None
) -> Path:
    """Write ``state`` as safetensors, with ``plan`` (how to build the model) as metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt"}
    if plan is not None:
        metadata[SAFETENSORS_PLAN_KEY] = json.dumps(plan, sort_keys=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(tmp), metadata)
    tmp.replace(path)
    return path
