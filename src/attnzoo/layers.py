"""Shared building blocks: reduced widths, input checks, conv-norm-act, squash functions,
float32 softmax under autocast, mask fill values, and attention-map recording."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SQUASHES",
    "ConvNormAct",
    "RecordsMaps",
    "attention_fp32",
    "check_input",
    "check_min_size",
    "check_spatial_size",
    "collect_maps",
    "get_squash",
    "mask_fill_value",
    "pointwise",
    "positions_first",
    "positions_last",
    "record_maps",
    "recording_maps",
    "reduced_channels",
    "run_fp32",
    "softmax_fp32",
]


def reduced_channels(
    channels: int,
    rd_ratio: float = 1 / 16,
    rd_channels: int | None = None,
    rd_divisor: int = 1,
    min_channels: int = 1,
) -> int:
    """Width of a bottleneck: ``rd_channels`` if given, else ``channels * rd_ratio``.

    The papers use the exact ``C / r`` (``rd_divisor=1``, rounded down, at least
    ``min_channels``). ``rd_divisor > 1`` rounds to a multiple as timm does (never more than
    10% below the exact width).
    """
    if rd_channels is not None:
        if rd_channels < 1:
            raise ValueError(f"rd_channels must be >= 1, got {rd_channels}")
        return int(rd_channels)
    if rd_ratio <= 0:
        raise ValueError(f"rd_ratio must be > 0, got {rd_ratio}")
    exact = channels * rd_ratio
    if rd_divisor <= 1:
        return max(min_channels, int(exact))
    floor = max(min_channels, rd_divisor)
    rounded = max(floor, int(exact + rd_divisor / 2) // rd_divisor * rd_divisor)
    if rounded < 0.9 * exact:
        rounded += rd_divisor
    return rounded


def check_input(
    x: torch.Tensor, channels: int | None, module: str, rank: int | tuple[int, ...] = 4
) -> None:
    """Raise ValueError naming what was expected and what arrived (rank, then channels)."""
    ranks = (rank,) if isinstance(rank, int) else rank
    if x.dim() not in ranks:
        layout = " or ".join(
            {4: "(B, C, H, W)", 5: "(B, C, T, H, W)", 2: "(B, C)"}[r] for r in ranks
        )
        raise ValueError(
            f"{module} expects a {layout} tensor of rank {' or '.join(map(str, ranks))}, "
            f"got rank {x.dim()} with shape {tuple(x.shape)}"
        )
    if channels is not None and x.shape[1] != channels:
        raise ValueError(
            f"{module} was built for {channels} channels, got {x.shape[1]} "
            f"(input shape {tuple(x.shape)})"
        )


def check_spatial_size(x: torch.Tensor, expected: tuple[int, int], module: str) -> None:
    """For size-bound modules: raise ValueError naming the size the module was built for."""
    got = tuple(x.shape[-2:])
    if got != tuple(expected):
        raise ValueError(
            f"{module} is bound to spatial size {expected[0]}x{expected[1]} (given at "
            f"construction), got {got[0]}x{got[1]}; rebuild it with spatial_size={got}"
        )


def check_min_size(x: torch.Tensor, min_size: int, module: str, reason: str) -> None:
    """For modules defined only above a map size: ValueError naming the minimum and the cause,
    instead of a pooling or convolution error from inside torch."""
    height, width = x.shape[-2:]
    if min(height, width) < min_size:
        raise ValueError(
            f"{module} needs feature maps of at least {min_size}x{min_size} ({reason}), "
            f"got {height}x{width}"
        )


def run_fp32(
    fn: Callable[..., torch.Tensor], *tensors: torch.Tensor, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """``fn(*tensors)`` in float32 with autocast off when autocast is on (float64 stays
    float64), the result cast to ``dtype`` (default: the first tensor's); without autocast,
    ``fn(*tensors)`` as it is.

    For reductions whose sums of products overflow fp16 at ordinary activation scales (dot
    products of unnormalised features, covariances, relation matrices) together with the
    layers that read them before anything bounds them again (a sigmoid, a normalisation).
    """
    first = tensors[0]
    if not torch.is_autocast_enabled(first.device.type):
        return fn(*tensors)
    compute = torch.float64 if first.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=first.device.type, enabled=False):
        return fn(*(t.to(compute) for t in tensors)).to(dtype or first.dtype)


def pointwise(vectors: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv`` (a 1x1 convolution) applied to pooled features ``vectors`` (N, C_in) as one
    matrix product: (N, C_out), the values of ``conv`` on (N, C_in, 1, 1) flattened.

    Modules keep their 1x1 ``Conv2d`` layers (the checkpoints of the official code hold them)
    but run them on pooled vectors this way: on one CPU thread a 1x1 convolution of a (32, C,
    1, 1) input takes about 0.3 ms more, forward and backward, than the product (benchmarks/
    small_kernels.py)."""
    return F.linear(vectors, conv.weight.flatten(1), conv.bias)


def softmax_fp32(logits: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax computed in float32 (or float64) whatever the autocast dtype, cast back.

    Attention logits of PAM, CAM, CIAU and non-local are unscaled and overflow fp16.
    """
    out_dtype = logits.dtype
    compute = torch.float64 if out_dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=logits.device.type, enabled=False):
        return torch.softmax(logits.to(compute), dim=dim).to(out_dtype)


def attention_fp32(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float
) -> torch.Tensor:
    """``softmax(scale · q kᵀ) v`` over the keys, in float32 under autocast, in O(N) memory.

    query (B, heads, N, d), key (B, heads, M, d), value (B, heads, M, dv) -> (B, heads, N, dv).
    Runs ``scaled_dot_product_attention``, whose fused kernels never hold the N×M matrix. On
    CPU the fused kernel is taken only for 4-D inputs with a contiguous last dimension and
    equal q/k/v head widths (otherwise it silently falls back to the N×M math path), so the
    inputs are made contiguous and the narrower of (q, k) or v is zero-padded to the wider
    width: zero columns change neither q·kᵀ nor the kept output columns. ``scale`` is always
    explicit (SDPA's default would be d^-0.5 of the padded width).
    """
    out_dtype = value.dtype
    compute = torch.float64 if out_dtype == torch.float64 else torch.float32
    width, value_width = query.shape[-1], value.shape[-1]
    with torch.autocast(device_type=query.device.type, enabled=False):
        q, k, v = (t.to(compute).contiguous() for t in (query, key, value))
        if width < value_width:
            q = F.pad(q, (0, value_width - width))  # (B, heads, N, dv)
            k = F.pad(k, (0, value_width - width))  # (B, heads, M, dv)
        elif value_width < width:
            v = F.pad(v, (0, width - value_width))  # (B, heads, M, d)
        out = F.scaled_dot_product_attention(q, k, v, scale=scale)
        return out[..., :value_width].to(out_dtype)  # (B, heads, N, dv)


def positions_first(x: torch.Tensor) -> torch.Tensor:
    """(B, C, *spatial) -> (B, 1, N, C), N = prod(spatial), last dimension contiguous."""
    batch, channels = x.shape[:2]
    positions = math.prod(x.shape[2:])  # explicit, never -1: B = 0 leaves -1 ambiguous
    # (B, C, *S) -> (B, *S, C) -> (B, 1, N, C); copies only when C is not already innermost
    return x.movedim(1, -1).reshape(batch, 1, positions, channels).contiguous()


def positions_last(tokens: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
    """(B, 1, N, C) -> (B, C, *spatial): the inverse of :func:`positions_first`."""
    batch, channels = tokens.shape[0], tokens.shape[-1]
    return tokens.reshape(batch, *spatial, channels).movedim(-1, 1)  # (B, C, *S)


def mask_fill_value(dtype: torch.dtype) -> float:
    """The value that masks a logit out of a softmax for this dtype (never a finite -1e8)."""
    return float("-inf") if dtype.is_floating_point else torch.iinfo(dtype).min


def _hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return F.hardsigmoid(x)


_SQUASH: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "hard_sigmoid": _hard_sigmoid,
}
SQUASHES = tuple(_SQUASH)


def get_squash(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The gate squash function by name: sigmoid, tanh or hard_sigmoid."""
    try:
        return _SQUASH[name]
    except KeyError:
        raise ValueError(f"unknown squash {name!r}; expected one of {', '.join(_SQUASH)}") from None


class ConvNormAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> activation (``act=False`` for none)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        groups: int = 1,
        act: bool = True,
    ) -> None:
        if padding is None:
            padding = dilation * (kernel_size - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
        ]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class _MapStore(dict):
    """Recorded maps: dropped (not copied) by deepcopy and pickling, since they are non-leaf
    tensors of one forward pass (deepcopy of a model for EMA or a checkpoint must not fail)."""

    def __deepcopy__(self, memo: dict) -> _MapStore:
        return _MapStore()

    def __reduce__(self) -> tuple:
        return (_MapStore, ())


class RecordsMaps:
    """Mixin for modules that compute attention maps.

    A module calls ``self._record("spatial", map)`` in ``forward``; the map is kept only while
    recording is switched on (:func:`record_maps`), so nothing is held when nobody asked. Maps
    keep their autograd graph so that a supervision loss can train through them.

    Kinds: ``spatial`` (B, 1, H, W), ``channel`` (B, C, 1, 1), ``mask`` (the full gate).
    """

    record_maps: bool = False

    def _record(self, kind: str, value: torch.Tensor) -> None:
        if self.record_maps:
            self.__dict__.setdefault("last_maps", _MapStore())[kind] = value

    @property
    def maps(self) -> dict[str, torch.Tensor]:
        """The maps of the last forward pass made while recording (empty otherwise)."""
        return self.__dict__.get("last_maps", {})


def record_maps(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Switch map recording on (or off, which also frees stored maps) in every submodule."""
    for module in model.modules():
        if isinstance(module, RecordsMaps):
            module.record_maps = enabled
            if not enabled:
                module.__dict__.pop("last_maps", None)
    return model


@contextmanager
def recording_maps(model: nn.Module) -> Iterator[nn.Module]:
    """``with recording_maps(model): y = model(x); maps = collect_maps(model)``."""
    record_maps(model, True)
    try:
        yield model
    finally:
        record_maps(model, False)


def collect_maps(model: nn.Module, kind: str = "spatial") -> dict[str, torch.Tensor]:
    """The last recorded map of each submodule, keyed by the submodule's qualified name."""
    return {
        name: module.maps[kind]
        for name, module in model.named_modules()
        if isinstance(module, RecordsMaps) and kind in module.maps
    }
