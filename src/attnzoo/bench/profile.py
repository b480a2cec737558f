"""``attnzoo profile``: parameters, MACs, latency and peak memory of each module at given shapes.

Each module is built with its paper defaults at each feature shape (default: the four stage
shapes of ResNet-50 and the three of a CIFAR ResNet). Measured in one process, side by side:
- forward latency (eval, no grad) and forward+backward latency (train mode), median of
  ``torch.utils.benchmark`` blocked runs;
- MACs of the forward pass (``torch.utils.flop_counter``: convolutions, matmuls and attention;
  element-wise work is not counted), reported as multiply-accumulates like the papers' "FLOPs";
- peak tensor memory of forward+backward (:mod:`attnzoo.bench.memory`);
- for gate modules, the fraction of the memory-bandwidth bound reached by the forward pass: a
  gate must read X twice and write once, so its bound is 1.5x the time of one copy of X,
  measured in the same run;
- where timm is importable and has the same mechanism, timm's forward+backward latency at the
  same configuration, and the ratio ours / timm (below 1 means faster).
"""

from __future__ import annotations

import argparse
import csv
import inspect
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.benchmark import Timer
from torch.utils.flop_counter import FlopCounterMode

from attnzoo.bench.memory import peak_memory_bytes
from attnzoo.registry import create, list_modules, module_info

SHAPE_SETS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "resnet50": ((256, 56, 56), (512, 28, 28), (1024, 14, 14), (2048, 7, 7)),
    "cifar": ((16, 32, 32), (32, 16, 16), (64, 8, 8)),
}


@dataclass(frozen=True)
class Peer:
    """A public implementation of the same mechanism, built at the same configuration."""

    build: Callable[[Any, int], nn.Module]  # (timm.layers, channels) -> module
    ours: dict[str, Any] = field(default_factory=dict)  # our options for the same configuration


# timm's layers configured to compute what our module computes with ``ours`` options.
TIMM_PEERS: dict[str, Peer] = {
    "se": Peer(lambda t, c: t.SEModule(c, rd_ratio=1 / 16, rd_divisor=1)),
    "eca": Peer(lambda t, c: t.EcaModule(channels=c)),
    "ge": Peer(lambda t, c: t.GatherExcite(c, extent=0, extra_params=False, use_mlp=False)),
}


@dataclass
class ProfileRow:
    module: str
    channels: int
    height: int
    width: int
    batch: int
    params: int | None = None
    macs: int | None = None
    forward_ms: float | None = None
    forward_backward_ms: float | None = None
    peak_memory_mib: float | None = None
    bandwidth_fraction: float | None = None
    peer: str | None = None
    peer_forward_backward_ms: float | None = None
    ratio_to_peer: float | None = None
    error: str | None = None


def parse_shapes(spec: str) -> list[tuple[int, int, int]]:
    """``resnet50,cifar`` or ``64x32x32,128x16x16`` (C x H x W) or a mix."""
    shapes: list[tuple[int, int, int]] = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        if item in SHAPE_SETS:
            shapes.extend(SHAPE_SETS[item])
            continue
        parts = item.lower().split("x")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise ValueError(
                f"shape {item!r}: expected CxHxW (e.g. 64x32x32) or one of {', '.join(SHAPE_SETS)}"
            )
        c, h, w = (int(p) for p in parts)
        shapes.append((c, h, w))
    return shapes


def build_at_shape(name: str, channels: int, height: int, width: int, **options: Any) -> nn.Module:
    """The module with its paper defaults for a (C, H, W) feature map."""
    info = module_info(name)
    accepted = inspect.signature(info.cls.__init__).parameters
    if info.size_bound and "spatial_size" in accepted:
        options.setdefault("spatial_size", (height, width))
    return create(name, channels, **options)


def _tensors(output: Any) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    return [t for t in output if isinstance(t, torch.Tensor)]


def _median_ms(work: Callable[[], Any], min_run_time: float) -> float:
    timer = Timer(stmt="work()", globals={"work": work})
    return float(timer.blocked_autorange(min_run_time=min_run_time).median * 1e3)


