"""What a run is built from: the device, the process group, the data splits and the model.

Every value the user gave is checked here before anything is computed: an unknown device,
``cuda`` on a machine without one, a typo in an ``--*-opt`` key, an empty split: each is an
error naming the value and what to do.
"""

from __future__ import annotations

import difflib
import inspect
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from attnzoo.data import Resize, TensorData, load_dataset
from attnzoo.errors import DataError, UsageError
from attnzoo.train.config import TrainConfig

DEVICE_HELP = "use --device auto, cpu, cuda or cuda:N"


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
    """The torch device of ``--device`` (``auto``: CUDA when available); a usage error for an
    unknown name or a device this machine does not have."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UsageError(f"--device {name!r} is not a device; {DEVICE_HELP}") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {name!r}: attnzoo runs on cpu or cuda; {DEVICE_HELP}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                f"--device {name}: no CUDA device is available to torch on this machine; "
                "use --device cpu (or auto)"
            )
        count = torch.cuda.device_count()
        if device.index is None:
            device = torch.device("cuda", local_rank)
        if device.index is not None and device.index >= count:
            raise UsageError(
                f"--device {name}: this machine has {count} CUDA device(s), cuda:0..{count - 1}"
            )
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


# ----------------------------------------------------------------------------- options


def check_options(function: Callable[..., Any], options: dict[str, Any], flag: str) -> None:
    """A usage error naming ``flag``'s unknown keys, unless ``function`` takes ``**options``."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    known = [n for n, p in parameters.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    for key in options:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UsageError(f"{flag} {key}: unknown option; {hint}known: {', '.join(known)}")


def call_with_options(
    function: Callable[..., Any], flag: str, given: dict[str, Any], /, **arguments: Any
) -> Any:
    """``function(**arguments)``, with a wrong option in ``given`` (the user's ``flag``
    options: a typo in a key, a value of the wrong type) reported as a usage error naming
    them, instead of a traceback from inside the builder."""
    try:
        return function(**arguments)
    except TypeError as error:
        shown = " ".join(f"{k}={v!r}" for k, v in given.items()) or "(none)"
        raise UsageError(
            f"{flag} {shown}: {error}; check these options' names and values"
        ) from None


# ----------------------------------------------------------------------------- data


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
    """One split of the configured dataset; an empty split is an error, not a 0.0 accuracy."""
    from attnzoo.data.synthetic import generate_synthetic

    options = dict(config.data_options)
    if config.data == "synthetic":
        generator_options = {k: v for k, v in options.items() if k != "num_test"}
        check_options(generate_synthetic, generator_options, "--data-opt")
        options.setdefault("seed", config.seed)
        if config.image_size is not None:
            options.setdefault("image_size", config.image_size)
    elif config.data == "folder" and config.image_size is not None:
        options.setdefault("image_size", config.image_size)
    data = call_with_options(
        load_dataset, "--data-opt", config.data_options,
        name=config.data, split=split, root=config.data_root, **options,
    )  # fmt: skip
    limit = config.limit_train if split == "train" else config.limit_val
    if split == "train" and limit is not None and limit > len(data):
        # Asking for more training images than there are would silently train on fewer.
        raise DataError(
            f"--limit-train {limit}: the train split of dataset {config.data!r} has only "
            f"{len(data)} images"
        )
    if limit is not None:
        data = data.subset(limit)
    if len(data) == 0:
        raise DataError(
            f"the {split} split of dataset {config.data!r} has 0 images; "
            f"{'training' if split == 'train' else 'validation'} needs at least one"
        )
    if config.image_size is not None:
        data = _resize_data(data, config.image_size)
    return data


# ----------------------------------------------------------------------------- model


def _accepts(builder: Any, name: str) -> bool:
    try:
        parameters = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return False
    # Named parameters only: a **options builder may forward to a class that takes neither.
    return name in parameters


def _import_builder(spec: str) -> Callable[..., nn.Module]:
    import importlib

    module_name, _, function = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), function)  # type: ignore[no-any-return]
    except (ImportError, AttributeError) as error:
        raise UsageError(f"--model {spec}: cannot import the model builder ({error})") from None


def build_model(config: TrainConfig, data: TensorData) -> nn.Module:
    """The model named by ``config.model``: a registered name, or ``package.module:function``.

    ``in_channels`` and ``image_size`` are passed when the builder takes them; a greyscale
    dataset fed to a builder without ``in_channels`` is repeated to three channels instead
    (:func:`match_channels`). A config read from a run folder must pass
    :func:`attnzoo.train.runfolder.check_trusted` first: this imports what it names.
    """
    num_classes = data.num_mask_classes if config.task == "segment" else data.num_classes
    if num_classes is None:
        raise UsageError(f"dataset {config.data!r} has no segmentation masks; use --task classify")
    options = dict(config.model_options)
    if ":" in config.model:
        builder = _import_builder(config.model)
    else:
        from attnzoo import models

        builder = models.get_builder(config.model)
    check_options(builder, options, "--model-opt")
    for key, value in (("in_channels", data.channels), ("image_size", data.image_size[0])):
        if key not in options and _accepts(builder, key):
            options[key] = value
    if ":" in config.model:
        if config.attention is not None or config.weights is not None:
            raise UsageError(
                "--attention and --weights apply to registered models; build them into your own"
            )
        return call_with_options(
            builder, "--model-opt", config.model_options, num_classes=num_classes, **options
        )  # type: ignore[no-any-return]
    from attnzoo import models

    return call_with_options(  # type: ignore[no-any-return]
        models.create,
        "--model-opt/--attention-opt",
        {**config.model_options, **config.attention_options},
        name=config.model,
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
