"""Peak tensor memory of a piece of work, on any device.

On CUDA the caching allocator's peak is exact. On CPU there is no allocator statistic, so a
dispatch mode tracks every tensor storage that an operator returns and sums those still alive
after each operator: the peak of that sum is the peak memory of the tensors the work created
(kernel-internal scratch buffers are not seen; inputs and parameters created before the work
are not counted). Deterministic, unlike RSS on a shared machine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class _LiveStorages(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.storages: dict[int, tuple[StorageWeakRef, int]] = {}
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for key in [k for k, (ref, _) in self.storages.items() if ref.expired()]:
            del self.storages[key]
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor) and tensor.device.type != "meta":
                storage = tensor.untyped_storage()
                self.storages.setdefault(
                    storage._cdata, (StorageWeakRef(storage), storage.nbytes())
                )
        self.peak = max(self.peak, sum(nbytes for _, nbytes in self.storages.values()))
        return out


def peak_memory_bytes(work: Callable[[], Any], device: torch.device | str = "cpu") -> int:
    """Peak bytes of the tensors allocated while ``work()`` runs."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
        work()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - baseline)
    tracker = _LiveStorages()
    with tracker:
        work()
    return int(tracker.peak)
