"""The ``attnzoo`` command.

Subcommands live in the modules that implement them; each such module provides
``add_arguments(parser)`` and ``main(args) -> int``. The table below is the only place a new
subcommand is declared, and its module is imported only when the subcommand runs.

Errors: one mechanism, here. Every everyday mistake surfaces as one line on stderr,
``attnzoo COMMAND: error: ...``, with exit status 2 for usage errors (argparse's own, a
:class:`~attnzoo.errors.UsageError`, or a ``ValueError`` about a value given) and 1 for
failures (:class:`~attnzoo.errors.AttnzooError` such as a corrupt file or a damaged run
folder, or an ``OSError``). ``--debug`` or ``ATTNZOO_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from attnzoo.errors import AttnzooError

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


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (the usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def _one_line(message: str) -> str:
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="attnzoo", description="Visual attention mechanisms for CNNs.")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of errors (or ATTNZOO_DEBUG=1)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        getattr(module, f"add_{name}_arguments")(command_parser)
        command_parser.set_defaults(_module=module_name, _entry=f"run_{name}")
    return parser


def exit_code(error: BaseException) -> int | None:
    """The exit status of an error reported as one line, or None for a bug (traceback)."""
    if isinstance(error, AttnzooError):
        return error.exit_code
    if isinstance(error, ValueError):  # an unacceptable value given by the user
        return 2
    if isinstance(error, OSError):  # a file that is missing, unreadable or in the way
        return 1
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get("ATTNZOO_DEBUG", "") not in ("", "0")
    module = importlib.import_module(args._module)
    try:
        return int(getattr(module, args._entry)(args) or 0)
    except Exception as error:
        code = exit_code(error)
        if debug or code is None:
            raise
        parser.exit(code, f"attnzoo {args.command}: error: {_one_line(str(error))}\n")


if __name__ == "__main__":
    sys.exit(main())
