"""``attnzoo train`` and ``attnzoo eval``.

attnzoo train --model resnet20 --attention se --data synthetic --epochs 30 --out runs/se
torchrun --nproc_per_node=4 -m attnzoo train ...        (same command, DDP)
attnzoo train --resume --out runs/se                     (continue a killed run exactly)
attnzoo eval --checkpoint runs/se --noise-sigmas 0,0.05,0.1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

S = argparse.SUPPRESS  # options not given stay absent: a resumed run knows what was asked


def _key_value(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, _, raw = text.partition("=")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip().replace("-", "_"), value


def _floats(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None


def _ints(text: str) -> list[int]:
    return [int(v) for v in _floats(text)]


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    from attnzoo.train.config import AMP_DTYPES, OPTIMIZERS, SCHEDULES, TASKS

    what = parser.add_argument_group("what to train")
    what.add_argument("--model", default=S, help="registered model name, or package.module:fn")
    what.add_argument("--attention", default=S, help="attention module inserted in the model")
    what.add_argument(
        "--attention-opt",
        dest="attention_options",
        action="append",
        type=_key_value,
        default=S,
        metavar="K=V",
    )
    what.add_argument(
        "--model-opt",
        dest="model_options",
        action="append",
        type=_key_value,
        default=S,
        metavar="K=V",
    )
    what.add_argument(
        "--data", default=S, help="synthetic (default), fashion-mnist, cifar10, cifar100, folder"
    )
    what.add_argument("--data-root", default=S, help="folder of the dataset's files")
    what.add_argument(
        "--data-opt",
        dest="data_options",
        action="append",
        type=_key_value,
        default=S,
        metavar="K=V",
        help="dataset option, e.g. num_images=2000, clutter=4, source=fashion-mnist",
    )
    what.add_argument(
        "--weights",
        default=S,
        metavar="FILE",
        help="start from a released checkpoint (docs/pretrained.md); new head if classes differ",
    )
    what.add_argument("--weights-format", default=S, help="force the --weights file's layout")
    what.add_argument("--task", choices=TASKS, default=S)
    what.add_argument("--image-size", type=int, default=S, help="resize the data to this size")

    how = parser.add_argument_group("optimisation")
    how.add_argument("--epochs", type=int, default=S)
    how.add_argument("--batch-size", type=int, default=S, help="global batch (all processes)")
    how.add_argument("--eval-batch-size", type=int, default=S)
    how.add_argument("--lr", type=float, default=S)
    how.add_argument("--optimizer", choices=OPTIMIZERS, default=S)
    how.add_argument("--momentum", type=float, default=S)
    how.add_argument("--nesterov", action="store_true", default=S)
    how.add_argument("--weight-decay", type=float, default=S)
    how.add_argument("--schedule", choices=SCHEDULES, default=S)
    how.add_argument(
        "--milestones", type=_ints, default=S, help="epochs of the step schedule, e.g. 30,60,80"
    )
    how.add_argument("--gamma", type=float, default=S, help="step schedule factor")
    how.add_argument("--warmup-epochs", type=float, default=S)
    how.add_argument("--label-smoothing", type=float, default=S)
    how.add_argument("--clip-grad", type=float, default=S, help="max gradient norm")
    how.add_argument("--no-augment", dest="augment", action="store_false", default=S)
    how.add_argument(
        "--map-weight",
        type=float,
        default=S,
        help="weight of the importance-map loss (GALA supervision); 0 = off",
    )
    how.add_argument(
        "--map-opt",
        dest="map_options",
        action="append",
        type=_key_value,
        default=S,
        metavar="K=V",
        help="option of attnzoo.supervision.importance_map_loss, e.g. normalise=sqrt_sum",
    )

    run = parser.add_argument_group("execution")
    run.add_argument("--amp", choices=AMP_DTYPES, default=S)
    run.add_argument("--channels-last", action="store_true", default=S)
    run.add_argument("--compile", action="store_true", default=S)
    run.add_argument("--seed", type=int, default=S)
    run.add_argument("--deterministic", action="store_true", default=S)
    run.add_argument("--device", default=S, help="auto (default), cpu, cuda, cuda:1")
    run.add_argument("--max-steps", type=int, default=S, help="stop after this many steps")
    run.add_argument("--limit-train", type=int, default=S, help="use the first N training images")
    run.add_argument("--limit-val", type=int, default=S, help="use the first N test images")
    run.add_argument("--save-every", type=int, default=S, help="also checkpoint every N steps")
    run.add_argument(
        "--val-every",
        type=int,
        default=S,
        help="validate every N epochs and after the last (default 1); 0 = never during training",
    )
    run.add_argument("--log-every", type=int, default=S)
    run.add_argument("--progress", choices=("auto", "bar", "plain", "none"), default=S)
    run.add_argument("--out", required=True, help="run folder")
    run.add_argument("--resume", action="store_true", help="continue the run in --out")
    run.add_argument("--tensorboard", action="store_true", help="also log to TensorBoard in --out")
    add_trust_argument(run)


def add_trust_argument(parser: Any) -> None:
    parser.add_argument(
        "--trust-run-folder",
        action="store_true",
        help="allow a run folder whose config names a model builder (package.module:function) "
        "to import and run that code; off by default: only registered model names load",
    )


def run_train(args: argparse.Namespace) -> int:
    from attnzoo.train.config import TrainConfig
    from attnzoo.train.engine import train

    given = {
        k: v
        for k, v in vars(args).items()
        if k not in ("out", "resume", "command", "debug", "trust_run_folder", "tensorboard")
        and not k.startswith("_")
    }
    for key in ("attention_options", "model_options", "data_options", "map_options"):
        if key in given:
            given[key] = dict(given[key])
    config = TrainConfig.from_dict(given)
    trust = args.trust_run_folder
    if args.tensorboard:
        from attnzoo.train.tensorboard import TensorBoardLog

        with TensorBoardLog(args.out) as board:
            final = train(config, args.out, args.resume, set(given), board.add_record, trust)
    else:
        final = train(config, args.out, resume=args.resume, explicit=set(given), trust_code=trust)
    if final:
        print(json.dumps({"out": str(args.out), **final}))
    return 0


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    from attnzoo.weights.commands import add_weights_options

    parser.add_argument("--checkpoint", help="run folder or checkpoint folder")
    add_weights_options(parser)
    parser.add_argument("--data", default=None, help="dataset (default: the one trained on)")
    parser.add_argument("--data-root", default=None)
    parser.add_argument(
        "--data-opt",
        dest="data_options",
        action="append",
        type=_key_value,
        default=None,
        metavar="K=V",
    )
    parser.add_argument("--split", choices=("train", "test"), default="test")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N images")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument(
        "--noise-sigmas",
        type=_floats,
        default=None,
        help="accuracy under additive Gaussian noise of these σ (pixels in [0, 1])",
    )
    parser.add_argument("--noise-seed", type=int, default=0)
    parser.add_argument(
        "--noise-report",
        default=None,
        metavar="DIR",
        help="with --noise-sigmas: write the accuracy-vs-noise table (CSV, Markdown) and plot here",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=None, help="also write the results to this JSON file")
    add_trust_argument(parser)


def run_eval(args: argparse.Namespace) -> int:
    from attnzoo.train.evaluate import evaluate_checkpoint
    from attnzoo.weights.commands import evaluate_pretrained, source_of

    if source_of(args) == "weights":
        if args.noise_sigmas or args.noise_report:
            raise ValueError("--noise-sigmas evaluates run folders (--checkpoint), not --weights")
        result = evaluate_pretrained(
            args.weights,
            args.weights_format,
            args.data,
            args.data_root,
            data_options=dict(args.data_options) if args.data_options else None,
            image_size=args.image_size,
            split=args.split,
            limit=args.limit,
            batch_size=args.batch_size,
            device=args.device,
        )
        print(json.dumps(result, indent=2))
        return 0
    result = evaluate_checkpoint(
        args.checkpoint,
        data=args.data,
        data_root=args.data_root,
        data_options=dict(args.data_options) if args.data_options else None,
        split=args.split,
        limit=args.limit,
        batch_size=args.batch_size,
        noise_sigmas=args.noise_sigmas,
        noise_seed=args.noise_seed,
        device=args.device,
        trust_code=args.trust_run_folder,
    )
    if args.noise_report:
        if not args.noise_sigmas:
            raise ValueError("--noise-report needs --noise-sigmas (the σ values to evaluate)")
        from attnzoo.robustness import write_noise_report

        curve = {float(s): acc for s, acc in result["accuracy_under_noise"].items()}
        name = Path(args.checkpoint).name or str(args.checkpoint)
        paths = write_noise_report({name: curve}, args.noise_report)
        result["noise_report"] = {kind: str(path) for kind, path in paths.items()}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        from attnzoo.train.checkpoint import write_json_atomic

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(args.out, result)
    sys.stdout.flush()
    return 0
