"""The project's error types: what `attnzoo` reports as one line and which exit status it uses.

- :class:`UsageError` (exit 2): a value the user gave is not acceptable (a flag, an option).
- :class:`AttnzooError` and its failure subclasses (exit 1): the input given was acceptable but
  something it points at is not: a corrupt or inconsistent data file, a damaged or foreign run
  folder, a run folder held by another process, a run whose loss became non-finite.

Every type also derives from the built-in exception a library caller would expect
(``ValueError`` / ``RuntimeError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

import sys


class AttnzooError(Exception):
    """A failure the user can act on; `attnzoo` prints it as one line and exits 1."""

    exit_code = 1


class UsageError(AttnzooError, ValueError):
    """A value given on the command line or to the API is not acceptable (exit 2)."""

    exit_code = 2


class DataError(AttnzooError, ValueError):
    """A dataset file is missing, corrupt or inconsistent (exit 1)."""


class RunFolderError(AttnzooError, ValueError):
    """A run folder is damaged, foreign, not trusted or in use (exit 1)."""


class DivergedError(AttnzooError, RuntimeError):
    """Training produced a non-finite loss or non-finite weights (exit 1)."""


def warn(message: str) -> None:
    """One warning line on stderr (a recovered problem the user should know about)."""
    print(f"attnzoo: warning: {message}", file=sys.stderr, flush=True)
