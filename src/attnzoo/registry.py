"""The module registry: name -> builder + ModuleInfo.

Every module file in ``attnzoo.modules`` registers its class with :func:`register`. The
registry is the single source of truth used by :func:`create`, the command line
(``attnzoo list`` / ``attnzoo info``), the conformance suite, the profiler and ``attach``.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import pkgutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from attnzoo.domains import CHANNELS, Domain, check_option

KINDS = ("gate", "conv", "stage", "fusion", "head", "network")
MAP_KINDS = ("spatial", "channel", "mask")  # mask: the full (B, C, H, W) gate

InputsFn = Callable[..., tuple[torch.Tensor, ...]]
ShapeFn = Callable[..., tuple[int, ...]]


@dataclass(frozen=True)
class Divergence:
    """A documented difference between the paper and the official code, exposed as an option.

    ``default`` is what the module does unless told otherwise; ``paper`` and ``code`` are the
    option values that reproduce the paper's equation and the official code respectively.
    """

    option: str
    default: Any
    paper: Any
    code: Any
    note: str


@dataclass(frozen=True)
class ModuleInfo:
    """What the registry knows about one attention mechanism."""

    name: str
    cls: type[nn.Module]
    paper: str
    authors: str
    year: int
    venue: str
    category: str
    kind: str
    placement: str
    arxiv: str | None = None
    code_url: str | None = None
    divergences: tuple[Divergence, ...] = ()
    maps: tuple[str, ...] = ()
    identity_at_init: bool = False
    size_bound: bool = False
    memory: str = "O(C) extra: no position-by-position matrix"
    example_channels: int = 32
    example_options: Mapping[str, Any] = field(default_factory=dict)
    min_size: int = 1
    inputs: InputsFn | None = None
    output_shape: ShapeFn | None = None
    no_grad_params: Mapping[str, str] = field(default_factory=dict)
    domains: Mapping[str, Domain] = field(default_factory=dict)

    @property
    def options(self) -> dict[str, Any]:
        """The paper-vs-code options and their defaults."""
        return {d.option: d.default for d in self.divergences}

    @property
    def defaults(self) -> dict[str, Any]:
        """Every constructor option (after ``channels``) with its default value."""
        params = inspect.signature(self.cls.__init__).parameters
        return {
            name: p.default
            for name, p in params.items()
            if name not in ("self", "channels") and p.default is not inspect.Parameter.empty
        }

    def build_example(self, **overrides: Any) -> nn.Module:
        """The module at its example configuration (what tests, profile and export use)."""
        options = {**self.example_options, **overrides}
        channels = options.pop("channels", self.example_channels)
        return create(self.name, channels, **options)

    def example_inputs(
        self,
        batch: int = 2,
        height: int = 8,
        width: int = 8,
        channels: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """Random inputs of the right form for this module's ``forward``."""
        c = self.example_channels if channels is None else channels
        if self.inputs is not None:
            return self.inputs(batch, c, height, width, dtype, device, generator)
        x = torch.randn(batch, c, height, width, generator=generator, dtype=dtype)
        return (x.to(device) if device is not None else x,)

    def expected_shape(self, *inputs: torch.Tensor) -> tuple[int, ...]:
        """Shape of the (first) output for the given inputs at the example configuration."""
        if self.output_shape is not None:
            return tuple(self.output_shape(*inputs))
        return tuple(inputs[0].shape)


VIDEO_FRAMES = 3


