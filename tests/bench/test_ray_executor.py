"""`attnzoo bench --executor ray` on a local Ray instance (2 CPUs) equals --jobs 1."""

import json
import sys

import pytest
from tiny_boards import BOARD, board_rows, run_results

from attnzoo.cli import main


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_tasks_give_exactly_the_results_of_jobs_1(local_ray, serial_board, tmp_path):
    serial, distributed = serial_board, tmp_path / "ray"
    assert main(["bench", *BOARD, "--executor", "ray", "--out", str(distributed)]) == 0
    assert run_results(distributed) == run_results(serial)
    assert board_rows(distributed) == board_rows(serial)
    meta = json.loads((distributed / "results.json").read_text())["meta"]
    assert meta["executor"] == "ray" and meta["runs"]["trained"] == 4
    # The same board again through Ray: every run reused, nothing retrained.
    assert main(["bench", *BOARD, "--executor", "ray", "--out", str(distributed)]) == 0
    meta = json.loads((distributed / "results.json").read_text())["meta"]
    assert meta["runs"] == {"trained": 0, "resumed": 0, "reused": 4}


def test_without_ray_installed_the_error_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", *BOARD, "--executor", "ray", "--out", str(tmp_path / "b")])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip()
    assert message.count("\n") == 0 and "pip install 'attnzoo[ray]'" in message
    assert not (tmp_path / "b").exists()
