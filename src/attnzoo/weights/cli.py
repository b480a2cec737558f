"""``attnzoo convert`` and ``attnzoo weights``.

attnzoo convert RESNET50_CBAM_new_name_wrap.pth cbam_resnet50.safetensors
attnzoo weights list
attnzoo weights fetch fcanet50 --dest weights/
"""

from __future__ import annotations

import argparse
import json

from attnzoo.weights.layouts import LAYOUTS, _load_layouts


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    _load_layouts()
    parser.add_argument("input", help="released checkpoint (.pth, .pth.tar, .safetensors)")
    parser.add_argument("output", help="attnzoo safetensors file to write")
    parser.add_argument(
        "--weights-format",
        choices=sorted(LAYOUTS),
        default=None,
        help="force a layout instead of detecting it",
    )


def run_convert(args: argparse.Namespace) -> int:
    from attnzoo.weights.build import build_model, read_plan
    from attnzoo.weights.load import save_safetensors

    if not str(args.output).endswith(".safetensors"):
        raise ValueError(f"the output must be a .safetensors file, got {args.output}")
    plan = read_plan(args.input, args.weights_format)
    build_model(plan, args.input)  # every key must fit before anything is written
    out = save_safetensors(plan.state, args.output, plan.recipe())
    what = plan.arch + (f" + {plan.attention}" if plan.attention else "")
    print(f"{args.input}: {plan.layout} layout, {what}, {plan.num_classes} classes")
    for note in plan.notes:
        print(f"  note: {note}")
    print(f"wrote {out} ({len(plan.state)} tensors; build recipe in its metadata)")
    return 0


def add_weights_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="the known releases and their layouts")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    fetch = sub.add_parser("fetch", help="download a release and verify its SHA-256")
    fetch.add_argument("name", help="release name (see: attnzoo weights list)")
    fetch.add_argument("--dest", default=None, help="folder (default ~/.cache/attnzoo/weights)")


def run_weights(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from attnzoo.weights.fetch import fetch_release
    from attnzoo.weights.releases import RELEASES, get_release

    if args.weights_command == "fetch":
        path, how = fetch_release(get_release(args.name), args.dest)
        print(f"{path} (SHA-256: {how})")
        return 0
    if args.json:
        for release in RELEASES.values():
            print(json.dumps(asdict(release)))
        return 0
    rows = [("name", "model", "layout", "top-1", "download", "file")]
    for r in RELEASES.values():
        model = r.arch + (f"+{r.attention}" if r.attention else "")
        top1 = f"{r.top1:.2f}" if r.top1 is not None else "-"
        rows.append(
            (r.name, model, r.layout, top1, "fetch" if r.direct else "by hand", r.file_name)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0