def video_inputs(
    batch: int,
    channels: int,
    height: int,
    width: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, ...]:
    """Example inputs of the video forms: one clip (B, C, T=3, H, W)."""
    clip = torch.randn(
        batch, channels, VIDEO_FRAMES, height, width, generator=generator, dtype=dtype
    )
    return (clip.to(device) if device is not None else clip,)


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """ " Did you mean: a, b?" with the closest of ``known`` to ``name``, or "" if none is close:
    the hint every "unknown name" error of the library ends with."""
    close = difflib.get_close_matches(name, [k for k in known if k], n=3, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""


_REGISTRY: dict[str, ModuleInfo] = {}
_LOADED = False


def _validate_construction(cls: type[nn.Module], name: str, domains: Mapping[str, Domain]) -> None:
    """Make ``cls(...)`` check ``channels`` and every given option against its domain before
    the class's own ``__init__`` runs: the one place where constructor values are validated,
    whether the module is built through :func:`create`, ``attach`` or its class."""
    original = cls.__init__
    signature = inspect.signature(original)

    @functools.wraps(original)
    def __init__(self: nn.Module, *args: Any, **kwargs: Any) -> None:
        try:
            given = signature.bind_partial(self, *args, **kwargs).arguments
        except TypeError as error:
            raise TypeError(f"{name}: {error}") from None
        if "channels" in given:
            check_option(name, "channels", given["channels"], CHANNELS)
        for option, domain in domains.items():
            if option in given:
                check_option(name, option, given[option], domain)
        original(self, *args, **kwargs)

    cls.__init__ = __init__  # type: ignore[method-assign]


def register(
    name: str, options: Mapping[str, Domain] | None = None, **info: Any
) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: ``@register("se", options={"rd_ratio": RD_RATIO}, paper=..., ...)``.

    ``options`` declares the domain of every constructor option (see :mod:`attnzoo.domains`);
    constructing the class checks the given values against it.
    """

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ValueError(f"attention module {name!r} is registered twice")
        domains = dict(options or {})
        accepted = inspect.signature(cls.__init__).parameters
        undeclared = sorted(set(domains) - set(accepted))
        if undeclared:
            raise ValueError(f"{name}: options {undeclared} are not constructor parameters")
        entry = ModuleInfo(name=name, cls=cls, domains=domains, **info)
        if entry.kind not in KINDS:
            raise ValueError(f"{name}: kind {entry.kind!r} is not one of {KINDS}")
        unknown = set(entry.maps) - set(MAP_KINDS)
        if unknown:
            raise ValueError(f"{name}: unknown map kinds {sorted(unknown)}; use {MAP_KINDS}")
        if name not in _REGISTRY:
            _validate_construction(cls, name, domains)
        _REGISTRY[name] = entry
        return cls

    return decorator


def import_package_files(package_name: str) -> None:
    """Import every public file of a package, so that each registers what it defines (the
    registries of modules and of models fill themselves this way: a new file needs no edit)."""
    package = importlib.import_module(package_name)
    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{package_name}.{module.name}")


def _load_all() -> None:
    global _LOADED
    if not _LOADED:
        import_package_files("attnzoo.modules")
        _LOADED = True


def list_modules(kind: str | None = None, category: str | None = None) -> list[str]:
    """Registered module names, sorted, optionally filtered by kind and category."""
    _load_all()
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    return sorted(
        name
        for name, info in _REGISTRY.items()
        if (kind is None or info.kind == kind) and (category is None or info.category == category)
    )


def module_info(name: str) -> ModuleInfo:
    """The :class:`ModuleInfo` of a registered module; ValueError with close matches if unknown."""
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        hint = did_you_mean(name, _REGISTRY)
        raise ValueError(
            f"unknown attention module {name!r}.{hint} Known: {', '.join(sorted(_REGISTRY))}"
        ) from None


def create(name: str, channels: int, **options: Any) -> nn.Module:
    """Build a registered module: ``attnzoo.create("cbam", 64, rd_ratio=1/16)``."""
    info = module_info(name)
    accepted = inspect.signature(info.cls.__init__).parameters
    has_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    unknown = [k for k in options if k not in accepted]
    if unknown and not has_var_kw:
        valid = [k for k in accepted if k not in ("self", "channels")]
        raise ValueError(
            f"{name}: unknown option(s) {', '.join(unknown)}; valid options: {', '.join(valid)}"
        )
    return info.cls(channels, **options)
