"""``attnzoo bench``: the leaderboard of attention mechanisms on one backbone and dataset.

For a baseline (the backbone alone) and each selected mechanism, one training run per seed
(:func:`attnzoo.train.train`, deterministic per seed: same seed = same data, same data order,
same initial random stream), then one row per entry:

- accuracy on the test split, mean ± sample standard deviation over seeds;
- Δ against the baseline, paired by seed: the mean of the per-seed differences with a 95%
  Student-t interval ``mean ± t(0.975, n-1) · sd / √n`` (n = seeds); with one seed there is
  no interval ("n/a");
- parameters, MACs of one forward pass of one image (``torch.utils.flop_counter``, counted
  as multiply-accumulates like :mod:`attnzoo.bench.profile`), training images per second;
- map alignment (mean per-image Spearman ρ with the importance maps, and the fraction of
  the ClickMe ceiling, :mod:`attnzoo.metrics`) where the model records a spatial map and the
  data has importance maps.

Entries: ``baseline``, any 4-D gate module of the registry, ``NAME+maps`` (the module trained
with the importance-map loss, :mod:`attnzoo.supervision`; NAME must record a spatial map) and
``gattanet`` (the network-wide wrapper). By default (``--attentions all``) every gate module
that can be built and run on the backbone, ``gala+maps`` and ``gattanet``; modules that cannot
are listed with the reason.

Every (entry, seed) run has its own folder ``OUT/runs/ENTRY/seedS``. A run with a
``result.json`` is reused; one with a checkpoint but no result continues with
``train(..., resume=True)``; a folder made with other settings is an error, never overwritten.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from attnzoo.registry import did_you_mean
from attnzoo.train.checkpoint import write_json_atomic
from attnzoo.train.config import TrainConfig

__all__ = [
    "BenchSettings",
    "Entry",
    "paired_interval",
    "parse_seeds",
    "resolve_entries",
    "run_leaderboard",
    "t_quantile",
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
# Settings that do not change what a run computes: a run folder may differ in these.
_IGNORED_KEYS = ("progress", "log_every", "save_every")


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


# ----------------------------------------------------------------------------- statistics


def _two_sided_t_cdf(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer ``df`` (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    if df % 2 == 1:
        total, term = 0.0, math.cos(theta)
        for k in range(1, (df - 1) // 2 + 1):
            # cos θ + 2/3 cos³θ + (2·4)/(3·5) cos⁵θ + ... up to cos^(df-2)θ
            total += term
            term *= cos2 * (2 * k) / (2 * k + 1)
        return 2 / math.pi * (theta + math.sin(theta) * total)
    total, term = 0.0, 1.0
    for k in range(1, df // 2 + 1):
        # 1 + 1/2 cos²θ + (1·3)/(2·4) cos⁴θ + ... up to cos^(df-2)θ
        total += term
        term *= cos2 * (2 * k - 1) / (2 * k)
    return math.sin(theta) * total


def t_quantile(probability: float, df: int) -> float:
    """The ``probability`` quantile (> 0.5) of Student's t with integer ``df`` >= 1."""
    if not 0.5 < probability < 1 or df < 1:
        raise ValueError(f"expected 0.5 < probability < 1 and df >= 1, got {probability}, {df}")
    target = 2 * probability - 1  # two-sided coverage
    low, high = 0.0, 1.0
    while _two_sided_t_cdf(high, df) < target:
        high *= 2
    for _ in range(200):
        middle = 0.5 * (low + high)
        if _two_sided_t_cdf(middle, df) < target:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


def paired_interval(
    values: Sequence[float], reference: Sequence[float], confidence: float = 0.95
) -> tuple[float, float | None, float | None]:
    """(mean difference, low, high) of ``values - reference`` paired by position: a Student-t
    interval on the per-pair differences; low and high are None with a single pair."""
    if len(values) != len(reference) or not values:
        raise ValueError(
            f"paired_interval needs equally many (>= 1) values and references, got "
            f"{len(values)} and {len(reference)}"
        )
    differences = [v - r for v, r in zip(values, reference, strict=True)]
    mean = statistics.fmean(differences)
    n = len(differences)
    if n < 2:
        return mean, None, None
    half = t_quantile(0.5 + confidence / 2, n - 1) * statistics.stdev(differences) / math.sqrt(n)
    return mean, mean - half, mean + half


# ----------------------------------------------------------------------------- entries


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


