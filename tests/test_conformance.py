"""The module contract, run over EVERY registered module (a new module needs no test code here).

Each module is built at its registry example configuration (``ModuleInfo.build_example``) and
fed inputs from ``ModuleInfo.example_inputs``; see ../shared/DESIGN.md "Module contract".
"""

from __future__ import annotations

import copy
import inspect
import math

import pytest
import torch
from torch import nn

import attnzoo
from attnzoo.registry import ModuleInfo

NAMES = attnzoo.list_modules()
INFOS = {name: attnzoo.module_info(name) for name in NAMES}
IDENTITY = [n for n in NAMES if INFOS[n].identity_at_init]
WITH_MAPS = [n for n in NAMES if INFOS[n].maps]
SIZE_BOUND = [n for n in NAMES if INFOS[n].size_bound]


def build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return INFOS[name].build_example()


def expected_size(module: nn.Module) -> tuple[int, int] | None:
    size = getattr(module, "expected_size", None)
    return None if size is None else (int(size[0]), int(size[1]))


def sizes_for(info: ModuleInfo, module: nn.Module) -> list[tuple[int, int]]:
    """Square, non-square and odd sizes (or the one size a size-bound module accepts)."""
    bound = expected_size(module)
    if bound is not None:
        return [bound, bound, bound]  # tests pick [0], [1] or [2]: all the one accepted size
    m = max(info.min_size, 5)
    return [(m + 3, m + 3), (m + 1, m + 5), (m + 2, m)]


