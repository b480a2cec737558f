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
import copy
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
    """A public implementation of the same mechanism, configured to compute the same function.

    ``ours`` are our options for that configuration; ``weights`` maps our state-dict prefixes
    to the peer's, so that the peer can be given our values (the equality check and the timing
    then run on identical weights); ``unmapped`` are peer entries without a counterpart, each
    explained in ``note`` (they must not change the function).
    """

    timm: str  # the peer's class and constructor options, as shown in reports
    build: Callable[[Any, int], nn.Module]  # (timm.layers, channels) -> module
    ours: dict[str, Any] = field(default_factory=dict)  # our options for the same configuration
    weights: dict[str, str] = field(default_factory=dict)  # our prefix -> peer prefix
    unmapped: tuple[str, ...] = ()
    note: str = ""


def _timm_global_context(layers: Any, channels: int, fuse_add: bool) -> nn.Module:
    peer = layers.GlobalContext(
        channels, fuse_add=fuse_add, fuse_scale=not fuse_add, rd_ratio=1 / 16, rd_divisor=1
    )
    # timm's LayerNorm2d defaults to eps 1e-6; the official block (and ours) uses nn.LayerNorm's
    # 1e-5. Same cost, but the function must be the same for the comparison to mean anything.
    (peer.mlp_add if fuse_add else peer.mlp_scale).norm.eps = 1e-5
    return peer


def _timm_cbam(layers: Any, channels: int) -> nn.Module:
    cbam = layers.get_attn("cbam")  # CbamModule: not re-exported by timm.layers
    peer = cbam(channels, rd_ratio=1 / 16, rd_divisor=1, mlp_bias=True)
    peer.spatial.conv.bn.momentum = 0.01  # the official BasicConv's BN (only running stats)
    return peer


_GC_NOTE = "timm's conv_attn has a bias the softmax ignores (ours drops it, as documented in gc.py)"

