"""Insert attention modules into an existing model: ``attnzoo.attach(model, "cbam")``.

Works on attnzoo's ResNets and on torchvision's and timm's (``BasicBlock`` and ``Bottleneck``),
found structurally: a residual block is a module with children ``conv1``, ``conv2`` and
``bn2``; the last norm of its residual branch is ``bn3`` when the block has a ``conv3``, else
``bn2`` (a block may name its branch end itself with a ``branch_end`` attribute, as our
pre-activation units do: ``"conv3"``). A stage is the module that holds a run of blocks
(``layer1`` ... ``layer4``). On any other model, pass the qualified names of the modules after
which to insert.

Placements (mmcv-style named positions; an unknown one raises ValueError listing them):

=================  ==============================================================  =========
placement          where                                                           default
=================  ==============================================================  =========
``block_end``      after the last norm of every residual branch, before the add    every
``block_input``    on the block input; the attended tensor also feeds the shortcut every
``stage_end``      once after the last block of a stage                            not last
``last_block``     like ``block_end``, in the last block of each stage only        every
``between_stages`` an extra block after a stage, before the next one               not last
``conv_replace``   replaces the 3x3 conv of bottlenecks / ``conv1`` of basic blocks every
[names]            a list of qualified module names: insert after each of them
=================  ==============================================================  =========

Stages are numbered from 1 (``layer1`` = stage 1 = "res2"/"conv2_x" of the papers). Some
papers name the stages they use; :data:`PAPER_STAGES` holds those defaults (GC in stages 2-4,
non-local in stages 2-3 = res3/res4, GALA in stage 3 = conv4_x); ``stages=`` overrides.

Attach after the backbone is initialised (and after loading pretrained weights): nothing here
re-initialises anything, so a module's own initialisation (zero γ, identity at init) survives.
Insertion changes the state-dict keys of the wrapped modules (``layer1.0.bn2.weight`` becomes
``layer1.0.bn2.0.weight``).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from attnzoo.registry import ModuleInfo, create, did_you_mean, list_modules, module_info

__all__ = [
    "PAPER_STAGES",
    "PLACEMENTS",
    "AttachedChain",
    "AttendedInput",
    "InputSizeRequired",
    "attach",
]


class InputSizeRequired(ValueError):
    """A size-bound module needs ``input_size=`` to compute its feature size at each site
    (a ValueError; callers such as ``models.create`` re-word it for their own arguments)."""


PLACEMENTS: dict[str, str] = {
    "block_end": "after the last norm of every residual branch, before the add",
    "block_input": "on every block's input; the attended tensor also feeds the shortcut",
    "stage_end": "once after the last block of each stage except the last",
    "last_block": "after the last norm of the last block of each stage",
    "between_stages": "an extra block after each stage except the last",
    "conv_replace": "replaces the 3x3 conv of bottlenecks / conv1 of basic blocks",
}

# Stages (1-based, layer1 = 1) where a paper puts its module, when it is not "every stage".
PAPER_STAGES: dict[str, tuple[int, ...]] = {
    "gc": (2, 3, 4),  # GCNet: c3-c5
    "nonlocal": (2, 3),  # Non-local: res3 and res4
    "gala": (3,),  # GALA: conv4_x of ResNet-50
    "ciau": (2, 3),  # IAU: after stages 2 and 3 of ResNet-50
    "siau": (2, 3),
    "rga_s": (1, 2, 3, 4),  # RGA: after each of the four stages (official code)
    "rga_c": (1, 2, 3, 4),
    "rga_sc": (1, 2, 3, 4),
}

_NOT_INSERTABLE = {
    "head": "is a segmentation head; use attnzoo.models.create('segnet_resnet', head={name!r})",
    "fusion": "fuses two feature maps; use attnzoo.models.create('segnet_resnet', head={name!r})",
    "network": "wraps a whole model; use attnzoo.gattanet.wrap(model, layers=[...])",
}


class AttachedChain(nn.Sequential):
    """A module followed by the attention modules attached after it, applied in order."""


class AttendedInput(nn.Module):
    """``block(attention(x))``: the block's input is attended before both branch and shortcut."""

    def __init__(self, attention: nn.Module, block: nn.Module) -> None:
        super().__init__()
        self.attention = attention
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.attention(x))


@dataclass
class _Block:
    name: str  # qualified name of the block (or of its AttendedInput wrapper)
    module: nn.Module  # the block itself
    stage: int  # 1-based


@dataclass
class _Site:
    """One insertion: ``target`` is the qualified name acted upon."""

    target: str
    stage: int
    channels: int | None
    mode: str  # "after", "input", "replace_conv"


