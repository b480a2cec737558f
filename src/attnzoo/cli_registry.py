"""``attnzoo list`` and ``attnzoo info NAME``: readable tables from the registry."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from attnzoo.registry import list_modules, module_info


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table with aligned columns (no dependency beyond the standard library)."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def add_list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", help="only modules of this kind (gate, conv, stage, ...)")
    parser.add_argument("--category", help="only modules of this category (channel, ...)")


def run_list(args: argparse.Namespace) -> int:
    names = list_modules(kind=args.kind, category=args.category)
    rows = []
    for name in names:
        info = module_info(name)
        rows.append(
            (name, info.paper, info.year, info.venue, info.category, info.kind, info.placement)
        )
    header = ("name", "paper", "year", "venue", "category", "kind", "placement")
    print(format_table(header, rows))
    print(f"\n{len(names)} modules")
    return 0


def add_info_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="registry name, e.g. cbam")


def run_info(args: argparse.Namespace) -> int:
    info = module_info(args.name)
    fields = [
        ("name", info.name),
        ("paper", info.paper),
        ("authors", info.authors),
        ("venue", f"{info.venue} {info.year}"),
        ("arXiv", info.arxiv or "-"),
        ("official code", info.code_url or "-"),
        ("category", info.category),
        ("kind", info.kind),
        ("paper placement", info.placement),
        ("maps exposed", ", ".join(info.maps) or "none"),
        ("identity at init", "yes" if info.identity_at_init else "no"),
        ("size-bound", "yes" if info.size_bound else "no"),
        ("memory", info.memory),
        ("class", f"{info.cls.__module__}.{info.cls.__qualname__}"),
    ]
    print(format_table(("field", "value"), fields))
    print()
    print(format_table(("option", "default"), [(k, repr(v)) for k, v in info.defaults.items()]))
    if info.divergences:
        print()
        rows = [
            (d.option, repr(d.default), repr(d.paper), repr(d.code), d.note)
            for d in info.divergences
        ]
        print(
            format_table(
                ("paper-vs-code option", "default", "paper", "official code", "note"), rows
            )
        )
    return 0