# timm's layers configured to compute what our module computes with ``ours`` options; the
# configurations and every remaining difference are listed in docs/performance.md.
TIMM_PEERS: dict[str, tuple[Peer, ...]] = {
    "se": (
        Peer(
            "SEModule(rd_ratio=1/16, rd_divisor=1)",
            lambda t, c: t.SEModule(c, rd_ratio=1 / 16, rd_divisor=1),
            weights={"fc1.": "fc1.", "fc2.": "fc2."},
        ),
    ),
    "eca": (
        Peer(
            "EcaModule(channels=C)",
            lambda t, c: t.EcaModule(channels=c),
            weights={"conv.": "conv."},
        ),
    ),
    "ge": (
        Peer(
            "GatherExcite(extent=0, extra_params=False, use_mlp=False)",
            lambda t, c: t.GatherExcite(c, extent=0, extra_params=False, use_mlp=False),
            note="θ⁻ global; timm's θ/θ⁺ (extra_params=True) cannot be built in timm 1.0.31",
        ),
        Peer(
            "GatherExcite(extent=4, extra_params=False, use_mlp=False)",
            lambda t, c: t.GatherExcite(c, extent=4, extra_params=False, use_mlp=False),
            ours={"extent": 4},
            note="θ⁻ extent 4: avg-pool 7x7 stride 4 pad 3 without padded zeros, nearest upsample",
        ),
    ),
    "cbam": (
        Peer(
            "CbamModule(rd_ratio=1/16, rd_divisor=1, mlp_bias=True), spatial BN momentum 0.01",
            _timm_cbam,
            ours={"spatial_bn": True},
            weights={
                "mlp.0.": "channel.fc1.",
                "mlp.2.": "channel.fc2.",
                "spatial_conv.": "spatial.conv.conv.",
                "spatial_norm.": "spatial.conv.bn.",
            },
            note="timm's spatial gate is conv+BN: our official-code option spatial_bn=True",
        ),
    ),
    "gc": (
        Peer(
            "GlobalContext(fuse_add=True, fuse_scale=False, rd_ratio=1/16, rd_divisor=1), LN eps 1e-5",
            lambda t, c: _timm_global_context(t, c, fuse_add=True),
            weights={
                "conv_mask.": "conv_attn.",
                "transform.0.": "mlp_add.fc1.",
                "transform.1.": "mlp_add.norm.",
                "transform.3.": "mlp_add.fc2.",
            },
            unmapped=("conv_attn.bias",),
            note=_GC_NOTE,
        ),
        Peer(
            "GlobalContext(rd_ratio=1/16, rd_divisor=1), LN eps 1e-5",
            lambda t, c: _timm_global_context(t, c, fuse_add=False),
            ours={"fusion": "mul"},
            weights={
                "conv_mask.": "conv_attn.",
                "transform.0.": "mlp_scale.fc1.",
                "transform.1.": "mlp_scale.norm.",
                "transform.3.": "mlp_scale.fc2.",
            },
            unmapped=("conv_attn.bias",),
            note=_GC_NOTE,
        ),
    ),
    "nonlocal": (
        Peer(
            "NonLocalAttn(use_scale=False, rd_ratio=1/8, rd_divisor=1)",
            lambda t, c: t.NonLocalAttn(c, use_scale=False, rd_ratio=1 / 8, rd_divisor=1),
            ours={"rd_ratio": 1 / 8, "sub_sample": False, "scaled": False},
            weights={
                "theta.": "t.",
                "phi.": "p.",
                "g.": "g.",
                "out_conv.": "z.",
                "out_norm.": "norm.",
            },
            note=(
                "timm has no sub-sampling, width C/8 and scales by C^-0.5 (the official code: "
                "by the embedding width d^-0.5); compared unscaled (the paper's equation)"
            ),
        ),
    ),
    "sk": (
        Peer(
            "SelectiveKernel(groups=32, split_input=False, rd_channels=max(C/16, 32))",
            lambda t, c: t.SelectiveKernel(
                c, c, groups=32, split_input=False, rd_channels=max(c // 16, 32)
            ),
            weights={
                "branches.0.0.": "paths.0.conv.",
                "branches.0.1.": "paths.0.bn.",
                "branches.1.0.": "paths.1.conv.",
                "branches.1.1.": "paths.1.bn.",
                "fuse.0.": "attn.fc_reduce.",
                "fuse.1.": "attn.bn.",
                "select.": "attn.fc_select.",
            },
            note="timm's default split_input=True (half the input per branch) is not the paper's",
        ),
    ),
}


def copy_weights_to_peer(ours: nn.Module, theirs: nn.Module, peer: Peer) -> None:
    """Give ``theirs`` every parameter and buffer value of ``ours`` (reshaped where the layouts
    differ, e.g. LayerNorm over (C, 1, 1) vs (C,)); every peer entry must be covered."""
    target = theirs.state_dict()
    covered: set[str] = set()
    for key, value in ours.state_dict().items():
        prefix = next((p for p in peer.weights if key.startswith(p)), None)
        name = None if prefix is None else peer.weights[prefix] + key[len(prefix) :]
        if name is None or name not in target or target[name].numel() != value.numel():
            raise ValueError(
                f"{key} {tuple(value.shape)} has no counterpart in {type(theirs).__name__} "
                f"(mapped to {name!r}); the peer's entries are {sorted(target)}"
            )
        with torch.no_grad():
            target[name].copy_(value.reshape(target[name].shape))
        covered.add(name)
    missing = set(target) - covered - set(peer.unmapped)
    if missing:
        raise ValueError(f"{type(theirs).__name__} entries not given a value: {sorted(missing)}")


def peer_difference(
    ours: nn.Module,
    theirs: nn.Module,
    peer: Peer,
    inputs: tuple[torch.Tensor, ...],
    seed: int = 0,
) -> float:
    """Largest |ours - peer| over the output, relative to the largest |output|, with both given
    the same random weights (copies: the modules passed in are left as they are).

    Random weights, not the initial ones: a zero-initialised last layer would make both
    modules the identity and hide any difference. Train mode, as the timing runs.
    """
    ours, theirs = copy.deepcopy(ours).train(), copy.deepcopy(theirs).train()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in ours.parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            param.copy_(0.5 * noise.to(param.device))
        for name, param in theirs.named_parameters():
            if name in peer.unmapped:  # whatever it holds must not matter
                param.copy_(torch.randn(param.shape, generator=generator).to(param))
    copy_weights_to_peer(ours, theirs, peer)
    with torch.no_grad():
        expected = _tensors(ours(*inputs))[0]
        got = _tensors(theirs(*inputs))[0]
    scale = expected.abs().max().clamp_min(torch.finfo(expected.dtype).tiny)
    return float((got - expected).abs().max() / scale)


@dataclass
class ProfileRow:
    module: str
    channels: int
    height: int
    width: int
    batch: int
    options: str | None = None  # our non-default options (set to match a peer)
    params: int | None = None
    macs: int | None = None
    forward_ms: float | None = None
    forward_backward_ms: float | None = None
    peak_memory_mib: float | None = None
    bandwidth_fraction: float | None = None
    peer: str | None = None
    peer_max_rel_diff: float | None = None  # same weights, same input: |ours - peer| / |ours|
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


def _paired_ms(
    works: tuple[Callable[[], Any], ...], min_run_time: float, rounds: int = 5
) -> list[float]:
    """Interleaved timings of several works: ``rounds`` rounds, each timing every work once
    (``blocked_autorange``); per work, the fastest block over all rounds. On a shared machine
    other processes only ever add time, so the minimum is the estimate least disturbed by
    them, and interleaving exposes every work to the same load."""
    best = [float("inf")] * len(works)
    for _ in range(rounds):
        for index, work in enumerate(works):
            timer = Timer(stmt="work()", globals={"work": work})
            measurement = timer.blocked_autorange(min_run_time=min_run_time)
            best[index] = min(best[index], min(measurement.times) * 1e3)
    return best


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


def _format_options(options: dict[str, Any]) -> str | None:
    if not options:
        return None
    return ", ".join(
        f"{k}={round(v, 4) if isinstance(v, float) else v}" for k, v in sorted(options.items())
    )


def profile_one(
    name: str,
    shape: tuple[int, int, int],
    batch: int,
    device: torch.device,
    min_run_time: float,
    timm_layers: Any = None,
    peer: Peer | None = None,
) -> ProfileRow:
    """One module at one shape; with ``peer`` (and ``timm_layers``), built with the peer's
    ``ours`` options and timed against the peer, interleaved, on the same weights."""
    channels, height, width = shape
    if timm_layers is None:
        peer = None
    options = peer.ours if peer else {}
    row = ProfileRow(name, channels, height, width, batch, options=_format_options(options))
    info = module_info(name)
    try:
        module = build_at_shape(name, channels, height, width, **options)
    except ValueError as error:
        row.error = f"not applicable at this shape: {error}"
        return row
    module.to(device)
    inputs = info.example_inputs(batch, height, width, channels=channels, device=device)
    row.params = sum(p.numel() for p in module.parameters())

    module.eval()
    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        try:
            with counter:
                module(*inputs)
        except ValueError as error:  # e.g. a fusion module whose second input is fixed-width
            row.error = f"not applicable at this shape: {error}"
            return row
        row.macs = int(counter.get_total_flops() // 2)
        row.forward_ms = _median_ms(lambda: module(*inputs), min_run_time)
        if info.kind == "gate":
            destination = torch.empty_like(inputs[0])
            copy_ms = _median_ms(lambda: destination.copy_(inputs[0]), min_run_time)
            row.bandwidth_fraction = 1.5 * copy_ms / row.forward_ms

    module.train()
    work = _forward_backward(module, inputs)
    if peer is None:
        row.forward_backward_ms = _median_ms(work, min_run_time)
    row.peak_memory_mib = peak_memory_bytes(work, device) / 2**20

    if peer is not None:
        reference = peer.build(timm_layers, channels).to(device).train()
        row.peer = f"timm.layers.{peer.timm}"
        row.peer_max_rel_diff = peer_difference(module, reference, peer, inputs)
        copy_weights_to_peer(module, reference, peer)  # time both on the same values
        ours_ms, peer_ms = _paired_ms((work, _forward_backward(reference, inputs)), min_run_time)
        row.forward_backward_ms, row.peer_forward_backward_ms = ours_ms, peer_ms
        row.ratio_to_peer = ours_ms / peer_ms
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
    """Rows for every (module, shape); a module with timm peers gets one row per peer
    configuration (built with that peer's ``ours`` options) when timm is importable."""
    torch_device = torch.device(device)
    timm_layers, timm_error = _timm_layers() if use_timm else (None, "disabled (--no-timm)")
    if timm_error:
        log(f"peer implementations: timm not used ({timm_error})")
    jobs: list[tuple[str, Peer | None]] = []
    for name in names:
        peers = TIMM_PEERS.get(name, ()) if timm_layers is not None else ()
        jobs.extend((name, peer) for peer in peers or (None,))
    rows = []
    total = len(jobs) * len(shapes)
    for index, (name, peer) in enumerate(jobs):
        for shape_index, shape in enumerate(shapes):
            step = index * len(shapes) + shape_index + 1
            where = f"{shape[0]}x{shape[1]}x{shape[2]} batch {batch}"
            versus = f" vs timm.layers.{peer.timm}" if peer else ""
            log(f"[{step}/{total}] {name} at {where}{versus}")
            rows.append(
                profile_one(name, shape, batch, torch_device, min_run_time, timm_layers, peer)
            )
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
    ("options", "options"),
    ("params", "params"),
    ("MACs", "macs"),
    ("fwd ms", "forward_ms"),
    ("fwd+bwd ms", "forward_backward_ms"),
    ("peak MiB", "peak_memory_mib"),
    ("BW frac", "bandwidth_fraction"),
    ("timm fwd+bwd ms", "peer_forward_backward_ms"),
    ("rel diff", "peer_max_rel_diff"),
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
            cells[3] = row.error
            cells[4:] = [""] * (len(cells) - 4)
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
