"""Leaderboard entries and the settings every run shares.

Entries: ``baseline``, any 4-D gate module of the registry, ``NAME+maps`` (the module trained
with the importance-map loss, :mod:`attnzoo.supervision`; NAME must record a spatial map) and
``gattanet`` (the network-wide wrapper). By default (``--attentions all``) every gate module
that can be built and run on the backbone, ``gala+maps`` and ``gattanet``; modules that cannot
are listed with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from attnzoo.registry import did_you_mean
from attnzoo.train.config import TrainConfig

__all__ = [
    "MAPS_SUFFIX",
    "SYNTHETIC_DEFAULTS",
    "SYNTHETIC_IMAGE_SIZE",
    "BenchSettings",
    "Entry",
    "parse_seeds",
    "resolve_entries",
]

# The default recipe on the embedded data: sized so that the whole default leaderboard
# (about 25 entries x 2 seeds) trains in minutes on a 2-core CPU, and the baseline still
# learns well above chance (6 classes: chance 16.7%). See docs/leaderboard.md.
SYNTHETIC_DEFAULTS: dict[str, Any] = {
    "num_images": 1600,
    "num_test": 500,
    "num_classes": 6,
    "clutter": 3,
}
SYNTHETIC_IMAGE_SIZE = 16
MAPS_SUFFIX = "+maps"


@dataclass(frozen=True)
class Entry:
    """One leaderboard row: ``attention`` inserted in the backbone (None = baseline)."""

    name: str
    attention: str | None = None
    map_weight: float = 0.0
    attention_options: tuple[tuple[str, Any], ...] = ()


@dataclass
class BenchSettings:
    """What every run shares; :meth:`config` makes the run's :class:`TrainConfig`."""

    model: str = "resnet20"
    data: str = "synthetic"
    data_root: str | None = None
    data_options: dict[str, Any] = field(default_factory=dict)
    image_size: int | None = None
    epochs: int = 1
    batch_size: int = 32
    lr: float = 3e-3
    optimizer: str = "adamw"
    weight_decay: float = 5e-4
    augment: bool = False
    map_weight: float = 1.0
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    device: str = "auto"
    max_steps: int | None = None
    save_every: int = 0

    def config(self, entry: Entry, seed: int) -> TrainConfig:
        return TrainConfig(
            model=self.model,
            data=self.data,
            attention=entry.attention,
            attention_options=dict(entry.attention_options),
            data_root=self.data_root,
            data_options=dict(self.data_options),
            epochs=self.epochs,
            batch_size=self.batch_size,
            eval_batch_size=500,
            lr=self.lr,
            optimizer=self.optimizer,
            weight_decay=self.weight_decay,
            augment=self.augment,
            image_size=self.image_size,
            map_weight=entry.map_weight,
            seed=seed,
            deterministic=True,
            device=self.device,
            max_steps=self.max_steps,
            save_every=self.save_every,
            progress="none",
        )


def parse_seeds(text: str) -> list[int]:
    """``"3"`` = seeds 0, 1, 2; ``"0,5,7"`` (or ``"7,"``) = those seeds."""
    text = text.strip()
    try:
        if "," in text:
            seeds = [int(part) for part in text.split(",") if part.strip()]
        else:
            count = int(text)
            if count < 1:
                raise ValueError
            seeds = list(range(count))
    except ValueError:
        raise ValueError(
            f"--seeds: expected a count >= 1 (e.g. 3) or a comma list of seeds (e.g. 0,5,7), "
            f"got {text!r}"
        ) from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds: expected distinct seeds, got {text!r}")
    return seeds


def _probe_data(settings: BenchSettings) -> Any:
    """The (small) test split, to build models with the data's classes, channels and size."""
    from attnzoo.train.engine import load_split

    return load_split(settings.config(Entry("baseline"), settings.seeds[0]), "test")


