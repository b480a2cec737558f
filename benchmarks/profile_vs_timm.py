"""attnzoo vs timm, side by side: forward+backward latency of every mechanism both implement.

    python benchmarks/profile_vs_timm.py                  # both parts, writes results/profile_cpu.*
    python benchmarks/profile_vs_timm.py --no-all         # only the timm comparison

Part 1: each module of ``attnzoo.bench.profile.TIMM_PEERS`` at the ResNet-50 and CIFAR stage
shapes, batch 8, against timm's layer configured to compute the same function (the row's
``rel diff`` is the measured |ours - timm| / |ours| on shared random weights). Ours and timm
are timed interleaved in one process on the same weights; the ratio ours/timm is the result,
absolute times on a shared machine are noise.
Part 2: every registered module at the CIFAR shapes without peers (bandwidth fraction, memory).

Writes benchmarks/results/profile_cpu.{md,json}. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from dataclasses import asdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# On this project's CPU machines the torchvision wheel (which timm imports) is a CUDA build
# whose operators do not load; the test helper declares the two missing operator schemas so
# that the import succeeds. Real users with matching torch/torchvision builds need no such
# thing: plain `import timm` works there, and `attnzoo profile` finds timm by itself.
sys.path.insert(0, str(ROOT / "tests"))
from _vision_imports import import_timm  # noqa: E402
from attnzoo.bench.profile import (  # noqa: E402
    SHAPE_SETS,
    TIMM_PEERS,
    ProfileRow,
    markdown_table,
    parse_shapes,
    profile_modules,
)
from attnzoo.registry import list_modules  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def peer_legend() -> str:
    lines = ["| module | our options | timm layer | note |", "|---|---|---|---|"]
    for name, peers in TIMM_PEERS.items():
        for peer in peers:
            options = ", ".join(f"{k}={v}" for k, v in peer.ours.items()) or "defaults"
            lines.append(f"| {name} | {options} | timm.layers.{peer.timm} | {peer.note} |")
    return "\n".join(lines)


def ratio_summary(rows: list[ProfileRow]) -> str:
    lines = ["| module | options | ours/timm per shape | worst |", "|---|---|---|---|"]
    groups: dict[tuple[str, str | None], list[ProfileRow]] = {}
    for row in rows:
        groups.setdefault((row.module, row.options), []).append(row)
    for (name, options), group in groups.items():
        ratios = [r.ratio_to_peer for r in group if r.ratio_to_peer is not None]
        cells = ", ".join(
            f"{r.channels}x{r.height}x{r.width}: "
            + ("n/a" if r.ratio_to_peer is None else f"{r.ratio_to_peer:.2f}")
            for r in group
        )
        worst = f"{max(ratios):.2f}" if ratios else "-"
        lines.append(f"| {name} | {options or 'defaults'} | {cells} | {worst} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--min-run-time", type=float, default=0.2)
    parser.add_argument("--modules", default=",".join(TIMM_PEERS), help="peer part: comma list")
    parser.add_argument("--shapes", default="resnet50,cifar", help="peer part: shape sets")
    parser.add_argument("--no-all", action="store_true", help="skip part 2 (all modules)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    timm = import_timm()

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    names = [n.strip() for n in args.modules.split(",") if n.strip()]
    peer_rows = profile_modules(
        names, parse_shapes(args.shapes), args.batch, "cpu", args.min_run_time, log=log
    )
    all_rows: list[ProfileRow] = []
    if not args.no_all:
        all_rows = profile_modules(
            list_modules(),
            list(SHAPE_SETS["cifar"]),
            args.batch,
            "cpu",
            args.min_run_time,
            use_timm=False,
            log=log,
        )

    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": (
            f"shared {os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), "
            "other jobs running: ratios were measured side by side (interleaved, fastest block of 5 "
            "rounds) in one run; absolute times are noise"
        ),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "device": "cpu",
        "min_run_time_s": args.min_run_time,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile_cpu.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "vs_timm": [asdict(r) for r in peer_rows],
                "all_cifar": [asdict(r) for r in all_rows],
            },
            indent=1,
        )
        + "\n"
    )
    parts = [
        "# attnzoo vs timm, CPU",
        "",
        "Written by `python benchmarks/profile_vs_timm.py`; see docs/performance.md.",
        "",
        "```",
        json.dumps(meta, indent=1),
        "```",
        "",
        "## Peer configurations",
        "",
        peer_legend(),
        "",
        "## ours/timm (forward+backward, below 1: ours faster)",
        "",
        ratio_summary(peer_rows),
        "",
        "## Every row",
        "",
        markdown_table(peer_rows),
    ]
    if all_rows:
        parts += ["", "## All modules at the CIFAR shapes (no peers)", "", markdown_table(all_rows)]
    (args.out / "profile_cpu.md").write_text("\n".join(parts) + "\n")
    print(ratio_summary(peer_rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
