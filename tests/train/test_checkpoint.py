"""Checkpoints: round trip, atomic pointer, pruning, and loading that never unpickles objects."""

import pytest
import torch
from torch import nn

from attnzoo.train import find_checkpoint, load_checkpoint, save_checkpoint


def _save(tmp_path, step, model):
    state = {
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]},
        "rng": torch.get_rng_state(),
    }
    return save_checkpoint(tmp_path / "ckpt", step, model, {"epoch": 1}, state, keep=2)


def test_round_trip_latest_pointer_and_pruning(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    for step in (1, 2, 3):
        with torch.no_grad():
            model[0].weight.fill_(step)
        _save(tmp_path, step, model)
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("step_*")) == [
        "step_00000002",
        "step_00000003",
    ]
    assert not list((tmp_path / "ckpt").glob(".*tmp"))
    weights, meta, state = load_checkpoint(tmp_path / "ckpt")
    assert meta == {"epoch": 1, "step": 3}
    assert torch.equal(weights["0.weight"], torch.full((4, 3, 3, 3), 3.0))
    assert "1.running_mean" in weights  # buffers travel too
    assert torch.equal(state["rng"], torch.get_rng_state())
    assert find_checkpoint(tmp_path / "ckpt" / "step_00000002").name == "step_00000002"


class _Payload:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_loading_refuses_objects_and_corrupt_files(tmp_path, capsys):
    folder = _save(tmp_path, 1, nn.Linear(2, 2))
    torch.save({"optimizer": _Payload()}, folder / "state.pt")
    with pytest.raises(ValueError, match=r"state\.pt: not a tensor-only training state"):
        load_checkpoint(folder)
    assert "unpickled!" not in capsys.readouterr().out
    (folder / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match=r"model\.safetensors: not a valid safetensors file"):
        load_checkpoint(folder)
    (folder / "meta.json").unlink()
    with pytest.raises(ValueError, match=r"no complete checkpoint \(step_00000001: it has no meta"):
        load_checkpoint(tmp_path / "ckpt")  # through the latest pointer
    with pytest.raises(ValueError, match=r"missing meta\.json"):
        load_checkpoint(folder)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        find_checkpoint(tmp_path / "nothing")