# ----------------------------------------------------------------------------- runs


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    clean = json.loads(json.dumps(config))
    return {k: v for k, v in clean.items() if k not in _IGNORED_KEYS}


def _check_same_settings(run_dir: Path, saved: dict[str, Any], config: TrainConfig) -> None:
    now, before = _comparable(config.to_dict()), _comparable(saved)
    differing = sorted(k for k in set(now) | set(before) if now.get(k) != before.get(k))
    if differing:
        details = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in differing)
        raise ValueError(
            f"{run_dir} holds a run made with other settings ({details}); choose another --out "
            "or delete that folder to retrain it"
        )


def _read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the run wrote no metrics (was it interrupted?)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _model_cost(config: TrainConfig) -> tuple[int, int]:
    """(parameters, MACs of one forward pass of one image) of the run's model."""
    from torch.utils.flop_counter import FlopCounterMode

    from attnzoo.train.engine import build_model, load_split

    data = load_split(replace(config, limit_val=1), "test")
    model = build_model(config, data).eval()
    params = sum(p.numel() for p in model.parameters())
    image = torch.zeros(1, data.channels, *data.image_size)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(image)
    # The counter reports FLOPs = 2 x multiply-accumulates, as profile.py does.
    return params, int(counter.get_total_flops() // 2)


def _summarise_run(run_dir: Path, config: TrainConfig, seconds: float) -> dict[str, Any]:
    records = _read_metrics(run_dir)
    if not records:
        raise ValueError(f"{run_dir}/metrics.jsonl is empty: the run finished no epoch")
    last = records[-1]
    images = sum(r["throughput"] * r["time"] for r in records)
    train_time = sum(r["time"] for r in records)
    params, macs = _model_cost(config)
    return {
        "config": config.to_dict(),
        "accuracy": last["val_accuracy"],
        "loss": last["val_loss"],
        "train_accuracy": last["train_accuracy"],
        "map_rho": last.get("val_map_rho"),
        "map_fraction": last.get("val_map_fraction"),
        "images_per_s": images / max(train_time, 1e-9),
        "epochs": last["epoch"],
        "steps": last["step"],
        "params": params,
        "macs": macs,
        "wall_s": seconds,
    }


def run_one(config: TrainConfig, run_dir: Path) -> tuple[dict[str, Any], str]:
    """(result, how) for one (entry, seed): how is ``reused``, ``resumed`` or ``trained``."""
    from attnzoo.train.engine import train

    result_file = run_dir / "result.json"
    if result_file.is_file():
        result = json.loads(result_file.read_text())
        _check_same_settings(run_dir, result["config"], config)
        return result, "reused"
    start = time.perf_counter()
    checkpoints = run_dir / "checkpoints"
    resume = (checkpoints / "latest.json").is_file()
    if resume:
        _check_same_settings(run_dir, json.loads((run_dir / "config.json").read_text()), config)
    elif checkpoints.is_dir():
        # Killed while writing its first checkpoint: nothing to continue from, start over.
        shutil.rmtree(checkpoints)
    train(config, run_dir, resume=resume, explicit={"progress", "log_every", "save_every"})
    result = _summarise_run(run_dir, config, time.perf_counter() - start)
    write_json_atomic(result_file, result)
    return result, "resumed" if resume else "trained"


def _duration(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60}m{whole % 60:02d}s"


@dataclass
class Leaderboard:
    rows: list[dict[str, Any]]
    skipped: list[dict[str, str]]
    counts: dict[str, int]
    wall_s: float


def run_leaderboard(
    settings: BenchSettings,
    entries: list[Entry],
    out: Path,
    skipped: list[dict[str, str]] | None = None,
    log: Callable[[str], None] = print,
) -> Leaderboard:
    """Train (or reuse) every (entry, seed) run under ``out/runs`` and summarise them."""
    if not entries or entries[0].attention is not None:
        raise ValueError("the first entry must be the baseline (attention None)")
    jobs = [(entry, seed) for entry in entries for seed in settings.seeds]
    pending = sum(
        not (out / "runs" / e.name / f"seed{s}" / "result.json").is_file() for e, s in jobs
    )
    log(
        f"{len(jobs)} runs ({len(entries)} entries x {len(settings.seeds)} seeds), "
        f"{len(jobs) - pending} already complete"
    )
    results: dict[tuple[str, int], dict[str, Any]] = {}
    counts = {"trained": 0, "resumed": 0, "reused": 0}
    start = time.perf_counter()
    spent, done = 0.0, 0
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        for index, (entry, seed) in enumerate(jobs, 1):
            run_dir = out / "runs" / entry.name / f"seed{seed}"
            tick = time.perf_counter()
            result, how = run_one(settings.config(entry, seed), run_dir)
            counts[how] += 1
            results[(entry.name, seed)] = result
            if how != "reused":
                spent += time.perf_counter() - tick
                done += 1
            left = pending - done
            eta = f", ETA {_duration(spent / done * left)}" if done and left else ""
            log(
                f"[{index}/{len(jobs)}] {entry.name} seed {seed}: {how}, "
                f"accuracy {result['accuracy']:.3f}, {result['images_per_s']:.0f} img/s "
                f"(elapsed {_duration(time.perf_counter() - start)}{eta})"
            )
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
    rows = summarise(entries, settings.seeds, results)
    return Leaderboard(rows, list(skipped or []), counts, time.perf_counter() - start)


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def _std(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.stdev(present) if len(present) >= 2 else None


def summarise(
    entries: list[Entry], seeds: list[int], results: dict[tuple[str, int], dict[str, Any]]
) -> list[dict[str, Any]]:
    """One row per entry (the baseline first) from the per-(entry, seed) results."""
    baseline = [results[("baseline", s)]["accuracy"] for s in seeds]
    rows = []
    for entry in entries:
        runs = [results[(entry.name, s)] for s in seeds]
        accuracies = [r["accuracy"] for r in runs]
        row: dict[str, Any] = {
            "entry": entry.name,
            "attention": entry.attention or "",
            "map_weight": entry.map_weight,
            "seeds": len(seeds),
            "accuracy_mean": statistics.fmean(accuracies),
            "accuracy_std": _std(list(accuracies)),
            "delta_mean": None,
            "delta_ci_low": None,
            "delta_ci_high": None,
            "params": runs[0]["params"],
            "macs": runs[0]["macs"],
            "images_per_s": statistics.fmean(r["images_per_s"] for r in runs),
            "map_rho_mean": _mean([r["map_rho"] for r in runs]),
            "map_rho_std": _std([r["map_rho"] for r in runs]),
            "map_fraction_mean": _mean([r["map_fraction"] for r in runs]),
            "accuracy_per_seed": ";".join(
                f"{s}:{a:.4f}" for s, a in zip(seeds, accuracies, strict=True)
            ),
        }
        if entry.attention is not None:
            mean, low, high = paired_interval(accuracies, baseline)
            row.update(delta_mean=mean, delta_ci_low=low, delta_ci_high=high)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- outputs


def _pct(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:+.1f}" if sign else f"{100 * value:.1f}"


def _count(value: int) -> str:
    return f"{value / 1e6:.3f}M" if value < 1e9 else f"{value / 1e9:.2f}G"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    header = (
        "| entry | accuracy % (mean ± std) | Δ vs baseline, pp [95% CI] | params | MACs "
        "| train img/s | map ρ (ceiling fraction) |"
    )
    lines = [header, "|---|---|---|---|---|---|---|"]
    for row in rows:
        accuracy = _pct(row["accuracy_mean"])
        if row["accuracy_std"] is not None:
            accuracy += f" ± {_pct(row['accuracy_std'])}"
        if row["attention"] == "":
            delta = "(reference)"
        else:
            delta = _pct(row["delta_mean"], sign=True)
            if row["delta_ci_low"] is None:
                delta += " [n/a: one seed]"
            else:
                delta += (
                    f" [{_pct(row['delta_ci_low'], sign=True)}, "
                    f"{_pct(row['delta_ci_high'], sign=True)}]"
                )
        if row["map_rho_mean"] is None:
            alignment = "-"
        else:
            alignment = f"{row['map_rho_mean']:.3f}"
            if row["map_rho_std"] is not None:
                alignment += f" ± {row['map_rho_std']:.3f}"
            alignment += f" ({row['map_fraction_mean']:.2f})"
        cells = [
            row["entry"],
            accuracy,
            delta,
            _count(row["params"]),
            _count(row["macs"]),
            f"{row['images_per_s']:.0f}",
            alignment,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_outputs(board: Leaderboard, out: Path, meta: dict[str, Any], plots: bool) -> list[Path]:
    """results.csv, results.json, results.md and (with ``plots``) the two PNGs."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.csv", out / "results.json", out / "results.md"]
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(board.rows[0]))
        writer.writeheader()
        writer.writerows(board.rows)
    document = {"meta": meta, "rows": board.rows, "skipped": board.skipped}
    write_json_atomic(out / "results.json", document)
    recipe = ", ".join(f"{k}={v}" for k, v in meta["recipe"].items())
    text = [
        f"# Leaderboard: {meta['model']} on {meta['data']}",
        "",
        f"Seeds {meta['seeds']}; {recipe}.",
        f"Device {meta['device']}, {meta['threads']} thread(s), torch {meta['torch']}.",
        "Δ: mean of the per-seed differences with the baseline (same seed = same data and "
        "data order), 95% Student-t interval over seeds. MACs: one forward pass of one image. "
        "Map ρ: mean per-image Spearman correlation of the recorded spatial map with the "
        "importance maps; in brackets, ρ / 0.65753 (the ClickMe human ceiling).",
        "",
        markdown_table(board.rows),
    ]
    if board.skipped:
        text += ["", "Not on the leaderboard:", ""]
        text += [f"- `{s['name']}`: {s['reason']}" for s in board.skipped]
    (out / "results.md").write_text("\n".join(text) + "\n")
    if plots:
        written += plot_results(board.rows, out, f"{meta['model']} on {meta['data']}")
    return written


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ValueError(
            "the leaderboard plots need matplotlib (pip install 'attnzoo[plots]'); or pass "
            "--no-plots"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_results(rows: list[dict[str, Any]], out: Path, title: str) -> list[Path]:
    """accuracy_vs_macs.png and delta.png under ``out``."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 6))
    for row in rows:
        is_baseline = row["attention"] == ""
        axes.errorbar(
            row["macs"] / 1e6,
            100 * row["accuracy_mean"],
            yerr=100 * (row["accuracy_std"] or 0.0),
            fmt="s" if is_baseline else "o",
            color="black" if is_baseline else "tab:blue",
            capsize=3,
        )
        axes.annotate(
            row["entry"],
            (row["macs"] / 1e6, 100 * row["accuracy_mean"]),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    axes.set_xlabel("MACs per image (millions)")
    axes.set_ylabel("test accuracy % (mean ± std over seeds)")
    axes.set_title(f"{title}: accuracy vs MACs")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out / "accuracy_vs_macs.png", dpi=120)
    plt.close(figure)

    entries = [r for r in rows if r["attention"] != ""]
    entries.sort(key=lambda r: r["delta_mean"])
    figure, axes = plt.subplots(figsize=(7, 0.3 * len(entries) + 1.5))
    for position, row in enumerate(entries):
        mean = 100 * row["delta_mean"]
        if row["delta_ci_low"] is not None:
            low, high = 100 * row["delta_ci_low"], 100 * row["delta_ci_high"]
            axes.errorbar(mean, position, xerr=[[mean - low], [high - mean]], fmt="o", capsize=3)
        else:
            axes.plot(mean, position, "o", color="tab:gray")
    axes.axvline(0, color="black", linewidth=0.8)
    axes.set_yticks(range(len(entries)), [r["entry"] for r in entries], fontsize=8)
    axes.set_xlabel("Δ accuracy vs baseline, percentage points (95% CI over seeds)")
    axes.set_title(title)
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(out / "delta.png", dpi=120)
    plt.close(figure)
    return [out / "accuracy_vs_macs.png", out / "delta.png"]


# ----------------------------------------------------------------------------- command line


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    from attnzoo.train.config import OPTIMIZERS

    parser.add_argument("--model", default="resnet20", help="backbone (default resnet20)")
    parser.add_argument(
        "--data", default="synthetic", help="synthetic (default), fashion-mnist, cifar10, ..."
    )
    parser.add_argument("--data-root", help="folder of the dataset's files")
    parser.add_argument(
        "--attentions",
        default="all",
        help="comma list (gate modules, NAME+maps, gattanet) or all (default)",
    )
    parser.add_argument(
        "--seeds", default="2", help="a count (2 = seeds 0,1) or a comma list (0,5,7)"
    )
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1")
    recipe = parser.add_argument_group("recipe (defaults: the quick CPU leaderboard)")
    recipe.add_argument(
        "--image-size", type=int, help=f"resize to this size (synthetic: {SYNTHETIC_IMAGE_SIZE})"
    )
    recipe.add_argument(
        "--num-images",
        type=int,
        help=f"synthetic training images ({SYNTHETIC_DEFAULTS['num_images']})",
    )
    recipe.add_argument(
        "--num-test", type=int, help=f"synthetic test images ({SYNTHETIC_DEFAULTS['num_test']})"
    )
    recipe.add_argument(
        "--num-classes", type=int, help=f"synthetic classes ({SYNTHETIC_DEFAULTS['num_classes']})"
    )
    recipe.add_argument(
        "--clutter", type=int, help=f"synthetic distractors ({SYNTHETIC_DEFAULTS['clutter']})"
    )
    recipe.add_argument(
        "--data-opt",
        action="append",
        default=[],
        metavar="K=V",
        help="any other dataset option, e.g. source=fashion-mnist",
    )
    recipe.add_argument("--batch-size", type=int, default=32)
    recipe.add_argument("--lr", type=float, default=3e-3)
    recipe.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw")
    recipe.add_argument("--weight-decay", type=float, default=5e-4)
    recipe.add_argument("--augment", action="store_true", help="pad-crop and flip (off)")
    recipe.add_argument(
        "--map-weight", type=float, default=1.0, help="λ of the NAME+maps entries (1.0)"
    )
    recipe.add_argument("--max-steps", type=int, help="stop every run after this many steps")
    execution = parser.add_argument_group("execution")
    execution.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default on CPU: 1; tiny convolutions scale poorly across "
        "threads and a shared machine punishes oversubscription)",
    )
    execution.add_argument(
        "--save-every", type=int, default=0, help="also checkpoint every N steps (for resume)"
    )
    execution.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    data_options: dict[str, Any] = {}
    for item in args.data_opt:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--data-opt: expected KEY=VALUE, got {item!r}")
        try:
            data_options[key.strip().replace("-", "_")] = json.loads(raw)
        except json.JSONDecodeError:
            data_options[key.strip().replace("-", "_")] = raw
    synthetic_flags = {k: getattr(args, k) for k in SYNTHETIC_DEFAULTS}
    image_size = args.image_size
    if args.data == "synthetic":
        for key, default in SYNTHETIC_DEFAULTS.items():
            value = synthetic_flags[key]
            data_options.setdefault(key, default if value is None else value)
        if image_size is None:
            image_size = data_options.pop("image_size", SYNTHETIC_IMAGE_SIZE)
    else:
        given = sorted(k for k, v in synthetic_flags.items() if v is not None)
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise ValueError(f"{flags} apply to --data synthetic only, not {args.data!r}")
    return BenchSettings(
        model=args.model,
        data=args.data,
        data_root=args.data_root,
        data_options=data_options,
        image_size=image_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        weight_decay=args.weight_decay,
        augment=args.augment,
        map_weight=args.map_weight,
        seeds=parse_seeds(args.seeds),
        device=args.device,
        max_steps=args.max_steps,
        save_every=args.save_every,
    )


def run_bench(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    settings.config(Entry("baseline"), settings.seeds[0]).validate()
    if not args.no_plots:
        _pyplot()  # a missing matplotlib fails now, not after the training
    from attnzoo.train.engine import pick_device

    device = pick_device(settings.device)
    previous_threads = torch.get_num_threads()
    threads = args.threads or (1 if device.type == "cpu" else previous_threads)
    torch.set_num_threads(threads)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        entries, skipped = resolve_entries(args.attentions, settings, log)
        board = run_leaderboard(settings, entries, args.out, skipped, log)
    finally:
        torch.set_num_threads(previous_threads)
    meta = {
        "model": settings.model,
        "data": settings.data,
        "seeds": settings.seeds,
        "recipe": {
            "image_size": settings.image_size,
            **settings.data_options,
            "epochs": settings.epochs,
            "batch_size": settings.batch_size,
            "optimizer": settings.optimizer,
            "lr": settings.lr,
            "weight_decay": settings.weight_decay,
            "augment": settings.augment,
            "map_weight": settings.map_weight,
            "max_steps": settings.max_steps,
        },
        "device": str(device),
        "threads": threads,
        "torch": torch.__version__,
        "runs": board.counts,
        "wall_s": round(board.wall_s, 1),
    }
    written = write_outputs(board, args.out, meta, plots=not args.no_plots)
    print(markdown_table(board.rows))
    if skipped:
        print("\nNot on the leaderboard:")
        for item in skipped:
            print(f"  {item['name']}: {item['reason']}")
    counts = ", ".join(f"{v} {k}" for k, v in board.counts.items())
    print(f"\n{counts} in {_duration(board.wall_s)}; wrote {', '.join(str(p) for p in written)}")
    return 0
