"""The training engine: one loop for classification and segmentation, one or many processes.

Run ``train(config, out_dir)``. Under ``torchrun`` (``WORLD_SIZE > 1`` in the environment) it
joins the process group (nccl on GPU, gloo on CPU), wraps the model in
DistributedDataParallel and gives each rank its share of every global batch; rank 0 alone logs
and writes the run folder, holding its lock (:mod:`attnzoo.train.runfolder`) throughout.

Exact resume: the learning rate is a function of the global step, the data order and the
augmentation a function of (seed, epoch, step) (see :mod:`attnzoo.data.loader`), and the
checkpoint holds weights, optimizer, grad scaler, RNG states, the epoch, the step inside it and
the epoch's running sums. In deterministic mode on the CPU a run killed and resumed ends with
the same weights, bit for bit, as one that was never interrupted.

A loss or weights that become non-finite stop the run with :class:`~attnzoo.errors.DivergedError`
before anything non-finite is checkpointed: the last good checkpoint stays the newest.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from attnzoo.data import DeviceLoader, TensorData, standard_augmentation
from attnzoo.errors import DivergedError, RunFolderError, UsageError, warn
from attnzoo.train import runfolder
from attnzoo.train.checkpoint import (
    latest_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    unwrap,
    write_json_atomic,
)
from attnzoo.train.config import RESUME_OVERRIDABLE, TrainConfig
from attnzoo.train.progress import Progress
from attnzoo.train.setup import (
    Dist,
    build_model,
    load_split,
    match_channels,
    pick_device,
    seed_everything,
    setup_distributed,
)
from attnzoo.train.steps import (
    _all_reduce,
    evaluate,
    has_spatial_maps,
    learning_rate,
    make_optimizer,
    train_step,
)

__all__ = [
    "Dist",
    "build_model",
    "evaluate",
    "has_spatial_maps",
    "learning_rate",
    "load_split",
    "match_channels",
    "pick_device",
    "resolve_resume",
    "train",
]


# ----------------------------------------------------------------------------- the run folder


def resolve_resume(config: TrainConfig, out_dir: Path, explicit: set[str]) -> TrainConfig:
    """The saved config of ``out_dir``, with only the settings a resume may change taken from
    ``config`` (those the user gave explicitly). Other differences are an error."""
    saved_file = out_dir / "config.json"
    if not saved_file.is_file():
        raise RunFolderError(f"--resume: {saved_file} not found; is {out_dir} a run folder?")
    saved = runfolder.config_from_json(runfolder.read_json(saved_file, "configuration"), saved_file)
    current = config.to_dict()
    changed = {k for k in explicit if current.get(k) != getattr(saved, k)}
    refused = sorted(changed - set(RESUME_OVERRIDABLE))
    if refused:
        raise UsageError(
            f"--resume continues the run saved in {saved_file}; these settings differ from it: "
            f"{', '.join(refused)} (only {', '.join(RESUME_OVERRIDABLE)} may change)"
        )
    for key in changed:
        setattr(saved, key, current[key])
    saved.validate()
    return saved


@dataclass
class Start:
    """Where the run starts: from scratch, or from a checkpoint's weights and states."""

    weights: dict[str, torch.Tensor] | None = None
    state: dict[str, Any] | None = None
    epoch: int = 0
    step_in_epoch: int = 0
    step: int = 0
    running: dict[str, float] | None = None
    record: dict[str, Any] | None = None


def _open_resume(
    config: TrainConfig, out: Path, explicit: set[str], trust_code: bool
) -> tuple[TrainConfig, Start]:
    if not (out / "config.json").is_file():
        raise RunFolderError(f"--resume: {out} is not a run folder (it has no config.json)")
    config = resolve_resume(config, out, explicit)
    runfolder.check_trusted(config, out / "config.json", trust_code or "model" in explicit)
    found = latest_checkpoint(out / "checkpoints")
    if found is None:
        warn(f"{out} has no complete checkpoint (killed before its first); starting from step 0")
        return config, Start()
    weights, meta, state, _ = runfolder.load_run(found, trust_code=True, for_resume=True)
    if state is None:
        raise RunFolderError(f"{found}: the checkpoint has no training state (state.pt) to resume")
    return config, Start(
        weights, state, meta["epoch"], meta["step_in_epoch"], meta["step"],
        dict(meta["running"]), meta.get("record"),
    )  # fmt: skip


