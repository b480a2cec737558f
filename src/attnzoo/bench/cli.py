"""``attnzoo bench``: the leaderboard of attention mechanisms on one backbone and dataset.

For a baseline (the backbone alone) and each selected mechanism (:mod:`.entries`), one
training run per seed (:mod:`.runs`: :func:`attnzoo.train.train`, deterministic per seed:
same seed = same data, same data order, same initial random stream), run by
:mod:`.executors`, then one row per entry (:mod:`.stats`) written by :mod:`.report`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from attnzoo.bench.claims import claims_from_rows
from attnzoo.bench.entries import (
    DEFAULT_ATTENTIONS,
    DEFAULT_EPOCHS,
    DEFAULT_MODEL,
    DEFAULT_SEEDS,
    SYNTHETIC_DEFAULTS,
    SYNTHETIC_IMAGE_SIZE,
    BenchSettings,
    Entry,
    parse_seeds,
    resolve_entries,
)
from attnzoo.bench.executors import Execution, format_duration, run_leaderboard
from attnzoo.bench.placement import parse_jobs, physical_cores, plan_workers
from attnzoo.bench.ray_executor import require_ray
from attnzoo.bench.report import markdown_table, require_pyplot, write_outputs
from attnzoo.bench.sizes import epochs_for_size, parse_sizes, read_board, write_size_outputs
from attnzoo.train.tensorboard import require_summary_writer

__all__ = ["add_bench_arguments", "run_bench", "settings_from_args"]


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    from attnzoo.train.config import OPTIMIZERS

    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"backbone (default {DEFAULT_MODEL})"
    )
    parser.add_argument(
        "--data", default="synthetic", help="synthetic (default), fashion-mnist, cifar10, ..."
    )
    parser.add_argument("--data-root", help="folder of the dataset's files")
    parser.add_argument(
        "--attentions",
        default=DEFAULT_ATTENTIONS,
        help="comma list (gate modules, NAME+maps, gattanet) or all (every gate module: for a "
        f"GPU or a longer run); default {DEFAULT_ATTENTIONS}",
    )
    parser.add_argument(
        "--seeds",
        default=str(DEFAULT_SEEDS),
        help=f"a count ({DEFAULT_SEEDS} = seeds 0..{DEFAULT_SEEDS - 1}, the default) or a comma "
        "list (0,5,7)",
    )
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1")
    recipe = parser.add_argument_group("recipe (defaults: the quick CPU leaderboard)")
    recipe.add_argument(
        "--image-size", type=int, help=f"resize to this size (synthetic: {SYNTHETIC_IMAGE_SIZE})"
    )
    recipe.add_argument(
        "--num-images",
        help=f"training images (synthetic: {SYNTHETIC_DEFAULTS['num_images']}; other data: the "
        "first N of its training split, default all); a comma list "
        "(250,500,1000) runs one board per size under OUT/nSIZE and plots against size",
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
        "--data-seed",
        dest="seed",
        type=int,
        help=f"synthetic data seed ({SYNTHETIC_DEFAULTS['seed']}): the dataset is the same for "
        "every run seed",
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
        "--jobs",
        default="auto",
        help="runs at a time, each in its own worker process: a count, or auto (default: "
        "on CPU one per physical core, on CUDA one per visible GPU x --runs-per-gpu)",
    )
    execution.add_argument(
        "--runs-per-gpu", type=int, default=None, help="runs sharing one GPU at a time (1)"
    )
    execution.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="local worker processes (default) or Ray tasks (pip install 'attnzoo[ray]')",
    )
    execution.add_argument(
        "--ray-address", help="an existing Ray cluster (default: start a local Ray instance)"
    )
    execution.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads per run (default on CPU: 1; tiny convolutions scale poorly "
        "across threads and a shared machine punishes oversubscription)",
    )
    execution.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write each run's TensorBoard log beside its metrics.jsonl",
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
    limit_train = None
    if args.data != "synthetic" and args.num_images is not None:
        # Any other dataset: train on its first N training images (a fixed subset).
        limit_train = int(args.num_images)
        synthetic_flags["num_images"] = None
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
        limit_train=limit_train,
    )


def run_bench(args: argparse.Namespace) -> int:
    sizes = parse_sizes(args.num_images)
    if sizes is not None and len(sizes) > 1:
        return run_size_list(args, sizes)
    args.num_images = sizes[0] if sizes else None
    settings = settings_from_args(args)
    settings.config(Entry("baseline"), settings.seeds[0]).validate()
    if not args.no_plots:
        require_pyplot()  # a missing matplotlib fails now, not after the training
    from attnzoo.train.engine import pick_device

    device = pick_device(settings.device)
    execution = execution_from_args(args, settings.device, device)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(execution.threads)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        entries, skipped = resolve_entries(args.attentions, settings, log)
        if settings.limit_train is not None:
            from attnzoo.train.engine import load_split

            # More images asked for than the split holds fails now, not in every run.
            load_split(settings.config(entries[0], settings.seeds[0]), "train")
        board = run_leaderboard(settings, entries, args.out, skipped, log, execution)
    finally:
        torch.set_num_threads(previous_threads)
    meta = {
        "model": settings.model,
        "data": settings.data,
        "seeds": settings.seeds,
        "recipe": {
            "image_size": settings.image_size,
            # Real data: the first N training images (synthetic data: num_images below).
            **({"num_images": settings.limit_train} if settings.limit_train is not None else {}),
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
        "threads": execution.threads,
        "executor": execution.executor,
        "jobs": execution.jobs if execution.executor == "local" else None,
        "torch": torch.__version__,
        "runs": board.counts,
        "wall_s": round(board.wall_s, 1),
    }
    claims = claims_from_rows(board.rows)
    missing = sorted({r["map_source"] for r in board.rows if r["map_source"].startswith("n/a")})
    for reason in missing:
        log(f"map alignment {reason}: those rows have no map ρ")
    written = write_outputs(board, args.out, meta, plots=not args.no_plots, claims=claims)
    print(markdown_table(board.rows))
    if skipped:
        print("\nNot on the leaderboard:")
        for item in skipped:
            print(f"  {item['name']}: {item['reason']}")
    counts = ", ".join(f"{v} {k}" for k, v in board.counts.items())
    print(
        f"\n{counts} in {format_duration(board.wall_s)}; wrote {', '.join(str(p) for p in written)}"
    )
    for item in board.failed:
        print(f"FAILED {item['entry']} seed {item['seed']}: {item['error']}", file=sys.stderr)
    if board.failed:
        print(
            f"{len(board.failed)} run(s) failed: their entries are not on the leaderboard; "
            "run the same command again to retry them",
            file=sys.stderr,
        )
        return 1
    return 0


def run_size_list(args: argparse.Namespace, sizes: list[int]) -> int:
    """One board per training-set size under ``OUT/nSIZE``, then the curves over sizes. Every
    size trains for the steps of ``--epochs`` on the default board's size
    (:func:`attnzoo.bench.sizes.epochs_for_size`), so a small set is not also under-trained."""
    if not args.no_plots:
        require_pyplot()
    status, boards = 0, {}
    for size in sizes:
        print(f"\n== {size} training images ==", file=sys.stderr, flush=True)
        epochs = epochs_for_size(args.epochs, size, SYNTHETIC_DEFAULTS["num_images"])
        board_args = argparse.Namespace(**{**vars(args), "num_images": str(size), "epochs": epochs})
        board_args.out = args.out / f"n{size}"
        status = max(status, run_bench(board_args))
        boards[size] = read_board(board_args.out)
    written = write_size_outputs(args.out, boards, plots=not args.no_plots)
    print(f"wrote {', '.join(str(p) for p in written)}")
    return status


def execution_from_args(
    args: argparse.Namespace, requested: str, device: torch.device
) -> Execution:
    """Where the runs go (:mod:`attnzoo.bench.placement`), checked before any training."""
    if args.tensorboard:
        require_summary_writer()
    jobs = parse_jobs(args.jobs)
    cores = physical_cores()
    cuda = requested == "cuda" or device.type == "cuda"
    if args.runs_per_gpu is not None and not cuda:
        raise ValueError(
            f"--runs-per-gpu {args.runs_per_gpu} applies to CUDA runs, not --device {requested}; "
            "on CPU, --jobs sets how many runs go at a time"
        )
    runs_per_gpu = 1 if args.runs_per_gpu is None else args.runs_per_gpu
    if args.executor == "ray":
        if jobs is not None:
            raise ValueError(
                "--jobs is for --executor local; Ray runs as many tasks as its CPUs/GPUs allow"
            )
        if requested.startswith("cuda:"):
            raise ValueError("--executor ray: use --device cuda (Ray picks each run's GPU)")
        require_ray()
        return Execution(
            "ray",
            threads=args.threads or (1 if not cuda else max(1, cores // runs_per_gpu)),
            gpus_per_run=1 / runs_per_gpu if cuda else 0.0,
            ray_address=args.ray_address,
            tensorboard=args.tensorboard,
        )
    if args.ray_address:
        raise ValueError("--ray-address needs --executor ray")
    threads = args.threads or 1
    groups = plan_workers(
        jobs,
        str(device),
        threads,
        gpu_count=torch.cuda.device_count() if device.type == "cuda" else 0,
        runs_per_gpu=runs_per_gpu,
        cuda_visible=os.environ.get("CUDA_VISIBLE_DEVICES"),
        cores=cores,
    )
    if device.type == "cuda" and not args.threads:
        threads = max(1, cores // sum(group.size for group in groups))
    return Execution("local", groups, threads, tensorboard=args.tensorboard)