def make_inputs(info: ModuleInfo, batch: int, h: int, w: int, dtype=torch.float32, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return info.example_inputs(batch, h, w, dtype=dtype, generator=generator)


def first(output) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return output[0]
    raise TypeError(f"module returned {type(output).__name__}, expected a tensor or a tuple")


def all_tensors(output) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    return [t for t in output if isinstance(t, torch.Tensor)]


def randomize(module: nn.Module) -> None:
    """Non-zero, moderate weights everywhere, so that zero-inits (identity at init) do not hide
    a parameter that the gradient never reaches."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=generator) / math.sqrt(fan_in))
            else:
                p.copy_(torch.rand(p.shape, generator=generator) + 0.5)


# ---------------------------------------------------------------------------------------------
# Registry metadata and documentation


def test_registry_is_populated():
    assert len(NAMES) >= 1
    assert NAMES == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_metadata_and_docstring(name):
    info = INFOS[name]
    assert info.paper and info.authors and info.venue and 1990 < info.year < 2030
    assert info.category and info.placement
    doc = inspect.getmodule(info.cls).__doc__ or ""
    assert info.arxiv is None or info.arxiv in doc, "module docstring must cite the arXiv id"
    assert info.paper.split(":")[0][:20].lower() in doc.lower(), "docstring must name the paper"
    defaults = info.defaults
    for divergence in info.divergences:
        assert divergence.option in defaults, f"{divergence.option} is not a constructor option"
        assert defaults[divergence.option] == divergence.default, divergence.option
    if info.divergences:
        assert "Differences from the official code" in doc
    assert info.cls.__doc__, "the class needs a docstring"


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match="Did you mean"):
        attnzoo.create(NAMES[0] + "x", 16)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_option_is_rejected(name):
    info = INFOS[name]
    with pytest.raises(ValueError, match="unknown option"):
        attnzoo.create(name, info.example_channels, no_such_option=1)


# ---------------------------------------------------------------------------------------------
# Forward contract


@pytest.mark.parametrize("name", NAMES)
def test_shapes_eval_batch1_and_train_batch2(name):
    info = INFOS[name]
    module = build(name)
    for h, w in sizes_for(info, module):
        for batch, train in ((1, False), (2, True)):
            module.train(train)
            inputs = make_inputs(info, batch, h, w)
            out = module(*inputs)
            assert tuple(first(out).shape) == info.expected_shape(*inputs), (h, w, batch)
            for t in all_tensors(out):
                assert torch.isfinite(t).all()


@pytest.mark.parametrize("name", SIZE_BOUND)
def test_size_bound_module_names_expected_size(name):
    info = INFOS[name]
    module = build(name).eval()
    bound = expected_size(module)
    assert bound is not None, "a size-bound module exposes expected_size"
    inputs = make_inputs(info, 1, bound[0] + 1, bound[1])
    with pytest.raises(ValueError, match=f"{bound[0]}x{bound[1]}"):
        module(*inputs)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter_and_the_input(name):
    info = INFOS[name]
    module = build(name).double().train()
    randomize(module)
    h, w = sizes_for(info, module)[1]
    inputs = [t.requires_grad_() for t in make_inputs(info, 2, h, w, dtype=torch.float64)]
    out = module(*inputs)
    loss = sum((t * torch.randn_like(t)).sum() for t in all_tensors(out))
    loss.backward()
    for t in inputs:
        assert t.grad is not None and t.grad.abs().max() > 1e-8, "no gradient reaches the input"
    for pname, p in module.named_parameters():
        assert p.grad is not None, f"{pname} gets no gradient"
        assert torch.isfinite(p.grad).all(), pname
        if pname in info.no_grad_params:
            continue
        assert p.grad.abs().max() > 1e-8, f"{pname} gets an all-zero gradient"
    for pname in info.no_grad_params:
        assert pname in dict(module.named_parameters()), f"no_grad_params names unknown {pname}"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_autocast_is_finite_with_large_inputs(name, train, dtype):
    info = INFOS[name]
    module = build(name).train(train)
    h, w = sizes_for(info, module)[0]
    inputs = [t * 100 for t in make_inputs(info, 2, h, w)]
    with torch.autocast("cpu", dtype=dtype):
        out = module(*inputs)
    for t in all_tensors(out):
        assert torch.isfinite(t).all()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_empty_batch_gives_an_empty_output_of_the_right_shape(name, train):
    info = INFOS[name]
    module = build(name).train(train)
    h, w = sizes_for(info, module)[1]
    inputs = make_inputs(info, 0, h, w)
    out = module(*inputs)
    assert first(out).shape == info.expected_shape(*inputs)
    reference = module.eval()(*make_inputs(info, 1, h, w))
    for empty, single in zip(all_tensors(out), all_tensors(reference), strict=True):
        assert empty.shape == (0, *single.shape[1:])


@pytest.mark.parametrize("name", [n for n in NAMES if INFOS[n].min_size > 1])
def test_maps_below_the_minimum_size_are_a_value_error_saying_so(name):
    info = INFOS[name]
    module = build(name).eval()
    for h, w in [(1, 1), (1, info.min_size + 3), (info.min_size + 3, 1)]:
        with pytest.raises(ValueError, match=rf"at least {info.min_size}x{info.min_size}.*{h}x{w}"):
            module(*make_inputs(info, 1, h, w))


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_gives_the_same_result(name):
    info = INFOS[name]
    module = build(name).eval()
    randomize(module)
    for h, w in sizes_for(info, module):
        inputs = make_inputs(info, 2, h, w)
        ref = module(*inputs)
        cl = module(
            *[
                t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t
                for t in inputs
            ]
        )
        for a, b in zip(all_tensors(ref), all_tensors(cl), strict=True):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_float64(name):
    info = INFOS[name]
    module = build(name).double().eval()
    h, w = sizes_for(info, module)[2]
    out = module(*make_inputs(info, 2, h, w, dtype=torch.float64))
    for t in all_tensors(out):
        assert t.dtype == torch.float64 and torch.isfinite(t).all()


@pytest.mark.parametrize("name", NAMES)
def test_wrong_channel_count_raises(name):
    info = INFOS[name]
    module = build(name).eval()
    h, w = sizes_for(info, module)[0]
    x, *rest = make_inputs(info, 1, h, w)
    wrong = torch.randn(x.shape[0], x.shape[1] + 1, *x.shape[2:])
    with pytest.raises(
        ValueError, match=rf"{x.shape[1]}\D.*{x.shape[1] + 1}|{x.shape[1] + 1}\D.*{x.shape[1]}"
    ):
        module(wrong, *rest)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_rank_raises(name):
    info = INFOS[name]
    module = build(name).eval()
    h, w = sizes_for(info, module)[0]
    x, *rest = make_inputs(info, 1, h, w)
    with pytest.raises(ValueError, match="rank"):
        module(x.flatten(2), *rest)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name):
    info = INFOS[name]
    source = build(name, seed=0)
    randomize(source)
    target = build(name, seed=1)
    target.load_state_dict(copy.deepcopy(source.state_dict()))
    source.eval(), target.eval()
    h, w = sizes_for(info, source)[0]
    inputs = make_inputs(info, 2, h, w)
    for a, b in zip(all_tensors(source(*inputs)), all_tensors(target(*inputs)), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


@pytest.mark.parametrize("name", IDENTITY)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_identity_at_init(name, train):
    info = INFOS[name]
    module = build(name).train(train)
    h, w = sizes_for(info, module)[1]
    inputs = make_inputs(info, 2, h, w)
    torch.testing.assert_close(first(module(*inputs)), inputs[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", WITH_MAPS)
def test_maps_are_exposed_only_when_recording(name):
    info = INFOS[name]
    module = build(name).eval()
    h, w = sizes_for(info, module)[0]
    inputs = make_inputs(info, 2, h, w)
    module(*inputs)
    assert attnzoo.collect_maps(module, info.maps[0]) == {}, "maps kept while nobody asked"
    with attnzoo.recording_maps(module):
        module(*inputs)
        for kind in info.maps:
            maps = attnzoo.collect_maps(module, kind)
            assert maps, f"no {kind} map recorded"
            for value in maps.values():
                assert value.shape[0] == 2 and value.dim() == 4
                if kind == "spatial":
                    assert value.shape[1] == 1
                if kind == "channel":
                    assert value.shape[2:] == (1, 1)
    assert attnzoo.collect_maps(module, info.maps[0]) == {}, "maps not freed after recording"


# ---------------------------------------------------------------------------------------------
# Compilation and export (slow, never skipped)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_torch_compile_matches_eager(name):
    info = INFOS[name]
    module = build(name).eval()
    h, w = sizes_for(info, module)[0]
    inputs = make_inputs(info, 2, h, w)
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=False)
    with torch.no_grad():
        for a, b in zip(all_tensors(module(*inputs)), all_tensors(compiled(*inputs)), strict=True):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_torch_export_matches_eager(name):
    info = INFOS[name]
    module = build(name).eval()
    h, w = sizes_for(info, module)[0]
    inputs = make_inputs(info, 2, h, w)
    program = torch.export.export(module, tuple(inputs))
    with torch.no_grad():
        ref = all_tensors(module(*inputs))
        got = all_tensors(program.module()(*inputs))
    for a, b in zip(ref, got, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
