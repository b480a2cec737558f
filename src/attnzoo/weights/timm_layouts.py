"""torchvision's and timm's ResNets.

- ``torchvision``: ``torchvision.models.resnet`` 18/34/50 (and timm's plain ``resnet18/34/50``,
  which share the keys): the names attnzoo's ResNets already use.
- ``timm``: ``timm.models.resnet.ResNet`` with an attention module in every block's ``se``
  attribute, after the last BN (``seresnet*``: ``SEModule`` fc1/fc2 1x1 convs with bias, width
  rounded to a multiple of 8 -> attnzoo ``se`` with the width read per stage; ``ecaresnet*``:
  ``EcaModule`` conv, adaptive k -> attnzoo ``eca`` with k read per stage), and timm's SK
  networks (``timm.models.sknet``: ``SelectiveKernel`` in place of ``conv1`` of basic blocks /
  ``conv2`` of bottlenecks, input split across the two paths, its own BN + ReLU per path ->
  attnzoo ``sk`` with ``split_input=True``; attach drops the block's BN after it). Stems:
  7x7, ``deep`` (``*d``: 32-32-64) and ``deep_tiered`` (``*t``: 24-32-64); ``avg_down``
  shortcuts. Depths attnzoo builds: 18, 34, 50.

Not expressible (the error says so): timm's ``resnet26/101/...`` depths, ResNeXt widths and
groups, anti-aliased (``aa``) downsampling, ``gcresnet*``/``*33ts`` (ByobNet, another layout),
``resnest*`` (split attention, not in attnzoo).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from attnzoo.weights.layouts import (
    Layout,
    Plan,
    SourceKeys,
    any_key,
    block_names,
    move_downsample,
    num_classes_of,
    per_stage,
    register_layout,
    resnet_arch,
    stage_blocks,
)

_TORCHVISION_KEY = re.compile(
    r"^(conv1|bn1|fc|layer[1-4]\.\d+\.(conv[1-3]|bn[1-3]|downsample\.[01]))\."
    r"(weight|bias|running_mean|running_var|num_batches_tracked)$"
)
_STEM_WIDTHS = {32: "deep", 24: "deep_tiered"}


def _is_torchvision(state: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith("layer1.") for k in state) and all(
        _TORCHVISION_KEY.match(k) for k in state
    )


def _is_timm(state: Mapping[str, torch.Tensor]) -> bool:
    return "fc.weight" in state and (
        any_key(state, r"^layer[1-4]\.\d+\.(se\.|conv[12]\.paths\.)")
        or "conv1.0.weight" in state
        or any_key(state, r"^layer[1-4]\.0\.downsample\.2\.weight$")
    )


def _move_stem(keys: SourceKeys) -> dict[str, Any]:
    if "conv1.0.weight" not in keys:
        keys.move("conv1.weight", "conv1.weight")
        keys.move_norm("bn1", "bn1")
        return {}
    width = keys.shape("conv1.0.weight")[0]
    if width not in _STEM_WIDTHS or keys.shape("conv1.3.weight")[0] != 32:
        raise ValueError(f"a deep stem of width {width}: attnzoo has 32-32-64 and 24-32-64")
    for index in (0, 3, 6):
        keys.move(f"conv1.{index}.weight", f"conv1.{index}.weight")
    for index in (1, 4):
        keys.move_norm(f"conv1.{index}", f"conv1.{index}")
    keys.move_norm("bn1", "bn1")
    return {"stem": _STEM_WIDTHS[width]}


def _attention_kind(keys: SourceKeys) -> str | None:
    if any_key(keys.keys(), r"\.conv[12]\.paths\.0\."):
        return "sk"
    if any_key(keys.keys(), r"\.se\.fc1\.weight$"):
        return "se"
    if any_key(keys.keys(), r"\.se\.conv\.weight$"):
        return "eca"
    if any_key(keys.keys(), r"\.se\."):
        sample = next(k for k in keys.keys() if ".se." in k)
        raise ValueError(
            f"a timm attention module attnzoo does not map (key {sample}); supported: SEModule, "
            "EcaModule, SelectiveKernel"
        )
    return None


def _block_input(stage: int, index: int, bottleneck: bool) -> int:
    expansion = 4 if bottleneck else 1
    if index > 0:
        return 64 * 2 ** (stage - 1) * expansion
    return 64 if stage == 1 else 64 * 2 ** (stage - 2) * expansion


def _move_sk(keys: SourceKeys, src: str, dst: str, in_channels: int) -> tuple[bool, int]:
    """A timm SelectiveKernel at ``src`` into attnzoo's SK at ``dst``: (split_input, d)."""
    paths = 0
    while f"{src}.paths.{paths}.conv.weight" in keys:
        keys.move(f"{src}.paths.{paths}.conv.weight", f"{dst}.branches.{paths}.0.weight")
        keys.move_norm(f"{src}.paths.{paths}.bn", f"{dst}.branches.{paths}.1")
        paths += 1
    keys.move(f"{src}.attn.fc_reduce.weight", f"{dst}.fuse.0.weight")
    keys.move_norm(f"{src}.attn.bn", f"{dst}.fuse.1")
    keys.move(f"{src}.attn.fc_select.weight", f"{dst}.select.weight")
    if paths == 0 or not keys.out[f"{dst}.fuse.0.weight"].numel():
        return False, 0  # the missing keys are recorded
    per_path = keys.out[f"{dst}.branches.0.0.weight"].shape[1]
    if paths != 2 or per_path * paths not in (in_channels, 2 * in_channels):
        raise ValueError(
            f"{src}: {paths} paths of {per_path} input channels for {in_channels} inputs: "
            "attnzoo's sk maps 2 ungrouped paths, split or not"
        )
    return per_path * paths == in_channels, int(keys.out[f"{dst}.fuse.0.weight"].shape[0])


