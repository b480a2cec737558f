"""The registry API and the `attnzoo list` / `attnzoo info` commands."""

import pytest

import attnzoo
from attnzoo.cli import main


def test_list_filters_by_kind_and_category():
    gates = attnzoo.list_modules(kind="gate")
    assert "se" in gates
    assert set(attnzoo.list_modules(category="channel")) <= set(attnzoo.list_modules())
    with pytest.raises(ValueError, match="unknown kind"):
        attnzoo.list_modules(kind="gat")


def test_module_info_fields():
    info = attnzoo.module_info("se")
    assert (info.year, info.venue, info.kind, info.category) == (2018, "CVPR", "gate", "channel")
    assert info.options == {"bias": True}
    assert info.defaults["rd_ratio"] == 1 / 16


def test_cli_list_shows_every_module_with_paper_and_year(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in attnzoo.list_modules():
        info = attnzoo.module_info(name)
        line = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert info.paper in line and str(info.year) in line


def test_cli_info_and_unknown_name(capsys):
    assert main(["info", "se"]) == 0
    assert "Squeeze-and-Excitation" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["info", "sse"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Did you mean:" in err and " se" in err.split("Did you mean:")[1]


def test_recorded_maps_do_not_block_deepcopy_or_leak_into_copies():
    import copy

    import torch

    module = attnzoo.create("se", 16)
    with attnzoo.recording_maps(module):
        module(torch.randn(2, 16, 4, 4, requires_grad=True))
        assert attnzoo.collect_maps(module, "channel")
        clone = copy.deepcopy(module)
    assert attnzoo.collect_maps(clone, "channel") == {}
