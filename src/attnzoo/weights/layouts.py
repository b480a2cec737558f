"""Checkpoint layouts: recognise a released state dict and convert it to attnzoo's keys.

A :class:`Layout` has a ``detect`` test on the key set and a ``convert`` function that consumes
the source keys one by one (:class:`SourceKeys`) and returns a :class:`Plan`: the attnzoo
architecture, model options, attention module and options the file needs, and the state dict
in attnzoo's names. A key the converter never takes is "unexpected", a key it asks for and the
file lacks is "missing": both end in one ValueError naming the file and the keys.

Layouts live in :mod:`attnzoo.weights.official` (authors' releases) and
:mod:`attnzoo.weights.timm_layouts` (torchvision and timm); ``LAYOUTS`` lists them in detection
order (most specific first).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LAYOUTS",
    "Layout",
    "Plan",
    "SourceKeys",
    "detect_layout",
    "get_layout",
    "register_layout",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORM_BUFFERS = ("weight", "bias", "running_mean", "running_var")
# (blocks per stage, bottleneck) -> attnzoo architecture
ARCHS: dict[tuple[tuple[int, ...], bool], str] = {
    ((2, 2, 2, 2), False): "resnet18",
    ((3, 4, 6, 3), False): "resnet34",
    ((3, 4, 6, 3), True): "resnet50",
}


@dataclass
class Plan:
    """What a checkpoint needs: how to build the attnzoo model, and its weights in our keys."""

    layout: str
    arch: str
    num_classes: int
    state: dict[str, torch.Tensor] = field(repr=False)
    attention: str | None = None
    attention_options: dict[str, Any] = field(default_factory=dict)
    placement: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    notes: list[str] = field(default_factory=list)

    def recipe(self) -> dict[str, Any]:
        """Everything but the tensors, JSON-serialisable (stage keys become strings)."""
        recipe = asdict(self)
        recipe.pop("state")
        return recipe

    @classmethod
    def from_recipe(cls, recipe: Mapping[str, Any], state: dict[str, torch.Tensor]) -> Plan:
        recipe = dict(recipe)
        options = dict(recipe.get("attention_options") or {})
        if "stage_options" in options:  # JSON turned the stage numbers into strings
            options["stage_options"] = {int(k): v for k, v in options["stage_options"].items()}
        recipe["attention_options"] = options
        for key in ("mean", "std"):
            recipe[key] = tuple(
                recipe.get(key) or (IMAGENET_MEAN if key == "mean" else IMAGENET_STD)
            )
        return cls(state=state, **recipe)


class SourceKeys:
    """The source state dict, consumed key by key; records what was missing."""

    def __init__(self, state: Mapping[str, torch.Tensor]) -> None:
        self._state = dict(state)
        self.missing: list[str] = []
        self.out: dict[str, torch.Tensor] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._state

    def keys(self) -> list[str]:
        return list(self._state)

    def shape(self, key: str) -> tuple[int, ...]:
        if key not in self._state:
            self.missing.append(key)
            return ()
        return tuple(self._state[key].shape)

    def take(self, key: str) -> torch.Tensor:
        if key not in self._state:
            self.missing.append(key)
            return torch.zeros(0)
        return self._state.pop(key)

    def move(self, source: str, target: str) -> None:
        """``out[target] = take(source)``."""
        self.out[target] = self.take(source)

    def move_norm(self, source: str, target: str) -> None:
        """A BatchNorm's four tensors; ``num_batches_tracked`` too when present (older PyTorch
        did not save it: it is then 0, which only matters for ``momentum=None``)."""
        for name in NORM_BUFFERS:
            self.move(f"{source}.{name}", f"{target}.{name}")
        counter = f"{source}.num_batches_tracked"
        value = self._state.pop(counter, None)
        self.out[f"{target}.num_batches_tracked"] = (
            torch.zeros((), dtype=torch.long) if value is None else value
        )

    def remaining(self) -> list[str]:
        return sorted(self._state)


@dataclass(frozen=True)
class Layout:
    name: str
    description: str
    source: str  # where the layout's model definition lives
    detect: Callable[[Mapping[str, torch.Tensor]], bool]
    convert: Callable[[SourceKeys], Plan]


LAYOUTS: dict[str, Layout] = {}


def register_layout(layout: Layout) -> Layout:
    if layout.name in LAYOUTS:
        raise ValueError(f"layout {layout.name!r} is registered twice")
    LAYOUTS[layout.name] = layout
    return layout


def _load_layouts() -> None:
    from attnzoo.weights import official, timm_layouts  # noqa: F401  (they register)


def get_layout(name: str) -> Layout:
    _load_layouts()
    if name not in LAYOUTS:
        raise ValueError(f"unknown weights format {name!r}; known: {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


def detect_layout(state: Mapping[str, torch.Tensor], path: object) -> Layout:
    """The first layout whose ``detect`` accepts the keys, else ValueError naming the file."""
    _load_layouts()
    for layout in LAYOUTS.values():
        if layout.detect(state):
            return layout
    sample = ", ".join(sorted(state)[:6])
    raise ValueError(
        f"{path}: unrecognised checkpoint layout (keys such as {sample}); known layouts: "
        f"{', '.join(LAYOUTS)}. Pass weights_format= (--weights-format) to force one"
    )


# ----------------------------------------------------------------------------- shared helpers


def any_key(state: Iterable[str], pattern: str) -> bool:
    regex = re.compile(pattern)
    return any(regex.search(key) for key in state)


def stage_blocks(keys: Iterable[str], prefix: str = "") -> tuple[int, ...]:
    """Blocks per stage, from ``{prefix}layer{i}.{j}.`` keys."""
    regex = re.compile(rf"^{re.escape(prefix)}layer([1-4])\.(\d+)\.")
    counts = [0, 0, 0, 0]
    for key in keys:
        match = regex.match(key)
        if match:
            stage, block = int(match.group(1)) - 1, int(match.group(2))
            counts[stage] = max(counts[stage], block + 1)
    return tuple(counts)


def resnet_arch(blocks: tuple[int, ...], bottleneck: bool, path: str = "the file") -> str:
    arch = ARCHS.get((blocks, bottleneck))
    if arch is None:
        kind = "bottleneck" if bottleneck else "basic"
        raise ValueError(
            f"{path}: a ResNet with {kind} blocks {blocks} per stage; attnzoo builds "
            "resnet18 (basic 2-2-2-2), resnet34 (basic 3-4-6-3) and resnet50 (bottleneck 3-4-6-3)"
        )
    return arch


def block_names(blocks: tuple[int, ...]) -> list[tuple[int, int, str]]:
    """``(stage, index, "layer{stage}.{index}")`` for every block."""
    return [(s + 1, j, f"layer{s + 1}.{j}") for s, n in enumerate(blocks) for j in range(n)]


def move_backbone(
    keys: SourceKeys,
    blocks: tuple[int, ...],
    bottleneck: bool,
    *,
    end_wrapped: bool,
    stem: str | None = "conv1",
    stem_norm: str = "bn1",
    head: str = "fc",
    avg_down: bool = False,
) -> None:
    """The torchvision-named ResNet body (``conv1``/``bn1``/``layer*``/``fc``) into attnzoo's
    names; ``end_wrapped``: a module attached at ``block_end`` turns the last norm of each
    branch into ``bnX.0``."""
    if stem is not None:
        keys.move(f"{stem}.weight", "conv1.weight")
        keys.move_norm(stem_norm, "bn1")
    last = 3 if bottleneck else 2
    for _, _, block in block_names(blocks):
        for i in range(1, last + 1):
            keys.move(f"{block}.conv{i}.weight", f"{block}.conv{i}.weight")
            target = f"{block}.bn{i}" + (".0" if end_wrapped and i == last else "")
            keys.move_norm(f"{block}.bn{i}", target)
        move_downsample(keys, block, avg_down)
    keys.move(f"{head}.weight", "fc.weight")
    keys.move(f"{head}.bias", "fc.bias")


def move_downsample(keys: SourceKeys, block: str, avg_down: bool) -> None:
    conv, norm = (1, 2) if avg_down else (0, 1)
    if f"{block}.downsample.{conv}.weight" in keys:
        keys.move(f"{block}.downsample.{conv}.weight", f"{block}.downsample.{conv}.weight")
        keys.move_norm(f"{block}.downsample.{norm}", f"{block}.downsample.{norm}")


def linear_to_conv(weight: torch.Tensor) -> torch.Tensor:
    """A Linear weight (out, in) as a 1x1 conv weight (out, in, 1, 1)."""
    return weight.reshape(*weight.shape, 1, 1) if weight.dim() == 2 else weight


def move_folded(keys: SourceKeys, conv: str, conv_to: str, norm: str, norm_to: str) -> None:
    """A conv (or linear) with a bias, then a BatchNorm, into attnzoo's bias-free conv + norm:
    the bias is folded into the norm's running mean (:func:`fold_bias_into_norm`)."""
    from attnzoo.weights.folding import fold_bias_into_norm

    keys.move(f"{conv}.weight", f"{conv_to}.weight")
    keys.move_norm(norm, norm_to)
    bias = keys.take(f"{conv}.bias")
    if bias.numel():  # a missing bias is already recorded as missing
        keys.out[f"{conv_to}.bias"] = bias
        fold_bias_into_norm(keys.out, f"{conv_to}.bias", norm_to)


def num_classes_of(keys: SourceKeys, head: str = "fc") -> int:
    shape = keys.shape(f"{head}.weight")
    return int(shape[0]) if shape else 0


def per_stage(values: dict[str, int], what: str, blocks: tuple[int, ...]) -> dict[int, int]:
    """``{"layer{s}.{j}": v}`` -> ``{s: v}``; a stage whose blocks disagree is an error."""
    stages: dict[int, int] = {}
    for stage, _, block in block_names(blocks):
        if block not in values:
            continue
        value = values[block]
        if stages.setdefault(stage, value) != value:
            raise ValueError(f"stage {stage} mixes {what} {stages[stage]} and {value}")
    return stages
