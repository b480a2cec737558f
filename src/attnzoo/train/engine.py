"""The training engine: one loop for classification and segmentation, one or many processes.

Run ``train(config, out_dir)``. Under ``torchrun`` (``WORLD_SIZE > 1`` in the environment) it
joins the process group (nccl on GPU, gloo on CPU), wraps the model in
DistributedDataParallel and gives each rank its share of every global batch; rank 0 alone logs
and writes the run folder.

Exact resume: the learning rate is a function of the global step, the data order and the
augmentation a function of (seed, epoch, step) (see :mod:`attnzoo.data.loader`), and the
checkpoint holds weights, optimizer, grad scaler, RNG states, the epoch, the step inside it and
the epoch's running sums. In deterministic mode on the CPU a run killed and resumed ends with
the same weights, bit for bit, as one that was never interrupted.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from attnzoo.data import (
    IGNORE_INDEX,
    DeviceLoader,
    Resize,
    TensorData,
    load_dataset,
    standard_augmentation,
)
from attnzoo.train.checkpoint import load_checkpoint, save_checkpoint, unwrap, write_json_atomic
from attnzoo.train.config import RESUME_OVERRIDABLE, TrainConfig
from attnzoo.train.progress import Progress


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_kind: str) -> Dist:
    """Join the torchrun process group if this process was started by torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


# ----------------------------------------------------------------------------- data and model


def _resize_data(data: TensorData, size: int) -> TensorData:
    """Resize a whole split once (uint8 in, uint8 out), image, map and mask jointly."""
    if data.image_size == (size, size):
        return data
    resize = Resize(size)
    parts: dict[str, list[torch.Tensor]] = {"image": [], "map": [], "mask": []}
    for start in range(0, len(data), 1024):
        chunk = {"image": data.images[start : start + 1024]}
        if data.maps is not None:
            chunk["map"] = data.maps[start : start + 1024]
        if data.masks is not None:
            chunk["mask"] = data.masks[start : start + 1024]
        for key, value in resize(chunk).items():
            parts[key].append(value)
    data.images = torch.cat(parts["image"])
    data.maps = torch.cat(parts["map"]) if parts["map"] else None
    data.masks = torch.cat(parts["mask"]) if parts["mask"] else None
    return data


def load_split(config: TrainConfig, split: str) -> TensorData:
    options = dict(config.data_options)
    if config.data == "synthetic":
        options.setdefault("seed", config.seed)
        if config.image_size is not None:
            options.setdefault("image_size", config.image_size)
    elif config.data == "folder" and config.image_size is not None:
        options.setdefault("image_size", config.image_size)
    data = load_dataset(config.data, split=split, root=config.data_root, **options)
    limit = config.limit_train if split == "train" else config.limit_val
    if limit is not None:
        data = data.subset(limit)
    if config.image_size is not None:
        data = _resize_data(data, config.image_size)
    return data


def _accepts(builder: Any, name: str) -> bool:
    try:
        parameters = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return False
    # Named parameters only: a **options builder may forward to a class that takes neither.
    return name in parameters


def build_model(config: TrainConfig, data: TensorData) -> nn.Module:
    """The model named by ``config.model``: a registered name, or ``package.module:function``.

    ``in_channels`` and ``image_size`` are passed when the builder takes them; a greyscale
    dataset fed to a builder without ``in_channels`` is repeated to three channels instead
    (:func:`match_channels`).
    """
    num_classes = data.num_mask_classes if config.task == "segment" else data.num_classes
    if num_classes is None:
        raise ValueError(f"dataset {config.data!r} has no segmentation masks; use --task classify")
    options = dict(config.model_options)
    if ":" in config.model:
        module_name, _, function = config.model.partition(":")
        try:
            builder = getattr(importlib.import_module(module_name), function)
        except (ImportError, AttributeError) as error:
            raise ValueError(f"cannot import model builder {config.model!r}: {error}") from None
    else:
        from attnzoo import models

        builder = models.get_builder(config.model)
    for key, value in (("in_channels", data.channels), ("image_size", data.image_size[0])):
        if key not in options and _accepts(builder, key):
            options[key] = value
    if ":" in config.model:
        if config.attention is not None or config.weights is not None:
            raise ValueError(
                "--attention and --weights apply to registered models; build them into your own"
            )
        return builder(num_classes=num_classes, **options)
    from attnzoo import models

    return models.create(
        config.model,
        attention=config.attention,
        num_classes=num_classes,
        attention_options=config.attention_options,
        weights=config.weights,
        weights_format=config.weights_format,
        **options,
    )