def _is_block(module: nn.Module) -> bool:
    if isinstance(getattr(module, "branch_end", None), str):
        return True
    children = dict(module.named_children())
    return "conv1" in children and "conv2" in children and "bn2" in children


def _base(module: nn.Module) -> nn.Module:
    """The original module behind attached chains."""
    while isinstance(module, AttachedChain):
        module = module[0]
    return module


def _channels_of(module: nn.Module) -> int | None:
    """Output channels of a conv or norm (num_features / num_channels / out_channels)."""
    module, _ = _unwrap(module)
    if _is_block(module):  # a residual block: its output width is its branch end's
        return _channels_of(module.get_submodule(_end_name(module)))
    for attribute in ("num_features", "num_channels", "out_channels"):
        value = getattr(module, attribute, None)
        if isinstance(value, int):
            return value
    if isinstance(module, nn.Sequential) and len(module) > 0:
        for child in reversed(module):
            channels = _channels_of(child)
            if channels is not None:
                return channels
    return None


def _attention_classes() -> tuple[type, ...]:
    return tuple(module_info(n).cls for n in list_modules())


def _find_blocks(model: nn.Module) -> list[_Block]:
    """Residual blocks in forward-definition order, grouped into 1-based stages by parent."""
    skip = _attention_classes()
    blocks: list[_Block] = []
    parents: list[str] = []

    def visit(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            qualified = f"{prefix}{name}"
            if isinstance(child, skip):
                continue
            inner, _ = _unwrap(child)
            if _is_block(inner):
                if prefix not in parents:
                    parents.append(prefix)
                blocks.append(_Block(qualified, inner, parents.index(prefix) + 1))
            else:
                visit(child, qualified + ".")

    visit(model, "")
    return blocks


def _end_name(block: nn.Module) -> str:
    """Child name of the last module of the residual branch (its last norm, or ``branch_end``)."""
    own = getattr(block, "branch_end", None)
    if isinstance(own, str):
        return own
    return "bn3" if hasattr(block, "conv3") and hasattr(block, "bn3") else "bn2"


def _unwrap(module: nn.Module) -> tuple[nn.Module, str]:
    """The block behind attach's wrappers, and the path from the wrapper to it."""
    path = ""
    while True:
        if isinstance(module, AttachedChain):
            module, path = module[0], path + ".0"
        elif isinstance(module, AttendedInput):
            module, path = module.block, path + ".block"
        else:
            return module, path


def _block_prefix(model: nn.Module, block: _Block) -> str:
    """Qualified-name prefix of the block's own children, through any wrappers."""
    return block.name + _unwrap(model.get_submodule(block.name))[1] + "."


def _sites(
    model: nn.Module, placement: str, blocks: list[_Block], stages: Sequence[int]
) -> list[_Site]:
    chosen = [b for b in blocks if b.stage in stages]
    sites: list[_Site] = []
    if placement in ("block_end", "last_block"):
        if placement == "last_block":
            chosen = [
                b
                for i, b in enumerate(chosen)
                if i + 1 == len(chosen) or chosen[i + 1].stage != b.stage
            ]
        for block in chosen:
            target = _block_prefix(model, block) + _end_name(block.module)
            sites.append(
                _Site(target, block.stage, _channels_of(model.get_submodule(target)), "after")
            )
    elif placement == "block_input":
        for block in chosen:
            sites.append(_Site(block.name, block.stage, _in_channels(block.module), "input"))
    elif placement in ("stage_end", "between_stages"):
        for stage in stages:
            last = [b for b in chosen if b.stage == stage][-1]
            end = _block_prefix(model, last) + _end_name(last.module)
            channels = _channels_of(model.get_submodule(end))
            parent = last.name.rsplit(".", 1)[0] if "." in last.name else ""
            sites.append(_Site(parent, stage, channels, "after"))
    elif placement == "conv_replace":
        for block in chosen:
            conv = "conv2" if hasattr(block.module, "conv3") else "conv1"
            target = _block_prefix(model, block) + conv
            sites.append(_Site(target, block.stage, None, "replace_conv"))
    return sites


def _in_channels(block: nn.Module) -> int | None:
    conv1 = _base(block.get_submodule("conv1")) if hasattr(block, "conv1") else None
    value = getattr(conv1, "in_channels", None)
    return value if isinstance(value, int) else None


def _probe_shapes(
    model: nn.Module, sites: list[_Site], input_size: Sequence[int]
) -> dict[str, tuple[int, ...]]:
    """One forward pass at ``input_size`` recording each site's feature shape (C, H, W)."""
    if len(input_size) not in (2, 3):
        raise ValueError(f"input_size must be (H, W) or (C, H, W), got {tuple(input_size)!r}")
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if len(input_size) == 3:
        in_channels = int(input_size[0])
    elif first_conv is not None:
        in_channels = first_conv.in_channels
    else:
        raise ValueError("cannot tell the model's input channels; pass input_size=(C, H, W)")
    reference = next(model.parameters(), None)
    x = torch.zeros(
        1,
        in_channels,
        int(input_size[-2]),
        int(input_size[-1]),
        device=None if reference is None else reference.device,
        dtype=None if reference is None else reference.dtype,
    )
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for site in sites:
        module = model.get_submodule(site.target)

        def hook(
            mod: nn.Module,
            args: tuple[Any, ...],
            out: Any,
            key: str = site.target,
            mode: str = site.mode,
        ) -> None:
            tensor = args[0] if mode in ("input", "replace_conv") else out
            if isinstance(tensor, torch.Tensor):
                shapes[key] = tuple(tensor.shape[1:])

        handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return shapes


def _replace(model: nn.Module, qualified: str, new: nn.Module) -> None:
    parent_name, _, child = qualified.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _insert_after(model: nn.Module, qualified: str, attention: nn.Module) -> None:
    if qualified == "":
        raise ValueError("cannot attach after the whole model; name a submodule")
    target = model.get_submodule(qualified)
    if isinstance(target, AttachedChain):
        target.append(attention)
    elif isinstance(target, nn.Sequential) and _is_stage(target):
        target.append(attention)
    else:
        _replace(model, qualified, AttachedChain(target, attention))


def _is_stage(module: nn.Sequential) -> bool:
    return any(_is_block(c.block if isinstance(c, AttendedInput) else c) for c in module)


def _insert_input(model: nn.Module, qualified: str, attention: nn.Module) -> None:
    holder = model.get_submodule(qualified)
    if isinstance(holder, AttendedInput):
        if isinstance(holder.attention, AttachedChain):
            holder.attention.append(attention)
        else:
            holder.attention = AttachedChain(holder.attention, attention)
    else:
        _replace(model, qualified, AttendedInput(attention, holder))


def _build(
    info: ModuleInfo,
    channels: int,
    options: dict[str, Any],
    spatial: tuple[int, int] | None,
    conv: nn.Conv2d | None,
) -> nn.Module:
    params = inspect.signature(info.cls.__init__).parameters
    options = dict(options)
    if conv is not None:
        for key, value in (
            ("out_channels", conv.out_channels),
            ("stride", conv.stride[0]),
            ("dilation", conv.dilation[0]),
        ):
            if key in params and key not in options:
                options[key] = value
    wants_size = "spatial_size" in params and "spatial_size" not in options
    if wants_size and spatial is not None and info.size_bound:
        options["spatial_size"] = spatial
    try:
        return create(info.name, channels, **options)
    except ValueError as error:
        # Modules that are size-bound only in some configurations (GE θ global) ask for it.
        if not (wants_size and "spatial_size" not in options and "spatial_size" in str(error)):
            raise
        if spatial is None:
            raise InputSizeRequired(
                f"{info.name} needs the feature size here ({error}); pass input_size=(H, W) "
                "(the model's input size) so attach can compute it"
            ) from error
        return create(info.name, channels, **options, spatial_size=spatial)


def attach(
    model: nn.Module,
    name: str,
    placement: str | Sequence[str] | None = None,
    stages: Iterable[int] | None = None,
    *,
    input_size: Sequence[int] | None = None,
    stage_options: Mapping[int, Mapping[str, Any]] | None = None,
    **options: Any,
) -> nn.Module:
    """Insert the registered module ``name`` into ``model`` in place and return the model.

    ``placement``: a named position (see :data:`PLACEMENTS`), a list of qualified module names
    (insert after each), or None for the module's registry placement. ``stages``: 1-based
    stage numbers to use (default: every stage, all but the last for ``stage_end`` and
    ``between_stages``, or the paper's stages in :data:`PAPER_STAGES`). ``input_size``: the
    model input's (H, W) or (C, H, W), needed by size-bound modules (RGA, GE θ-global) and to
    find channel counts of arbitrary named modules. ``stage_options``: per-stage overrides of
    ``options`` (e.g. ECA's released ``k_size`` per stage). ``options`` go to every module's
    constructor; ``channels`` is computed per site.
    """
    info = module_info(name)
    if info.kind in _NOT_INSERTABLE:
        raise ValueError(f"{name!r} {_NOT_INSERTABLE[info.kind].format(name=name)}")
    example = info.example_inputs(batch=1, height=4, width=4)
    if info.inputs is not None and example[0].dim() != 4:
        raise ValueError(
            f"{name!r} takes rank-{example[0].dim()} inputs (video or sequence features); attach "
            "inserts modules into 2-D CNNs, whose features are (B, C, H, W)"
        )
    if placement is None:
        placement = info.placement
        if placement not in PLACEMENTS:
            raise ValueError(
                f"{name!r} is registered with placement {placement!r}, which attach does not "
                f"know; pass one of {', '.join(PLACEMENTS)} or a list of module names"
            )
    channel_override = options.pop("channels", None)
    stage_options = dict(stage_options or {})

    if isinstance(placement, str):
        if placement not in PLACEMENTS:
            raise ValueError(
                f"unknown placement {placement!r}; valid placements: {', '.join(PLACEMENTS)} "
                "(or a list of qualified module names)"
            )
        if (info.kind == "conv") != (placement == "conv_replace"):
            expected = "conv_replace" if info.kind == "conv" else "a gate placement"
            raise ValueError(
                f"{name!r} is a {info.kind!r} module; placement {placement!r} needs {expected}"
            )
        blocks = _find_blocks(model)
        if not blocks:
            raise ValueError(
                f"found no residual blocks in {type(model).__name__} (looked for modules with "
                "children conv1, conv2 and bn2, or a branch_end attribute); pass placement="
                "[qualified module names] to insert after those modules"
            )
        available = sorted({b.stage for b in blocks})
        if stages is None:
            if name in PAPER_STAGES:
                chosen = [s for s in PAPER_STAGES[name] if s in available] or available[-1:]
            elif placement in ("stage_end", "between_stages"):
                chosen = available[:-1] or available
            else:
                chosen = available
        else:
            chosen = sorted(set(int(s) for s in stages))
            missing = [s for s in chosen if s not in available]
            if missing:
                raise ValueError(
                    f"stages {missing} do not exist; this model has stages {available} "
                    "(1-based: layer1 is stage 1)"
                )
        sites = _sites(model, placement, blocks, chosen)
    else:
        names = list(placement)
        if not names:
            raise ValueError("placement is an empty list; name at least one module")
        known = dict(model.named_modules())
        for qualified in names:
            if qualified not in known or qualified == "":
                hint = did_you_mean(qualified, known)
                raise ValueError(f"model has no submodule {qualified!r}.{hint}")
        mode = "replace_conv" if info.kind == "conv" else "after"
        sites = [_Site(n, 0, _channels_of(known[n]), mode) for n in names]

    shapes: dict[str, tuple[int, ...]] = {}
    if input_size is not None:
        shapes = _probe_shapes(model, sites, input_size)
    elif info.size_bound:
        raise InputSizeRequired(
            f"{name!r} is bound to one feature size; pass input_size=(H, W) (the model's input "
            "size) so attach can compute the size at each insertion point"
        )

    built: list[tuple[_Site, nn.Module]] = []
    for site in sites:
        shape = shapes.get(site.target)
        conv = model.get_submodule(site.target) if site.mode == "replace_conv" else None
        if conv is not None and not isinstance(conv, nn.Conv2d):
            raise ValueError(
                f"{name!r} replaces a Conv2d; {site.target!r} is {type(conv).__name__}"
            )
        channels = channel_override
        if channels is None:
            channels = conv.in_channels if conv is not None else site.channels
        if channels is None and shape is not None:
            channels = shape[0]
        if channels is None:
            raise ValueError(
                f"cannot tell the channel count at {site.target!r} "
                f"({type(model.get_submodule(site.target)).__name__}); pass input_size=(H, W) "
                "so attach can probe it, or channels=..."
            )
        spatial = None
        if shape is not None:
            spatial = (int(shape[1]), int(shape[2])) if site.mode != "replace_conv" else None
        site_options = {**options, **dict(stage_options.get(site.stage, {}))}
        module = _build(info, int(channels), site_options, spatial, conv)
        built.append((site, module))

    reference = next(model.parameters(), None)
    for site, module in built:
        if reference is not None:
            module.to(device=reference.device, dtype=reference.dtype)
        module.train(model.training)
        if site.mode == "after":
            _insert_after(model, site.target, module)
        elif site.mode == "input":
            _insert_input(model, site.target, module)
        else:
            _replace(model, site.target, module)
            _drop_norm_after_conv(model, site.target)
    return model


def _drop_norm_after_conv(model: nn.Module, conv_name: str) -> None:
    """SK normalises and activates each branch itself (BN + ReLU), as in the paper and timm's
    SK-ResNets: the block's own norm right after the replaced conv (``conv2`` -> ``bn2``) is
    replaced by the identity. Pre-activation blocks (the next norm belongs to the next conv)
    keep theirs."""
    parent_name, _, conv = conv_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(getattr(parent, "branch_end", None), str):
        return
    norm = "bn" + conv.removeprefix("conv")
    if conv.startswith("conv") and isinstance(
        getattr(parent, norm, None), nn.modules.batchnorm._BatchNorm
    ):
        setattr(parent, norm, nn.Identity())
