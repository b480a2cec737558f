"""The resolved training configuration (what ``config.json`` of a run holds)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")
AMP_DTYPES = ("none", "bf16", "fp16")
TASKS = ("classify", "segment")

# Settings a resumed run may change without breaking exactness of what was already done.
RESUME_OVERRIDABLE = ("epochs", "max_steps", "save_every", "log_every", "progress")


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
    log_every: int = 50
    progress: str = "auto"

    def validate(self) -> None:
        if not self.model:
            raise ValueError("--model is required (a registered model name or 'module:function')")
        for name, value, allowed in (
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("schedule", self.schedule, SCHEDULES),
            ("amp", self.amp, AMP_DTYPES),
            ("task", self.task, TASKS),
            ("progress", self.progress, ("auto", "bar", "plain", "none")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr}
        bad = {k: v for k, v in positive.items() if not v > 0}
        if bad:
            raise ValueError(f"expected positive values, got {bad}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.map_weight < 0:
            raise ValueError(f"map_weight must be >= 0, got {self.map_weight}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown config key(s): {', '.join(sorted(unknown))}")
        return cls(**values)