def train(
    config: TrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    explicit: frozenset[str] | set[str] = frozenset(),
    on_record: Callable[[dict[str, Any]], None] | None = None,
    trust_code: bool = False,
) -> dict[str, Any]:
    """Train as configured, writing the run folder ``out_dir``; returns the final metrics.
    ``on_record`` (rank 0) gets each epoch's metrics.jsonl record, e.g. for TensorBoard.

    ``resume`` continues the run saved in ``out_dir``; its ``config.json`` may name a model
    builder to import (``package.module:function``) only with ``trust_code=True`` or when
    ``explicit`` says the caller gave ``model`` itself.
    """
    out = Path(out_dir)
    is_main = int(os.environ.get("RANK", "0")) == 0
    if not resume:
        config.validate()
        pick_device(config.device)  # usage errors before the folder is touched
        if is_main:
            runfolder.prepare_out(out)
    elif not out.is_dir():
        raise RunFolderError(f"--resume: {out} is not a run folder (no such folder)")
    with runfolder.RunLock(out) if is_main else contextlib.nullcontext():
        if is_main:
            runfolder.remove_temporaries(out)
        if resume:
            config, start = _open_resume(config, out, set(explicit), trust_code)
        else:
            if is_main:
                runfolder.check_fresh(out, config)
            start = Start()
        return _Run(config, out, start, on_record).fit()


# ----------------------------------------------------------------------------- the loop