def _forward_backward(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> Callable[[], None]:
    # The input needs its gradient too, as inside a network (and parameter-free gates have
    # nothing else to differentiate).
    inputs = tuple(t.detach().requires_grad_(t.is_floating_point()) for t in inputs)

    def work() -> None:
        module.zero_grad(set_to_none=True)
        out = _tensors(module(*inputs))
        torch.stack([t.float().sum() for t in out]).sum().backward()

    return work


def _timm_layers() -> tuple[Any, str | None]:
    try:
        import timm.layers
    except Exception as error:  # timm absent or not importable with this torch build
        return None, f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
    return timm.layers, None


def profile_one(
    name: str,
    shape: tuple[int, int, int],
    batch: int,
    device: torch.device,
    min_run_time: float,
    timm_layers: Any = None,
) -> ProfileRow:
    channels, height, width = shape
    row = ProfileRow(name, channels, height, width, batch)
    info = module_info(name)
    peer = TIMM_PEERS.get(name) if timm_layers is not None else None
    try:
        module = build_at_shape(name, channels, height, width, **(peer.ours if peer else {}))
    except ValueError as error:
        row.error = f"not applicable at this shape: {error}"
        return row
    module.to(device)
    inputs = info.example_inputs(batch, height, width, channels=channels, device=device)
    row.params = sum(p.numel() for p in module.parameters())

    module.eval()
    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            module(*inputs)
        row.macs = int(counter.get_total_flops() // 2)
        row.forward_ms = _median_ms(lambda: module(*inputs), min_run_time)
        if info.kind == "gate":
            destination = torch.empty_like(inputs[0])
            copy_ms = _median_ms(lambda: destination.copy_(inputs[0]), min_run_time)
            row.bandwidth_fraction = 1.5 * copy_ms / row.forward_ms

    module.train()
    work = _forward_backward(module, inputs)
    row.forward_backward_ms = _median_ms(work, min_run_time)
    row.peak_memory_mib = peak_memory_bytes(work, device) / 2**20

    if peer is not None:
        reference = peer.build(timm_layers, channels).to(device).train()
        row.peer = f"timm.layers.{type(reference).__name__}"
        row.peer_forward_backward_ms = _median_ms(
            _forward_backward(reference, inputs), min_run_time
        )
        row.ratio_to_peer = row.forward_backward_ms / row.peer_forward_backward_ms
    return row


def profile_modules(
    names: list[str],
    shapes: list[tuple[int, int, int]],
    batch: int = 8,
    device: str = "cpu",
    min_run_time: float = 0.2,
    use_timm: bool = True,
    log: Callable[[str], None] = print,
) -> list[ProfileRow]:
    torch_device = torch.device(device)
    timm_layers, timm_error = _timm_layers() if use_timm else (None, "disabled (--no-timm)")
    if timm_error:
        log(f"peer implementations: timm not used ({timm_error})")
    rows = []
    total = len(names) * len(shapes)
    for index, name in enumerate(names):
        for shape_index, shape in enumerate(shapes):
            step = index * len(shapes) + shape_index + 1
            log(f"[{step}/{total}] {name} at {shape[0]}x{shape[1]}x{shape[2]} batch {batch}")
            rows.append(profile_one(name, shape, batch, torch_device, min_run_time, timm_layers))
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


COLUMNS = (
    ("module", "module"),
    ("shape", None),
    ("params", "params"),
    ("MACs", "macs"),
    ("fwd ms", "forward_ms"),
    ("fwd+bwd ms", "forward_backward_ms"),
    ("peak MiB", "peak_memory_mib"),
    ("BW frac", "bandwidth_fraction"),
    ("timm fwd+bwd ms", "peer_forward_backward_ms"),
    ("ours/timm", "ratio_to_peer"),
)


def markdown_table(rows: list[ProfileRow]) -> str:
    lines = ["| " + " | ".join(title for title, _ in COLUMNS) + " |"]
    lines.append("|" + "---|" * len(COLUMNS))
    for row in rows:
        cells = []
        for _, key in COLUMNS:
            if key is None:
                cells.append(f"{row.channels}x{row.height}x{row.width}")
            else:
                cells.append(_fmt(getattr(row, key)))
        if row.error:
            cells[2] = row.error
            cells[3:] = [""] * (len(cells) - 3)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(rows: list[ProfileRow], out: Path, meta: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    records = [asdict(r) for r in rows]
    (out / "profile.json").write_text(json.dumps({"meta": meta, "rows": records}, indent=1))
    with open(out / "profile.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    (out / "profile.md").write_text(f"{json.dumps(meta)}\n\n{markdown_table(rows)}\n")


def add_profile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--modules", default="all", help="comma list of registry names, or all")
    parser.add_argument(
        "--shapes", default="resnet50,cifar", help="shape sets (resnet50, cifar) and/or CxHxW"
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--min-run-time", type=float, default=0.2, help="seconds per timing")
    parser.add_argument("--no-timm", action="store_true", help="do not time timm's layers")
    parser.add_argument("--out", type=Path, help="directory for profile.{csv,json,md}")


def run_profile(args: argparse.Namespace) -> int:
    names = (
        list_modules() if args.modules == "all" else [n.strip() for n in args.modules.split(",")]
    )
    for name in names:
        module_info(name)  # unknown names fail before any measurement
    shapes = parse_shapes(args.shapes)
    rows = profile_modules(
        names,
        shapes,
        batch=args.batch,
        device=args.device,
        min_run_time=args.min_run_time,
        use_timm=not args.no_timm,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(markdown_table(rows))
    if args.out:
        meta = {
            "device": args.device,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "batch": args.batch,
        }
        write_results(rows, args.out, meta)
    return 0
