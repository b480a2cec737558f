"""The ``attnzoo`` command.

Subcommands live in the modules that implement them; each such module provides
``add_arguments(parser)`` and ``main(args) -> int``. The table below is the only place a new
subcommand is declared, and its module is imported only when the subcommand runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module implementing it, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "list": ("attnzoo.cli_registry", "list the attention modules with their papers"),
    "info": ("attnzoo.cli_registry", "describe one module: paper, placement, options"),
    "profile": ("attnzoo.bench.profile", "params, MACs, latency, peak memory per module"),
    "train": ("attnzoo.train.cli", "train one model on one dataset (torchrun for many GPUs)"),
    "eval": ("attnzoo.train.cli", "evaluate a checkpoint: accuracy, mIoU, map alignment, noise"),
    "bench": (
        "attnzoo.bench.cli",
        "the main job: a leaderboard of mechanisms on one backbone and dataset, several seeds",
    ),
    "viz": ("attnzoo.viz", "attention maps of a checkpoint over images, as PNG grids"),
    "export": ("attnzoo.export", "ONNX / torch.export of a checkpoint, checked against PyTorch"),
    "convert": ("attnzoo.weights.cli", "a released checkpoint to an attnzoo safetensors file"),
    "weights": ("attnzoo.weights.cli", "known released checkpoints: list, fetch (on request)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnzoo", description="Visual attention mechanisms for CNNs."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        getattr(module, f"add_{name}_arguments")(command_parser)
        command_parser.set_defaults(_module=module_name, _entry=f"run_{name}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    module = importlib.import_module(args._module)
    try:
        return int(getattr(module, args._entry)(args) or 0)
    except (ValueError, FileNotFoundError) as error:
        # User errors (unknown names, bad options, missing files) as one readable line.
        parser.exit(2, f"attnzoo {args.command}: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
