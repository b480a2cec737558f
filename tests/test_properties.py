"""Property-based tests over EVERY registered module (hypothesis).

Option values are drawn from each option's declared domain (``ModuleInfo.domains``, the same
declarations that validate construction), so a new module is fuzzed with no test code here.
For any drawn configuration, construction either succeeds or raises a ValueError (options
that constrain each other, such as SK's groups and channels); a built module, on any batch
size (0 included), odd, non-square and 1xN maps, float32/float64, fp16/bf16 autocast and
channels_last, either returns finite outputs of the right shape or raises a ValueError (a
map below the module's minimum size, a training-mode BatchNorm with one value per channel).
Invalid values of every option are rejected with a ValueError naming option and value.

Deterministic (``derandomize=True``) so that CI is reproducible; sized for ~2 minutes on 2 cores.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import attnzoo
from attnzoo.domains import Choice, Domain, Flag, Integer, IntTuple, Real
from attnzoo.registry import ModuleInfo

NAMES = attnzoo.list_modules()
INFOS = {name: attnzoo.module_info(name) for name in NAMES}
SPAN = 3  # unbounded integer domains are fuzzed over [low, low + SPAN]: small, fast modules

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def valid_values(domain: Domain) -> st.SearchStrategy[Any]:
    """Values inside ``domain``; a new Domain type must add its strategy here."""
    if isinstance(domain, Integer):
        high = domain.high if domain.high is not None else domain.low + SPAN
        values = st.integers(domain.low, high)
        strategy = values.filter(lambda v: v % 2 == 1) if domain.odd else values
    elif isinstance(domain, Real):
        low = domain.low if domain.low is not None else -4.0
        high = domain.high if domain.high is not None else low + 4.0
        strategy = st.floats(low, high, allow_nan=False).filter(domain.contains)
    elif isinstance(domain, Choice):
        strategy = st.sampled_from(domain.values)
    elif isinstance(domain, Flag):
        strategy = st.booleans()
    elif isinstance(domain, IntTuple):
        item = st.integers(domain.low, domain.low + SPAN)
        size = {"min_size": 1, "max_size": 3} if domain.length is None else {}
        if domain.length is not None:
            size = {"min_size": domain.length, "max_size": domain.length}
        strategy = st.lists(item, **size).map(tuple)
        if domain.scalar:
            strategy = st.one_of(item, strategy)
    else:
        raise TypeError(f"no strategy for {type(domain).__name__}: add one to valid_values")
    return st.one_of(st.none(), strategy) if domain.optional else strategy


CANDIDATES: tuple[Any, ...] = (
    "abc",
    float("nan"),
    float("inf"),
    -1,
    0,
    2.5,
    -0.5,
    1.5,
    True,
    None,
    (),
    (0, 0),
    [1, -1],
    (3.5, 3.5),
)


def invalid_values(domain: Domain) -> list[Any]:
    return [v for v in CANDIDATES if not domain.contains(v)]


def draw_options(data: st.DataObject, info: ModuleInfo) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for option, domain in sorted(info.domains.items()):
        if data.draw(st.booleans(), label=f"set {option}"):
            options[option] = data.draw(valid_values(domain), label=option)
    return options


def draw_channels(data: st.DataObject, info: ModuleInfo) -> int:
    return data.draw(st.sampled_from([info.example_channels, 1, 3, 8, 16, 32]), label="channels")


def draw_size(data: st.DataObject, module: torch.nn.Module) -> tuple[int, int]:
    bound = getattr(module, "expected_size", None)
    if bound is not None:  # size-bound modules accept one size
        return int(bound[0]), int(bound[1])
    sides = st.sampled_from([1, 2, 3, 5, 8])
    return data.draw(sides, label="height"), data.draw(sides, label="width")


def outputs(result: Any) -> list[torch.Tensor]:
    return [result] if isinstance(result, torch.Tensor) else list(result)


def run(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], precision: str) -> Any:
    if precision in ("float16", "bfloat16"):
        with torch.autocast("cpu", dtype=getattr(torch, precision)):
            return module(*inputs)
    return module(*inputs)


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(data=st.data())
def test_any_declared_configuration_gives_a_result_or_a_value_error(name, data):
    info = INFOS[name]
    options = draw_options(data, info)
    channels = draw_channels(data, info)
    torch.manual_seed(0)
    try:
        module = attnzoo.create(name, channels, **options)
    except ValueError as error:
        assert str(error)  # a message, never an empty error
        event("construction: ValueError")
        return
    precision = data.draw(st.sampled_from(["float32", "float64", "float16", "bfloat16"]))
    if precision == "float64":
        module = module.double()
    module.train(data.draw(st.booleans(), label="train"))
    batch = data.draw(st.sampled_from([0, 1, 2]), label="batch")
    height, width = draw_size(data, module)
    dtype = torch.float64 if precision == "float64" else torch.float32
    generator = torch.Generator().manual_seed(1)
    inputs = info.example_inputs(batch, height, width, channels, dtype, generator=generator)
    if inputs[0].dim() == 4 and data.draw(st.booleans(), label="channels_last"):
        inputs = tuple(t.contiguous(memory_format=torch.channels_last) for t in inputs)
    try:
        result = run(module, inputs, precision)
    except ValueError as error:
        assert str(error)
        event("forward: ValueError")
        return
    event("forward: checked")
    for tensor in outputs(result):
        assert tensor.shape[0] == batch
        assert torch.isfinite(tensor).all()
        if precision == "float64":
            assert tensor.dtype == torch.float64
    if info.kind in ("gate", "stage", "fusion"):
        assert outputs(result)[0].shape == inputs[0].shape
    elif batch != 1:  # heads and convs: the same per-sample shape as a batch of one
        single = info.example_inputs(1, height, width, channels, dtype, generator=generator)
        reference = run(module.eval(), single, precision)
        assert outputs(result)[0].shape[1:] == outputs(reference)[0].shape[1:]


@pytest.mark.parametrize("name", NAMES)
@settings(SETTINGS, max_examples=15)
@given(data=st.data())
def test_values_outside_a_declared_domain_are_rejected_naming_option_and_value(name, data):
    info = INFOS[name]
    choices = [("channels", Integer(1)), *sorted(info.domains.items())]
    option, domain = data.draw(st.sampled_from(choices), label="option")
    value = data.draw(st.sampled_from(invalid_values(domain)), label="value")
    if option == "channels":
        call = lambda: attnzoo.create(name, value)  # noqa: E731
    else:
        call = lambda: attnzoo.create(name, info.example_channels, **{option: value})  # noqa: E731
    with pytest.raises(ValueError) as error:
        call()
    message = str(error.value)
    assert f"{option}={value!r} is not allowed; expected {domain.describe()}" in message


@pytest.mark.parametrize("name", NAMES)
def test_every_constructor_option_declares_a_domain_that_holds_its_default(name):
    info = INFOS[name]
    assert set(info.domains) == set(info.defaults), "declare a domain for every option"
    for option, default in info.defaults.items():
        assert info.domains[option].contains(default), f"{option}={default!r}"


def test_domains_reject_what_they_should():
    assert not Integer(1).contains(True) and not Integer(1).contains(2.0)
    assert Integer(1, odd=True).contains(3) and not Integer(1, odd=True).contains(4)
    assert not Real(0.0, 1.0).contains(math.nan) and not Real(0.0, 1.0).contains(0.0)
    assert Real(0.0, 1.0).contains(1.0) and not Real(0.0, 1.0).contains("0.5")
    assert not Choice((2, 4)).contains(2.0) and Choice((2, 4)).contains(4)
    assert IntTuple(7, length=2, scalar=True).contains(7)
    assert not IntTuple(1).contains(()) and not IntTuple(1).contains((1, 0))
    assert Integer(1, optional=True).contains(None) and not Integer(1).contains(None)
