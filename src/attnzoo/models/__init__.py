"""Built-in models by name: ``attnzoo.models.create("resnet20", attention="se")``.

Each file of this package registers its builders with :func:`register_model`; the package
imports every file on first use, so a new model file needs no edit here. A builder takes
``num_classes`` and keyword options and returns an ``nn.Module``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from attnzoo.domains import Integer, check_option
from attnzoo.registry import did_you_mean, import_package_files

Builder = Callable[..., nn.Module]
_MODELS: dict[str, Builder] = {}
_LOADED = False


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator for a model builder ``fn(num_classes=..., **options) -> nn.Module``."""

    def decorator(builder: Builder) -> Builder:
        if name in _MODELS and _MODELS[name] is not builder:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = builder
        return builder

    return decorator


def _load_all() -> None:
    global _LOADED
    if not _LOADED:
        import_package_files(__name__)
        _LOADED = True


def list_models() -> list[str]:
    """Names of the built-in models, sorted."""
    _load_all()
    return sorted(_MODELS)


def get_builder(name: str) -> Builder:
    _load_all()
    try:
        return _MODELS[name]
    except KeyError:
        hint = did_you_mean(name, _MODELS)
        raise ValueError(
            f"unknown model {name!r}.{hint} Known: {', '.join(sorted(_MODELS))}"
        ) from None


def create(
    name: str,
    attention: str | None = None,
    num_classes: int | None = None,
    attention_options: dict[str, Any] | None = None,
    placement: str | None = None,
    weights: str | Path | None = None,
    weights_format: str | None = None,
    **options: Any,
) -> nn.Module:
    """Build a model, optionally with an attention mechanism at its paper placement.

    ``attention="gattanet"`` wraps the model with the network-wide GAttANet system over the
    model's ``gattanet_layers``; any other name is inserted with :func:`attnzoo.attach`.
    ``num_classes`` defaults to 10, or to the file's classes with ``weights``.

    ``weights``: a released checkpoint (``.pth``/``.pth.tar``/safetensors) to load: its layout
    is detected (``weights_format`` forces one, see :data:`attnzoo.weights.LAYOUTS`), the
    variant it needs is built (e.g. ``stride_in_1x1`` for the Caffe SE-ResNet-50) and every key
    is converted and checked (:func:`attnzoo.weights.create_pretrained`). A ``num_classes``
    other than the file's gets a new, freshly initialised ``fc`` for fine-tuning.
    """
    builder = get_builder(name)  # an unknown name fails here, with the list of known ones
    if num_classes is not None:
        check_option(f"model {name!r}", "num_classes", num_classes, Integer(1))
    if weights is not None:
        from attnzoo.weights import create_pretrained

        return create_pretrained(
            name,
            weights,
            attention=attention,
            num_classes=num_classes,
            weights_format=weights_format,
            attention_options=attention_options,
            placement=placement,
            options=options,
        )
    if weights_format is not None:
        raise ValueError("weights_format applies with weights=PATH")
    num_classes = 10 if num_classes is None else num_classes
    model = builder(num_classes=num_classes, **options)
    if attention is None:
        return model
    attention_options = dict(attention_options or {})
    if "placement" in attention_options:  # e.g. --attention-opt placement=block_end
        if placement is not None:
            raise ValueError("placement given twice: as an argument and in attention_options")
        placement = attention_options.pop("placement")
    if attention == "gattanet":
        from attnzoo.gattanet import wrap

        if placement is not None:
            raise ValueError("gattanet takes its layers from attention_options, not placement")
        layers = attention_options.pop("layers", None) or getattr(model, "gattanet_layers", None)
        if not layers:
            raise ValueError(f"model {name!r} declares no gattanet_layers; pass layers=[...]")
        return wrap(model, layers=list(layers), **attention_options)
    from attnzoo.attach import InputSizeRequired, attach

    try:
        return attach(model, attention, placement=placement, **attention_options)
    except InputSizeRequired:
        raise ValueError(
            f"{attention!r} is bound to one feature size: pass "
            'attention_options={"input_size": (H, W)} (the model\'s input size) so that the '
            "size at each insertion point can be computed"
        ) from None