def match_channels(data: TensorData, model: nn.Module, config: TrainConfig) -> TensorData:
    """Repeat a greyscale split to RGB (a view, no copy) for models built for 3 channels."""
    wants = config.model_options.get("in_channels")
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if wants is None and first_conv is not None:
        wants = first_conv.in_channels
    if data.channels == 1 and wants == 3:
        data.images = data.images.expand(-1, 3, -1, -1)
        data.mean, data.std = data.mean * 3, data.std * 3
    return data


# ----------------------------------------------------------------------------- optimisation


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
        )
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def learning_rate(config: TrainConfig, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """The learning rate of global step ``step`` (0-based): linear warm-up then the schedule."""
    warmup = round(config.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "cosine":
        span = max(1, total_steps - warmup)
        return 0.5 * config.lr * (1 + math.cos(math.pi * min(1.0, (step - warmup) / span)))
    milestones = config.milestones or [int(config.epochs * 0.5), int(config.epochs * 0.75)]
    epoch = step // steps_per_epoch
    return config.lr * config.gamma ** sum(epoch >= m for m in milestones)


def _logits(output: Any) -> torch.Tensor:
    """Models may return logits, or a tuple/dict whose first/"logits"/"out" entry is them."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        for key in ("logits", "out"):
            if key in output:
                return output[key]
    if isinstance(output, (tuple, list)) and output:
        return _logits(output[0])
    raise ValueError(f"cannot find logits in the model's output of type {type(output).__name__}")


def task_loss(
    config: TrainConfig, logits: torch.Tensor, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(mean loss, number correct, number counted) for the batch."""
    logits = logits.float()
    if config.task == "segment":
        mask = batch["mask"]
        if logits.shape[-2:] != mask.shape[-2:]:
            logits = F.interpolate(logits, size=mask.shape[-2:], mode="bilinear")
        loss = F.cross_entropy(
            logits, mask, ignore_index=IGNORE_INDEX, label_smoothing=config.label_smoothing
        )
        valid = mask != IGNORE_INDEX
        correct = ((logits.argmax(1) == mask) & valid).sum()
        return loss, correct, int(valid.sum())
    if logits.dim() != 2:
        raise ValueError(
            f"a classifier must return (B, classes) logits, got {tuple(logits.shape)}; "
            "use --task segment for dense outputs"
        )
    labels = batch["label"]
    loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
    return loss, (logits.argmax(1) == labels).sum(), labels.shape[0]


def _autocast(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if config.amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if config.amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _all_reduce(values: list[float], world: Dist, device: torch.device) -> list[float]:
    if not world.enabled:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


# ----------------------------------------------------------------------------- evaluation


def evaluate(
    model: nn.Module,
    loader: DeviceLoader,
    config: TrainConfig,
    world: Dist = Dist(),
    with_maps: bool = False,
) -> dict[str, float]:
    """Loss and accuracy over the split (all ranks' shares), mIoU when segmenting, and map
    alignment (mean per-image Spearman ρ) when ``with_maps`` and the data has maps."""
    from attnzoo import metrics
    from attnzoo.layers import record_maps

    device = loader.device
    was_training = model.training
    model.eval()
    sums = {"loss": 0.0, "correct": 0.0, "count": 0.0, "rho": 0.0, "rho_count": 0.0}
    num_classes = loader.data.num_mask_classes or 0
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64, device=device)
    if with_maps:
        record_maps(model, True)
    try:
        with torch.no_grad():
            for batch in loader:
                with _autocast(config, device):
                    logits = _logits(model(batch["image"]))
                loss, correct, count = task_loss(config, logits, batch)
                sums["loss"] += float(loss) * count
                sums["correct"] += float(correct)
                sums["count"] += count
                if config.task == "segment":
                    pred = F.interpolate(logits.float(), size=batch["mask"].shape[-2:]).argmax(1)
                    valid = batch["mask"] != IGNORE_INDEX
                    index = batch["mask"][valid] * num_classes + pred[valid]
                    confusion += torch.bincount(index, minlength=num_classes**2).view(
                        num_classes, num_classes
                    )
                if with_maps and "map" in batch:
                    alignment = metrics.map_alignment(model, batch["map"], batch["has_map"])
                    if alignment.count:
                        sums["rho"] += alignment.rho * alignment.count
                        sums["rho_count"] += alignment.count
    finally:
        if with_maps:
            record_maps(model, False)
        model.train(was_training)
    keys = list(sums)
    totals = dict(zip(keys, _all_reduce([sums[k] for k in keys], world, device), strict=True))
    if world.enabled and config.task == "segment":
        dist.all_reduce(confusion)
    result = {
        "loss": totals["loss"] / max(1.0, totals["count"]),
        "accuracy": totals["correct"] / max(1.0, totals["count"]),
    }
    if config.task == "segment":
        intersection = confusion.diagonal()
        union = confusion.sum(0) + confusion.sum(1) - intersection
        present = union > 0
        result["miou"] = float((intersection[present] / union[present]).mean())
    if with_maps and totals["rho_count"]:
        result["map_rho"] = totals["rho"] / totals["rho_count"]
        result["map_fraction"] = result["map_rho"] / metrics.CLICKME_CEILING
    return result


def has_spatial_maps(model: nn.Module) -> bool:
    from attnzoo.supervision import spatial_map_modules

    return bool(spatial_map_modules(model))


# ----------------------------------------------------------------------------- the run


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    py_version, py_state, py_gauss = random.getstate()
    state["python"] = torch.tensor(py_state, dtype=torch.int64)
    state["python_version"] = py_version
    state["python_gauss"] = py_gauss
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)
    random.setstate(
        (state["python_version"], tuple(state["python"].tolist()), state["python_gauss"])
    )


def resolve_resume(config: TrainConfig, out_dir: Path, explicit: set[str]) -> TrainConfig:
    """The saved config of ``out_dir``, with only the settings a resume may change taken from
    ``config`` (those the user gave explicitly). Other differences are an error."""
    saved_file = out_dir / "config.json"
    if not saved_file.is_file():
        raise FileNotFoundError(f"--resume: {saved_file} not found; is {out_dir} a run folder?")
    saved = TrainConfig.from_dict(json.loads(saved_file.read_text()))
    current = config.to_dict()
    changed = {k for k in explicit if current.get(k) != getattr(saved, k)}
    refused = sorted(changed - set(RESUME_OVERRIDABLE))
    if refused:
        raise ValueError(
            f"--resume continues the run saved in {saved_file}; these settings differ from it: "
            f"{', '.join(refused)} (only {', '.join(RESUME_OVERRIDABLE)} may change)"
        )
    for key in changed:
        setattr(saved, key, current[key])
    return saved


def train(
    config: TrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    explicit: frozenset[str] | set[str] = frozenset(),
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train as configured, writing the run folder ``out_dir``; returns the final metrics.
    ``on_record`` (rank 0) gets each epoch's metrics.jsonl record, e.g. for TensorBoard."""
    out = Path(out_dir)
    if resume:
        config = resolve_resume(config, out, set(explicit))
    config.validate()
    device_kind = pick_device(config.device).type
    world = setup_distributed(device_kind)
    device = pick_device(config.device, world.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    seed_everything(config.seed, config.deterministic)

    train_data = load_split(config, "train")
    val_data = load_split(config, "test")
    # Evaluation normalises with the training statistics, as any later `attnzoo eval` will.
    val_data.mean, val_data.std = train_data.mean, train_data.std
    model = build_model(config, train_data)
    train_data = match_channels(train_data, model, config)
    val_data = match_channels(val_data, model, config)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    supervise = config.map_weight > 0
    if supervise and train_data.maps is None:
        raise ValueError(f"--map-weight needs importance maps; dataset {config.data!r} has none")
    if supervise and not has_spatial_maps(model):
        raise ValueError(
            "--map-weight needs a model with an attention module that exposes a spatial map "
            "(e.g. --attention gala)"
        )
    with_maps = val_data.maps is not None and has_spatial_maps(model)

    transform = standard_augmentation(train_data.image_size) if config.augment else None
    train_loader = DeviceLoader(
        train_data,
        config.batch_size,
        device,
        shuffle=True,
        drop_last=True,
        transform=transform,
        seed=config.seed,
        rank=world.rank,
        world_size=world.world_size,
        channels_last=config.channels_last,
    )
    val_loader = DeviceLoader(
        val_data,
        config.eval_batch_size,
        device,
        rank=world.rank,
        world_size=world.world_size,
        channels_last=config.channels_last,
    )
    steps_per_epoch = len(train_loader)
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)

    optimizer = make_optimizer(config, model)
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
    start_epoch, start_step, global_step = 0, 0, 0
    running = {"loss": 0.0, "correct": 0.0, "count": 0.0, "time": 0.0}
    if resume:
        weights, meta, state = load_checkpoint(out, map_location="cpu")
        if state is None:
            raise ValueError(f"{out}: the checkpoint has no training state (state.pt) to resume")
        unwrap(model).load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"], device)
        start_epoch, start_step = meta["epoch"], meta["step_in_epoch"]
        global_step = meta["step"]
        running = dict(meta["running"])

    module: Any = model
    if world.enabled:
        module = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.compile:
        module = torch.compile(module)

    if not resume and (out / "checkpoints").exists():
        raise ValueError(
            f"{out} already holds a run (checkpoints/); pass --resume to continue it or choose "
            "another --out"
        )
    if world.main:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "config.json", config.to_dict())
        _trim_metrics(out / "metrics.jsonl", start_epoch)
    checkpoints = out / "checkpoints"

    def save(epoch: int, step_in_epoch: int) -> None:
        if not world.main:
            return
        meta = {
            "config": config.to_dict(),
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "running": running,
            "num_classes": train_data.num_classes,
            "num_mask_classes": train_data.num_mask_classes,
            "classes": train_data.classes,
            "mean": list(train_data.mean),
            "std": list(train_data.std),
            "in_channels": train_data.channels,
            "image_size": list(train_data.image_size),
        }
        state = {
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": _rng_state(device),
        }
        save_checkpoint(checkpoints, global_step, model, meta, state)

    lr = learning_rate(config, max(0, global_step - 1), steps_per_epoch, total_steps)
    progress = Progress(config.progress if world.main else "none", config.log_every)
    final: dict[str, Any] = {}
    module.train()
    with progress:
        for epoch in range(start_epoch, config.epochs):
            if global_step >= total_steps:
                break
            train_loader.set_epoch(epoch)
            steps_this_epoch = min(steps_per_epoch, total_steps - epoch * steps_per_epoch)
            progress.start_epoch(epoch, config.epochs, steps_this_epoch, start_step)
            batches: Iterator[dict[str, torch.Tensor]] = train_loader.iterate(start_step)
            tick = time.perf_counter()
            for step_in_epoch in range(start_step, steps_this_epoch):
                batch = next(batches)
                lr = learning_rate(config, global_step, steps_per_epoch, total_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss, correct, count = _train_step(
                    config, module, model, optimizer, scaler, batch, device, supervise
                )
                running["loss"] += float(loss) * count
                running["correct"] += float(correct)
                running["count"] += count
                global_step += 1
                now = time.perf_counter()
                running["time"] += now - tick
                tick = now
                progress.step(step_in_epoch + 1, float(loss), float(correct) / max(1, count), lr)
                if config.save_every and global_step % config.save_every == 0:
                    save(epoch, step_in_epoch + 1)
            start_step = 0
            totals = _all_reduce(
                [running["loss"], running["correct"], running["count"]], world, device
            )
            val = evaluate(module, val_loader, config, world, with_maps=with_maps)
            record = {
                "epoch": epoch + 1,
                "step": global_step,
                "lr": lr,
                "train_loss": totals[0] / max(1.0, totals[2]),
                "train_accuracy": totals[1] / max(1.0, totals[2]),
                **{f"val_{k}": v for k, v in val.items()},
                # Examples of all ranks per second of this rank's (rank 0's) training time.
                "throughput": totals[2] / max(1e-9, running["time"]),
                "time": running["time"],
            }
            running = {"loss": 0.0, "correct": 0.0, "count": 0.0, "time": 0.0}
            if world.main:
                with open(out / "metrics.jsonl", "a") as handle:
                    handle.write(json.dumps(record) + "\n")
                if on_record is not None:
                    on_record(record)
            progress.end_epoch(record)
            save(epoch + 1, 0)
            final = record
    if world.enabled:
        dist.barrier()
        dist.destroy_process_group()
    # Only rank 0 reports (every rank holds the same, all-reduced numbers).
    return final if world.main else {}


def _train_step(
    config: TrainConfig,
    module: nn.Module,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    batch: dict[str, torch.Tensor],
    device: torch.device,
    supervise: bool,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    from attnzoo.layers import record_maps

    if supervise:
        record_maps(model, True)
    try:
        with _autocast(config, device):
            logits = _logits(module(batch["image"]))
        loss, correct, count = task_loss(config, logits, batch)
        total = loss
        if supervise:
            from attnzoo.supervision import importance_map_loss

            total = loss + importance_map_loss(
                model,
                batch["map"],
                batch["has_map"],
                weight=config.map_weight,
                **config.map_options,
            )
    finally:
        if supervise:
            record_maps(model, False)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(total).backward()
    if config.clip_grad is not None:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), correct, count


def _trim_metrics(path: Path, completed_epochs: int) -> None:
    """Drop lines of epochs after the checkpoint a resumed run restarts from."""
    if not path.is_file():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line)["epoch"] <= completed_epochs
    ]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)
