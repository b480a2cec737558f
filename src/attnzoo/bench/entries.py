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
    "DEFAULT_ATTENTIONS",
    "DEFAULT_EPOCHS",
    "DEFAULT_MODEL",
    "DEFAULT_SEEDS",
    "MAPS_SUFFIX",
    "SYNTHETIC_DEFAULTS",
    "SYNTHETIC_IMAGE_SIZE",
    "BenchSettings",
    "Entry",
    "parse_seeds",
    "parse_variant",
    "resolve_entries",
    "split_names",
]

# The default board on the embedded data (docs/leaderboard.md, "The default run"): a regime
# where where the network looks matters at convergence (6 target classes among 6 fragments of
# other classes' targets, 1,000 training images, random positions), with the dataset FIXED
# across seeds (data seed 0: a seed varies the initialisation and the data order only) and a
# large test split, so that paired differences over 5 seeds resolve a couple of points.
SYNTHETIC_DEFAULTS: dict[str, Any] = {
    "num_images": 1000,
    "num_test": 5000,
    "num_classes": 6,
    "clutter": 6,
    "seed": 0,
}
DEFAULT_ATTENTIONS = "se,eca,cbam,gc,scse,gala,gala+maps,cbam+maps,gattanet"
DEFAULT_EPOCHS = 8
DEFAULT_SEEDS = 10
DEFAULT_MODEL = "resnet8"
# Runs do not validate during training (val_every=0): the board's numbers come from one final
# evaluation of each run on the whole test split (:mod:`.alignment`), in batches of this size
# (on one CPU thread, batches of 100 evaluate faster than 500, with the same logits).
EVAL_BATCH_SIZE = 100
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

    model: str = DEFAULT_MODEL
    data: str = "synthetic"
    data_root: str | None = None
    data_options: dict[str, Any] = field(default_factory=dict)
    image_size: int | None = None
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = 32
    lr: float = 3e-3
    optimizer: str = "adamw"
    weight_decay: float = 5e-4
    augment: bool = False
    map_weight: float = 1.0
    seeds: list[int] = field(default_factory=lambda: list(range(DEFAULT_SEEDS)))
    device: str = "auto"
    max_steps: int | None = None
    save_every: int = 0
    limit_train: int | None = None  # other data than synthetic: its first N training images

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
            eval_batch_size=EVAL_BATCH_SIZE,
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
            limit_train=self.limit_train,
            val_every=0,
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
    import dataclasses

    from attnzoo.train.engine import build_model, has_spatial_maps, match_channels

    config = settings.config(entry, settings.seeds[0])
    model = build_model(config, data)
    # As in training: greyscale data is repeated to RGB for a model built for 3 channels.
    data = match_channels(dataclasses.replace(data), model, config)
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


def split_names(text: str) -> list[str]:
    """``--attentions`` split on the commas outside brackets and quotes:
    ``'se,gala[stages=[2,3],squash="sigmoid"]'`` -> ``['se', 'gala[stages=[2,3],squash="sigmoid"]']``."""
    names: list[str] = []
    depth, quote, start = 0, "", 0
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
            if depth < 0:
                raise ValueError(f"--attentions: unbalanced {char!r} in {text!r}")
        elif char == "," and depth == 0:
            names.append(text[start:i].strip())
            start = i + 1
    if depth or quote:
        raise ValueError(f"--attentions: unclosed bracket or quote in {text!r}")
    names.append(text[start:].strip())
    return [name for name in names if name]


def parse_variant(name: str) -> tuple[str, dict[str, Any]]:
    """``NAME[key=value,...]`` -> (NAME, options): an ablation variant of an entry. Values are
    JSON (``stages=[2,3]``, ``gate_init="code"``) or else plain strings (``squash=sigmoid``).
    A name without brackets has no options."""
    import json

    if not name.endswith("]"):
        if "[" in name:
            raise ValueError(f"entry {name!r}: expected NAME[key=value,...] ending in ']'")
        return name, {}
    base, bracket, inner = name.partition("[")
    if not bracket or not base:
        raise ValueError(f"entry {name!r}: expected NAME[key=value,...]")
    options: dict[str, Any] = {}
    for part in split_names(inner[:-1]):
        key, equals, raw = part.partition("=")
        key = key.strip().replace("-", "_")
        if not equals or not key:
            raise ValueError(f"entry {name!r}: expected key=value, got {part!r}")
        if key in options:
            raise ValueError(f"entry {name!r}: option {key!r} given twice")
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw.strip()
    if not options:
        raise ValueError(f"entry {name!r}: empty option list; drop the brackets")
    return base.strip(), options


def _entry_for(name: str, settings: BenchSettings, image_size: tuple[int, int]) -> Entry:
    """The entry named ``name`` (optionally an ablation variant ``NAME[key=value,...]``: the
    options go to the attention module, ``map_weight`` to a NAME+maps entry's loss);
    ValueError for unknown or inapplicable names."""
    base, options = parse_variant(name)
    if not options:
        return _plain_entry(name, settings, image_size)
    if base == "baseline":
        raise ValueError(f"entry {name!r}: the baseline has no attention to set options on")
    entry = _plain_entry(base, settings, image_size)
    weight_given = "map_weight" in options
    map_weight = options.pop("map_weight", entry.map_weight)
    if weight_given:
        if not base.endswith(MAPS_SUFFIX):
            raise ValueError(f"entry {name!r}: map_weight applies to NAME{MAPS_SUFFIX} only")
        if isinstance(map_weight, bool) or not isinstance(map_weight, (int, float)):
            map_weight = float("nan")
        if not 0 < map_weight < float("inf"):
            raise ValueError(f"entry {name!r}: map_weight must be a number > 0")
    if not options:
        return Entry(name, entry.attention, float(map_weight), entry.attention_options)
    merged = {**dict(entry.attention_options), **options}
    return Entry(name, entry.attention, float(map_weight), tuple(sorted(merged.items())))


def _plain_entry(name: str, settings: BenchSettings, image_size: tuple[int, int]) -> Entry:
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
        requested = split_names(names)
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
