"""From a checkpoint file to an attnzoo model holding its weights.

:func:`read_plan` reads the file safely, detects (or takes) its layout and converts it;
:func:`build_model` builds the architecture the plan names and loads the weights with every
key accounted for; :func:`create_pretrained` is ``attnzoo.models.create(..., weights=PATH)``:
the same, checked against what the caller asked for, with a new classifier when
``num_classes`` differs from the file's (for fine-tuning).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from attnzoo.weights.layouts import Plan, SourceKeys, detect_layout, get_layout
from attnzoo.weights.load import SAFETENSORS_PLAN_KEY, read_checkpoint

__all__ = ["build_model", "create_pretrained", "load_pretrained", "read_plan"]


def _listed(keys: list[str], limit: int = 8) -> str:
    more = f" (and {len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def read_plan(path: str | Path, weights_format: str | None = None) -> Plan:
    """The :class:`Plan` of a checkpoint file: layout detected unless ``weights_format``."""
    state, metadata = read_checkpoint(path)
    if weights_format in (None, "attnzoo") and SAFETENSORS_PLAN_KEY in metadata:
        return Plan.from_recipe(json.loads(metadata[SAFETENSORS_PLAN_KEY]), state)
    if weights_format == "attnzoo":
        raise ValueError(f"{path}: not an attnzoo safetensors file (no {SAFETENSORS_PLAN_KEY})")
    layout = detect_layout(state, path) if weights_format is None else get_layout(weights_format)
    keys = SourceKeys(state)
    try:
        plan = layout.convert(keys)
    except (ValueError, KeyError, IndexError, RuntimeError) as error:
        raise ValueError(
            f"{path}: not convertible as a {layout.name} checkpoint: {error}"
        ) from None
    problems = []
    if keys.missing:
        problems.append(f"missing keys: {_listed(sorted(set(keys.missing)))}")
    if keys.remaining():
        problems.append(f"unexpected keys: {_listed(keys.remaining())}")
    if problems or plan is None:
        raise ValueError(f"{path}: not a {layout.name} checkpoint: {'; '.join(problems)}")
    return plan


def build_model(plan: Plan, path: str | Path = "checkpoint") -> nn.Module:
    """The plan's architecture with the plan's weights, every key checked (eval mode)."""
    from attnzoo import models

    options = dict(plan.attention_options)
    if "stage_options" in options:
        options["stage_options"] = {int(k): dict(v) for k, v in options["stage_options"].items()}
    model = models.create(
        plan.arch,
        attention=plan.attention,
        num_classes=plan.num_classes,
        attention_options=options,
        placement=plan.placement,
        **plan.model_options,
    )
    expected = model.state_dict()
    missing = sorted(set(expected) - set(plan.state))
    unexpected = sorted(set(plan.state) - set(expected))
    shapes = [
        f"{k} {tuple(plan.state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(plan.state))
        if plan.state[k].shape != expected[k].shape
    ]
    if missing or unexpected or shapes:
        what = f"{plan.arch}" + (f" with {plan.attention}" if plan.attention else "")
        problems = [
            f"{name}: {_listed(keys)}"
            for name, keys in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("shape mismatches (file vs model)", shapes),
            )
            if keys
        ]
        raise ValueError(
            f"{path}: the {plan.layout} weights do not fit attnzoo's {what}: {'; '.join(problems)}"
        )
    model.load_state_dict(plan.state, strict=True)
    return model.eval()


def replace_head(model: nn.Module, num_classes: int) -> None:
    """A new, freshly initialised classifier (``fc``) with ``num_classes`` outputs."""
    head = getattr(model, "fc", None)
    if not isinstance(head, nn.Linear):
        raise ValueError("a new head needs the model's classifier at .fc (nn.Linear)")
    model.fc = nn.Linear(head.in_features, num_classes)


def load_pretrained(
    path: str | Path, weights_format: str | None = None, num_classes: int | None = None
) -> tuple[nn.Module, Plan]:
    """(model built from the file alone, its plan); a new head if ``num_classes`` differs."""
    plan = read_plan(path, weights_format)
    model = build_model(plan, path)
    if num_classes is not None and num_classes != plan.num_classes:
        replace_head(model, num_classes)
    return model, plan


def _merge(given: dict[str, Any], needed: dict[str, Any], what: str, path: Any) -> dict[str, Any]:
    merged = dict(needed)
    for key, value in given.items():
        if key in needed and needed[key] != value:
            raise ValueError(
                f"{path} needs {what} {key}={needed[key]!r}; got {key}={value!r} (leave it out)"
            )
        merged[key] = value
    return merged


def create_pretrained(
    name: str,
    weights: str | Path,
    *,
    attention: str | None,
    num_classes: int | None,
    weights_format: str | None = None,
    attention_options: dict[str, Any] | None = None,
    placement: str | None = None,
    options: dict[str, Any] | None = None,
) -> nn.Module:
    """``attnzoo.models.create(name, attention, num_classes, weights=...)``."""
    plan = read_plan(weights, weights_format)
    held = f"{plan.arch}" + (f" with attention={plan.attention!r}" if plan.attention else "")
    if name != plan.arch or attention != plan.attention:
        asked = f"{name}" + (f" with attention={attention!r}" if attention else "")
        raise ValueError(
            f"{weights} holds a {held} ({plan.layout} layout), but {asked} was asked for"
        )
    if placement is not None and plan.placement not in (None, placement):
        raise ValueError(f"{weights} needs placement {plan.placement!r}, got {placement!r}")
    plan.placement = plan.placement or placement
    plan.model_options = _merge(options or {}, plan.model_options, "model option", weights)
    plan.attention_options = _merge(
        attention_options or {}, plan.attention_options, "attention option", weights
    )
    model = build_model(plan, weights)
    if num_classes is not None and num_classes != plan.num_classes:
        replace_head(model, num_classes)
    return model.train()