@dataclass
class _Run:
    config: TrainConfig
    out: Path
    start: Start
    on_record: Callable[[dict[str, Any]], None] | None = None
    running: dict[str, float] = field(default_factory=dict)
    last_record: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        config = self.config
        self.world = setup_distributed(pick_device(config.device).type)
        self.device = pick_device(config.device, self.world.local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        seed_everything(config.seed, config.deterministic)
        self._build()
        self._restore()

    def _build(self) -> None:
        config, device = self.config, self.device
        train_data = load_split(config, "train")
        val_data = load_split(config, "test")
        # Evaluation normalises with the training statistics, as any later `attnzoo eval` will.
        val_data.mean, val_data.std = train_data.mean, train_data.std
        self.model = build_model(config, train_data)
        self.train_data = match_channels(train_data, self.model, config)
        val_data = match_channels(val_data, self.model, config)
        self.model.to(device)
        if config.channels_last:
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.supervise = config.map_weight > 0
        self._check_supervision()
        self.with_maps = val_data.maps is not None and has_spatial_maps(self.model)
        self.train_loader, self.val_loader = self._loaders(self.train_data, val_data)
        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            raise UsageError(
                f"--batch-size {config.batch_size} is larger than the {len(train_data)} training "
                "images: not one full batch per epoch; lower --batch-size"
            )
        self.total_steps = config.epochs * self.steps_per_epoch
        if config.max_steps is not None:
            self.total_steps = min(self.total_steps, config.max_steps)
        self.optimizer = make_optimizer(config, self.model)
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")

    def _check_supervision(self) -> None:
        if self.supervise and self.train_data.maps is None:
            raise UsageError(
                f"--map-weight needs importance maps; dataset {self.config.data!r} has none"
            )
        if self.supervise and not has_spatial_maps(self.model):
            raise UsageError(
                "--map-weight needs a model with an attention module that exposes a spatial map "
                "(e.g. --attention gala)"
            )

    def _loaders(self, train_data: TensorData, val_data: TensorData) -> tuple[Any, Any]:
        config, world = self.config, self.world
        transform = standard_augmentation(train_data.image_size) if config.augment else None
        shared: dict[str, Any] = dict(
            rank=world.rank, world_size=world.world_size, channels_last=config.channels_last
        )
        train_loader = DeviceLoader(
            train_data, config.batch_size, self.device, shuffle=True, drop_last=True,
            transform=transform, seed=config.seed, **shared,
        )  # fmt: skip
        val_loader = DeviceLoader(val_data, config.eval_batch_size, self.device, **shared)
        return train_loader, val_loader

    def _restore(self) -> None:
        start = self.start
        self.epoch, self.step_in_epoch, self.global_step = (
            start.epoch,
            start.step_in_epoch,
            start.step,
        )
        self.running = dict(
            start.running or {"loss": 0.0, "correct": 0.0, "count": 0.0, "time": 0.0}
        )
        self.last_record = dict(start.record or {})
        if start.weights is None or start.state is None:
            return
        checkpoint = self.out / "checkpoints"
        runfolder.load_weights(unwrap(self.model), start.weights, checkpoint)
        try:
            self.optimizer.load_state_dict(start.state["optimizer"])
            self.scaler.load_state_dict(start.state["scaler"])
            set_rng_state(start.state["rng"], self.device)
        except (KeyError, ValueError, TypeError, RuntimeError) as error:
            raise RunFolderError(
                f"{checkpoint}: the training state (state.pt) does not fit this run ({error})"
            ) from None

    def _wrap(self) -> Any:
        module: Any = self.model
        if self.world.enabled:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            module = nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
        if self.config.compile:
            module = torch.compile(module)
        return module

    def fit(self) -> dict[str, Any]:
        config, world = self.config, self.world
        if world.main:
            write_json_atomic(self.out / "config.json", config.to_dict())
            runfolder.metrics_for_resume(
                self.out / "metrics.jsonl", self.epoch, self.last_record or None
            )
        self.module = self._wrap()
        self.lr = learning_rate(
            config, max(0, self.global_step - 1), self.steps_per_epoch, self.total_steps
        )
        self.progress = Progress(config.progress if world.main else "none", config.log_every)
        final: dict[str, Any] = {}
        self.module.train()
        with self.progress:
            for epoch in range(self.epoch, config.epochs):
                if self.global_step >= self.total_steps:
                    break
                self._train_epoch(epoch)
                final = self._end_epoch(epoch)
        if world.enabled:
            dist.barrier()
            dist.destroy_process_group()
        # Only rank 0 reports (every rank holds the same, all-reduced numbers).
        return final if world.main else {}

    def _train_epoch(self, epoch: int) -> None:
        config = self.config
        self.train_loader.set_epoch(epoch)
        steps = min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch)
        self.progress.start_epoch(epoch, config.epochs, steps, self.step_in_epoch)
        batches = self.train_loader.iterate(self.step_in_epoch)
        tick = time.perf_counter()
        for step_in_epoch in range(self.step_in_epoch, steps):
            self.lr = learning_rate(
                config, self.global_step, self.steps_per_epoch, self.total_steps
            )
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr
            loss, correct, count = train_step(
                config, self.module, self.model, self.optimizer, self.scaler, next(batches),
                self.device, self.supervise,
            )  # fmt: skip
            loss_value = float(loss)
            self._check_finite_loss(loss_value, epoch)
            self.running["loss"] += loss_value * count
            self.running["correct"] += float(correct)
            self.running["count"] += count
            self.global_step += 1
            now = time.perf_counter()
            self.running["time"] += now - tick
            tick = now
            self.progress.step(
                step_in_epoch + 1, loss_value, float(correct) / max(1, count), self.lr
            )
            if config.save_every and self.global_step % config.save_every == 0:
                self._save(epoch, step_in_epoch + 1)
        self.step_in_epoch = 0

    def _end_epoch(self, epoch: int) -> dict[str, Any]:
        running, world = self.running, self.world
        totals = _all_reduce(
            [running["loss"], running["correct"], running["count"]], world, self.device
        )
        val = self._validate(epoch)
        record = {
            "epoch": epoch + 1,
            "step": self.global_step,
            "lr": self.lr,
            "train_loss": totals[0] / max(1.0, totals[2]),
            "train_accuracy": totals[1] / max(1.0, totals[2]),
            **{f"val_{k}": v for k, v in val.items()},
            # Examples of all ranks per second of this rank's (rank 0's) training time.
            "throughput": totals[2] / max(1e-9, running["time"]),
            "time": running["time"],
        }
        self.running = {"loss": 0.0, "correct": 0.0, "count": 0.0, "time": 0.0}
        self.progress.end_epoch(record)
        self.last_record = record
        # Checkpoint first, then the metrics line: a kill in between loses no line, since the
        # checkpoint carries the record and a resume restores it.
        self._save(epoch + 1, 0)
        if world.main:
            with open(self.out / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")
            if self.on_record is not None:
                self.on_record(record)
        return record

    def _validate(self, epoch: int) -> dict[str, float]:
        """The epoch's validation metrics, or {} when ``val_every`` skips this epoch (the
        epoch that ends training is always validated unless ``val_every`` is 0)."""
        every = self.config.val_every
        last = self.global_step >= self.total_steps or epoch + 1 >= self.config.epochs
        if every == 0 or ((epoch + 1) % every and not last):
            return {}
        return evaluate(
            self.module, self.val_loader, self.config, self.world, with_maps=self.with_maps
        )

    def _check_finite_loss(self, loss_value: float, epoch: int) -> None:
        bad = 0.0 if math.isfinite(loss_value) else 1.0
        if self.world.enabled:
            bad = _all_reduce([bad], self.world, self.device)[0]
        if bad:
            self._diverged(
                f"the loss at step {self.global_step + 1} (epoch {epoch + 1}) is {loss_value}"
            )

    def _diverged(self, what: str) -> None:
        kept = latest_checkpoint(self.out / "checkpoints")
        where = f"the last good checkpoint {kept} is kept" if kept else "no checkpoint was written"
        raise DivergedError(
            f"training diverged: {what}; {where}; lower --lr, set --clip-grad or use --amp bf16"
        )

    def _save(self, epoch: int, step_in_epoch: int) -> None:
        if not self.world.main:
            return
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            self._diverged(f"the weights after step {self.global_step} are not finite")
        data = self.train_data
        meta = {
            "config": self.config.to_dict(),
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "running": self.running,
            "record": self.last_record or None,
            "num_classes": data.num_classes,
            "num_mask_classes": data.num_mask_classes,
            "classes": data.classes,
            "mean": list(data.mean),
            "std": list(data.std),
            "in_channels": data.channels,
            "image_size": list(data.image_size),
        }
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(self.device),
        }
        save_checkpoint(self.out / "checkpoints", self.global_step, self.model, meta, state)