def _check_buildable(entry: Entry, settings: BenchSettings, data: Any) -> None:
    """Build the model of ``entry`` and run one training forward pass at the data's size."""
    from attnzoo.train.engine import build_model, has_spatial_maps

    config = settings.config(entry, settings.seeds[0])
    model = build_model(config, data)
    if entry.map_weight > 0:
        if data.maps is None:
            raise ValueError(f"dataset {settings.data!r} has no importance maps to supervise with")
        if not has_spatial_maps(model):
            raise ValueError(f"{entry.attention!r} records no spatial map to supervise")
    height, width = data.image_size
    model.train()
    # Training runs in deterministic mode: an op without a deterministic kernel fails here.
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        output = model(torch.randn(2, data.channels, height, width))
        logits = output if isinstance(output, torch.Tensor) else output[0]
        logits.float().sum().backward()
    finally:
        torch.use_deterministic_algorithms(was_deterministic)


def _entry_for(name: str, settings: BenchSettings, image_size: tuple[int, int]) -> Entry:
    """The entry named ``name``; ValueError for unknown or inapplicable names."""
    from attnzoo.registry import list_modules, module_info

    if name == "baseline":
        return Entry("baseline")
    if name == "gattanet":
        return Entry("gattanet", "gattanet")
    module, supervised = name, False
    if name.endswith(MAPS_SUFFIX):
        module, supervised = name[: -len(MAPS_SUFFIX)], True
    gates = list_modules(kind="gate")
    if module not in gates:
        known = ["baseline", "gattanet"] + gates + [f"{g}{MAPS_SUFFIX}" for g in gates]
        hint = did_you_mean(name, known)
        raise ValueError(
            f"unknown leaderboard entry {name!r}.{hint} Expected baseline, gattanet, a gate "
            f"module ({', '.join(gates)}) or NAME{MAPS_SUFFIX} for map supervision"
        )
    info = module_info(module)
    rank = info.example_inputs(batch=1, height=4, width=4)[0].dim()
    if rank != 4:
        raise ValueError(f"{module!r} is a video form (rank-{rank} input), not for a 2-D CNN")
    if supervised and "spatial" not in info.maps:
        raise ValueError(
            f"{name!r}: {module!r} records no spatial map, so it cannot be map-supervised"
        )
    options: tuple[tuple[str, Any], ...] = ()
    if info.size_bound:
        options = (("input_size", list(image_size)),)  # attach computes each site's size
    return Entry(name, module, settings.map_weight if supervised else 0.0, options)


def resolve_entries(
    names: str, settings: BenchSettings, log: Callable[[str], None] = print
) -> tuple[list[Entry], list[dict[str, str]]]:
    """(entries, skipped) for ``--attentions``: ``all`` or a comma list. The baseline comes
    first. With ``all``, a module that cannot be built or run on the backbone is skipped with
    its reason; a name given explicitly must work (ValueError otherwise)."""
    from attnzoo.registry import list_modules

    explicit = names.strip() != "all"
    if explicit:
        requested = [n.strip() for n in names.split(",") if n.strip()]
        if not requested:
            raise ValueError("--attentions: expected 'all' or a comma list of names")
    else:
        requested = list(list_modules(kind="gate"))
        if "gala" in requested:
            requested.insert(requested.index("gala") + 1, f"gala{MAPS_SUFFIX}")
        requested.append("gattanet")
    data = _probe_data(settings)
    # Unknown names fail here, before any model is built or trained.
    parsed: list[tuple[str, Entry | None, str]] = []
    for name in requested:
        try:
            parsed.append((name, _entry_for(name, settings, data.image_size), ""))
        except ValueError as error:
            if explicit:
                raise
            parsed.append((name, None, str(error)))
    entries = [Entry("baseline")]
    skipped: list[dict[str, str]] = []
    for name, entry, reason in parsed:
        if entry is not None and entry.name == "baseline":
            continue
        if entry is not None:
            try:
                _check_buildable(entry, settings, data)
            except (ValueError, RuntimeError, TypeError) as error:
                if explicit:
                    raise ValueError(f"cannot use {name!r} on {settings.model}: {error}") from error
                reason = f"cannot be built or run on {settings.model}: {error}"
                entry = None
        if entry is None:
            skipped.append({"name": name, "reason": reason})
            log(f"skipped {name}: {reason}")
        elif entry not in entries:
            entries.append(entry)
    return entries, skipped
