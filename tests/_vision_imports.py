"""Import torchvision and timm in the test environment.

This machine's torch is a CPU build, while the torchvision wheel from the package index is a
CUDA build whose compiled operators do not load; torchvision then fails at import with
"operator torchvision::nms does not exist", because its Python side registers fake kernels for
``nms``/``qnms`` and that needs the operators' schemas. We declare those two schemas (the same
signatures torchvision's C++ library declares) before the import. The tests only build
ResNets, which never call these operators.

Real users with matching torch/torchvision builds need no such thing: plain ``import
torchvision`` works there.
"""

from __future__ import annotations

import types

import torch

_SCHEMA = "{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
_LIBRARY: torch.library.Library | None = None


def _declare_missing_operators() -> None:
    global _LIBRARY
    missing = [op for op in ("nms", "qnms") if not _has_operator(op)]
    if not missing:
        return
    _LIBRARY = torch.library.Library("torchvision", "FRAGMENT")  # kept alive: owns the schemas
    for op in missing:
        _LIBRARY.define(_SCHEMA.format(op=op))


def _has_operator(op: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{op}", "")
    except RuntimeError:
        return False
    return True


def import_torchvision() -> types.ModuleType:
    _declare_missing_operators()
    import torchvision

    return torchvision


def import_timm() -> types.ModuleType:
    _declare_missing_operators()  # timm imports torchvision
    import timm

    return timm
