"""Shared by the bench tests: the reference board run one run at a time."""

import pytest
from tiny_boards import BOARD

from attnzoo.cli import main


@pytest.fixture(scope="session")
def serial_board(tmp_path_factory):
    """The reference: the board run one run at a time in this process."""
    out = tmp_path_factory.mktemp("serial")
    assert main(["bench", *BOARD, "--jobs", "1", "--out", str(out)]) == 0
    return out
