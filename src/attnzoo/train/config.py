"""The resolved training configuration (what ``config.json`` of a run holds)."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from attnzoo.errors import UsageError

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")
AMP_DTYPES = ("none", "bf16", "fp16")
TASKS = ("classify", "segment")

# Settings a resumed run may change without breaking exactness of what was already done.
RESUME_OVERRIDABLE = ("epochs", "max_steps", "save_every", "val_every", "log_every", "progress")


@dataclass
class TrainConfig:
    model: str = ""
    data: str = "synthetic"
    attention: str | None = None
    attention_options: dict[str, Any] = field(default_factory=dict)
    model_options: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None  # released checkpoint to start from (attnzoo.weights)
    weights_format: str | None = None
    data_root: str | None = None
    data_options: dict[str, Any] = field(default_factory=dict)
    task: str = "classify"
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 512
    lr: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    clip_grad: float | None = None
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    augment: bool = True
    image_size: int | None = None
    map_weight: float = 0.0
    map_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    max_steps: int | None = None
    limit_train: int | None = None
    limit_val: int | None = None
    save_every: int = 0
    val_every: int = 1  # epochs between validations (and after the last); 0 = never
    log_every: int = 50
    progress: str = "auto"

    def validate(self) -> None:
        """A usage error naming the flag of the first unacceptable setting."""
        if not self.model:
            raise UsageError("--model is required (a registered model name or 'module:function')")
        for name, value, allowed in (
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("schedule", self.schedule, SCHEDULES),
            ("amp", self.amp, AMP_DTYPES),
            ("task", self.task, TASKS),
            ("progress", self.progress, ("auto", "bar", "plain", "none")),
        ):
            if value not in allowed:
                raise UsageError(f"--{name} must be one of {', '.join(allowed)}, got {value!r}")
        for name, ok, what in _rules(self):
            if not ok:
                value = getattr(self, name)
                raise UsageError(f"--{name.replace('_', '-')} must be {what}, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise UsageError(f"unknown config key(s): {', '.join(sorted(unknown))}")
        hints = typing.get_type_hints(cls)
        for key, value in values.items():
            if not _matches(value, hints[key]):
                raise UsageError(
                    f"config {key!r} must be of type {_type_name(hints[key])}, got {value!r}"
                )
        return cls(**values)


def _finite(value: float, low: float, strict: bool = False) -> bool:
    return math.isfinite(value) and (value > low if strict else value >= low)


def _rules(c: TrainConfig) -> list[tuple[str, bool, str]]:
    """(setting, acceptable?, what is allowed) for every numeric setting."""
    optional = (("max_steps", 1), ("limit_train", 1), ("limit_val", 1), ("image_size", 1))
    return [
        ("epochs", c.epochs >= 1, "an integer >= 1"),
        ("batch_size", c.batch_size >= 1, "an integer >= 1"),
        ("eval_batch_size", c.eval_batch_size >= 1, "an integer >= 1"),
        ("lr", _finite(c.lr, 0, strict=True), "a finite number > 0"),
        ("momentum", _finite(c.momentum, 0), "a finite number >= 0"),
        ("weight_decay", _finite(c.weight_decay, 0), "a finite number >= 0"),
        ("gamma", _finite(c.gamma, 0, strict=True), "a finite number > 0"),
        ("warmup_epochs", _finite(c.warmup_epochs, 0), "a finite number >= 0 (0 = no warm-up)"),
        ("label_smoothing", _finite(c.label_smoothing, 0) and c.label_smoothing < 1, "in [0, 1)"),
        (
            "clip_grad",
            c.clip_grad is None or _finite(c.clip_grad, 0, strict=True),
            "a finite maximum gradient norm > 0 (leave it out for no clipping)",
        ),
        ("map_weight", _finite(c.map_weight, 0), "a finite number >= 0 (0 = off)"),
        ("milestones", all(m >= 0 for m in c.milestones), "epochs >= 0"),
        ("save_every", c.save_every >= 0, "an integer >= 0 (0 = only at the end of epochs)"),
        (
            "val_every",
            c.val_every >= 0,
            "an integer >= 0 (epochs between validations; 0 = no validation during training)",
        ),
        ("log_every", c.log_every >= 1, "an integer >= 1"),
        *[
            (n, getattr(c, n) is None or getattr(c, n) >= low, f"an integer >= {low}")
            for n, low in optional
        ],
    ]


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
