"""Shared by the bench tests: the reference board run one run at a time; bench worker
processes that import pytorch-grad-cam as this process does."""

import os
from pathlib import Path

import pytest
from tiny_boards import BOARD

from attnzoo.cli import main


@pytest.fixture(scope="session")
def serial_board(tmp_path_factory):
    """The reference: the board run one run at a time in this process."""
    out = tmp_path_factory.mktemp("serial")
    assert main(["bench", *BOARD, "--jobs", "1", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session", autouse=True)
def _workers_declare_torchvision_schemas():
    """Spawned bench workers start with worker_site/sitecustomize.py (see its docstring).
    Session-scoped so that the module- and session-scoped boards get it too."""
    site = str(Path(__file__).parent / "worker_site")
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [site, before]))
    yield
    if before is None:
        del os.environ["PYTHONPATH"]
    else:
        os.environ["PYTHONPATH"] = before