def _convert_timm(keys: SourceKeys, layout: str = "timm") -> Plan:
    blocks = stage_blocks(keys.keys())
    bottleneck = any_key(keys.keys(), r"^layer1\.0\.conv3\.")
    arch = resnet_arch(blocks, bottleneck)
    num_classes = num_classes_of(keys)
    kind = _attention_kind(keys)
    model_options = _move_stem(keys)
    avg_down = any_key(keys.keys(), r"^layer[1-4]\.0\.downsample\.2\.weight$")
    if avg_down:
        model_options["avg_down"] = True
    last = 3 if bottleneck else 2
    replaced = (2 if bottleneck else 1) if kind == "sk" else 0
    widths: dict[str, int] = {}
    split = set()
    for stage, index, block in block_names(blocks):
        for i in range(1, last + 1):
            if i == replaced:
                in_channels = 64 * 2 ** (stage - 1) if bottleneck else 0
                in_channels = in_channels or _block_input(stage, index, bottleneck)
                sk = f"{block}.conv{i}"
                is_split, width = _move_sk(keys, sk, sk, in_channels)
                if width:
                    widths[block] = width
                    split.add(is_split)
                continue
            # timm's SK blocks wrap their other convs as ConvNormAct (conv{i}.conv / .bn)
            wrapped = f"{block}.conv{i}.conv.weight" in keys
            conv = f"{block}.conv{i}.conv" if wrapped else f"{block}.conv{i}"
            norm = f"{block}.conv{i}.bn" if wrapped else f"{block}.bn{i}"
            keys.move(f"{conv}.weight", f"{block}.conv{i}.weight")
            end = ".0" if i == last and kind in ("se", "eca") else ""
            keys.move_norm(norm, f"{block}.bn{i}{end}")
        move_downsample(keys, block, avg_down)
        target = f"{block}.bn{last}.1"
        if kind == "se":
            for name in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
                keys.move(f"{block}.se.{name}", f"{target}.{name}")
            if keys.out[f"{target}.fc1.weight"].numel():
                widths[block] = int(keys.out[f"{target}.fc1.weight"].shape[0])
        elif kind == "eca":
            keys.move(f"{block}.se.conv.weight", f"{target}.conv.weight")
            if keys.out[f"{target}.conv.weight"].numel():
                widths[block] = int(keys.out[f"{target}.conv.weight"].shape[-1])
    keys.move("fc.weight", "fc.weight")
    keys.move("fc.bias", "fc.bias")
    options: dict[str, Any] = {}
    if kind in ("se", "sk"):
        options["stage_options"] = {
            s: {"rd_channels": w} for s, w in per_stage(widths, "widths", blocks).items()
        }
    if kind == "eca":
        options["stage_options"] = {
            s: {"k_size": k} for s, k in per_stage(widths, "kernel sizes", blocks).items()
        }
    if kind == "sk":
        if len(split) > 1:
            raise ValueError("SK blocks mix split and unsplit inputs")
        options.update(groups=1, split_input=bool(split and split.pop()), min_rd_channels=1)
    return Plan(layout, arch, num_classes, keys.out, kind, options, None, model_options)


register_layout(
    Layout(
        "timm",
        "timm ResNet family: seresnet*, ecaresnet*, skresnet*, *d/*t stems (depths 18/34/50)",
        "https://github.com/huggingface/pytorch-image-models/blob/main/timm/models/resnet.py",
        _is_timm,
        _convert_timm,
    )
)
register_layout(
    Layout(
        "torchvision",
        "torchvision ResNet-18/34/50 (also timm's plain resnet18/34/50)",
        "https://github.com/pytorch/vision/blob/main/torchvision/models/resnet.py",
        _is_torchvision,
        lambda keys: _convert_timm(keys, "torchvision"),
    )
)
