"""``attnzoo export``: a trained model to ONNX or to a torch.export program, checked.

``export_model(model, example_input, "onnx" | "torch-export", path)`` traces the model with
:func:`torch.export.export` (batch, height and width marked ``Dim.AUTO`` when ``dynamic``),
writes it (``torch.export.save`` to a ``.pt2`` file, or the torch.export-based ONNX exporter,
``torch.onnx.export(program, dynamo=True)``), reloads what it wrote and compares the outputs
with eager PyTorch on fresh random inputs: at the example's shape and, when a dimension stayed
dynamic, at another batch size and spatial size. The report gives the dimensions that stayed
dynamic, the reason a dimension was fixed when we know it (a size-bound module such as
``rga_*`` or GE θ/θ⁺ with the global extent, built for one H×W), and the max abs difference.

The exported model takes what the trained model takes: normalised images. The checkpoint's
per-channel mean and std are in the report (the command prints them) for the caller to apply.

The TorchScript-based exporter (``dynamo=False``) is not used: traced reshapes bake in the
example's sizes, and its outputs at another batch/spatial size differ from PyTorch's.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.fx.experimental.symbolic_shapes import is_concrete_int

__all__ = ["FORMATS", "ExportReport", "export_model", "size_bound_modules"]

FORMATS = ("onnx", "torch-export")
DIM_NAMES = ("batch", "channels", "height", "width")


@dataclass
class ExportReport:
    """What :func:`export_model` wrote and how well the reloaded model matches PyTorch."""

    format: str
    path: str
    example_shape: tuple[int, ...]
    dynamic_dims: list[str]
    static_dims: list[str]
    static_reason: str | None
    checked_shapes: list[tuple[int, ...]]
    max_abs_diff: float
    tolerance: float
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


class _SingleInput(nn.Module):
    """``forward(images)`` with one named input, whatever the model's own signature
    (GAttANet's is ``*args``), so that dynamic shapes and ONNX input names are stable."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> Any:
        return self.model(images)


def size_bound_modules(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Submodules defined for one spatial size (``expected_size`` set): name -> (H, W)."""
    bound: dict[str, tuple[int, int]] = {}
    for name, module in model.named_modules():
        size = getattr(module, "expected_size", None)
        if isinstance(size, tuple) and len(size) == 2:
            bound[name] = (int(size[0]), int(size[1]))
    return bound


def _tensors(output: Any) -> list[torch.Tensor]:
    """Every tensor of a (nested) output, in a fixed order (ONNX flattens outputs the same)."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        return [t for key in output for t in _tensors(output[key])]
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in _tensors(item)]
    return []


def _max_abs_diff(expected: list[torch.Tensor], got: list[torch.Tensor]) -> float:
    if len(expected) != len(got):
        raise ValueError(f"the exported model returned {len(got)} tensors, PyTorch {len(expected)}")
    worst = 0.0
    for a, b in zip(expected, got, strict=True):
        if tuple(a.shape) != tuple(b.shape):
            raise ValueError(
                f"the exported model returned shape {tuple(b.shape)}, PyTorch {tuple(a.shape)}"
            )
        diff = (a.detach().double().cpu() - b.detach().double().cpu()).abs()
        worst = max(worst, float(diff.max()) if diff.numel() else 0.0)
    if math.isnan(worst):
        return math.inf
    return worst


def _which_dynamic(program: torch.export.ExportedProgram) -> list[bool]:
    """Per dimension of the (single) user input: symbolic (dynamic) or a plain int."""
    spec = program.graph_signature.user_inputs[0]
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == spec)
    # A specialised size can still be a SymInt whose value is a constant.
    return [not is_concrete_int(size) for size in node.meta["val"].shape]


def _second_shape(example: tuple[int, ...], dynamic: list[bool]) -> tuple[int, ...]:
    """Another batch and spatial size for the dynamic dims (keeps the example's divisibility
    by 8, so stride-2 stages see the same rounding)."""
    batch, channels, height, width = example
    return (
        batch + 1 if dynamic[0] else batch,
        channels,
        height + 8 if dynamic[2] else height,
        width + 16 if dynamic[3] else width,
    )


def _run_onnx(path: Path, inputs: torch.Tensor) -> list[torch.Tensor]:
    try:
        import onnxruntime
    except ImportError:
        raise ModuleNotFoundError(
            "checking an ONNX export needs onnxruntime: pip install 'attnzoo[onnx]'"
        ) from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: inputs.detach().cpu().numpy()}
    return [torch.from_numpy(value) for value in session.run(None, feed)]


def export_model(
    model: nn.Module,
    example_input: torch.Tensor,
    format: str,
    path: str | Path,
    dynamic: bool = True,
    tolerance: float = 1e-4,
    seed: int = 0,
) -> ExportReport:
    """Export ``model`` (in eval mode) for inputs like ``example_input`` (B, C, H, W) and check
    the written file against eager PyTorch.

    ``dynamic=True`` lets batch, height and width vary where the model allows; dimensions the
    model fixes (size-bound modules, a flatten before a Linear, ...) are reported in
    ``static_dims``. The check runs the reloaded export (the loaded ExportedProgram, or
    onnxruntime for ONNX) and PyTorch on the same random inputs, at the example's shape and at
    a second shape that changes every dynamic dimension; ``report.ok`` says whether the max abs
    difference is within ``tolerance``. Raises ValueError when the model cannot be exported,
    naming the reason.
    """
    if format not in FORMATS:
        raise ValueError(f"export format must be one of {', '.join(FORMATS)}, got {format!r}")
    if not isinstance(example_input, torch.Tensor) or example_input.dim() != 4:
        got = (
            f"shape {tuple(example_input.shape)}"
            if isinstance(example_input, torch.Tensor)
            else type(example_input).__name__
        )
        raise ValueError(f"example_input must be a (B, C, H, W) tensor, got {got}")
    if dynamic and example_input.shape[0] < 2:
        # Dim.AUTO specialises sizes 0 and 1: a batch of one would fix the batch size.
        raise ValueError(
            f"a dynamic export needs an example batch of at least 2, got {example_input.shape[0]}"
        )
    path = Path(path)
    if format == "torch-export" and path.suffix != ".pt2":
        raise ValueError(f"torch.export programs are saved as .pt2 files, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    wrapped = _SingleInput(model).eval()
    example = example_input.detach()
    notes: list[str] = []
    try:
        auto = torch.export.Dim.AUTO
        dynamic_shapes = ({0: auto, 2: auto, 3: auto},) if dynamic else None
        try:
            with torch.no_grad():
                program = torch.export.export(wrapped, (example,), dynamic_shapes=dynamic_shapes)
        except Exception as error:
            raise ValueError(
                f"torch.export could not trace {type(model).__name__}: "
                f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            ) from error
        flags = _which_dynamic(program)
        dynamic_dims = [DIM_NAMES[i] for i, flag in enumerate(flags) if flag]
        static_dims = [DIM_NAMES[i] for i in (0, 2, 3) if not flags[i]]
        reason = None
        if dynamic and static_dims:
            bound = size_bound_modules(model)
            if bound and not (flags[2] or flags[3]):
                listed = ", ".join(f"{n} ({h}x{w})" for n, (h, w) in bound.items())
                reason = f"size-bound modules are defined for one spatial size: {listed}"
            else:
                reason = (
                    "the model fixes these sizes (for example a flatten before a Linear layer, "
                    "or a size check in forward)"
                )
        if format == "torch-export":
            torch.export.save(program, str(path))
            loaded = torch.export.load(str(path)).module()

            def run_export(x: torch.Tensor) -> list[torch.Tensor]:
                with torch.no_grad():
                    return _tensors(loaded(x))
        else:
            log = io.StringIO()
            try:
                with contextlib.redirect_stdout(log):
                    torch.onnx.export(program, (example,), str(path), dynamo=True)
            except Exception as error:
                raise ValueError(
                    f"the ONNX exporter failed on {type(model).__name__}: "
                    f"{type(error).__name__}: {error}\n{log.getvalue()}"
                ) from error

            def run_export(x: torch.Tensor) -> list[torch.Tensor]:
                return _run_onnx(path, x)

        from attnzoo.gattanet import GAttANet

        if any(isinstance(m, GAttANet) for m in model.modules()):
            notes.append(
                "GAttANet: all passes are in the exported graph; the agreement maps are not "
                "outputs of the export (read them from the PyTorch model)"
            )
        generator = torch.Generator().manual_seed(seed)
        example_shape = tuple(int(s) for s in example.shape)
        shapes = [example_shape]
        second = _second_shape(example_shape, flags)  # type: ignore[arg-type]
        if second != example_shape:
            shapes.append(second)
        else:
            notes.append("no dimension is dynamic: checked at the example's shape only")
        worst = 0.0
        for shape in shapes:
            x = torch.randn(shape, generator=generator, dtype=example.dtype).to(example.device)
            with torch.no_grad():
                expected = _tensors(model(x))
            worst = max(worst, _max_abs_diff(expected, run_export(x)))
    finally:
        model.train(was_training)
    return ExportReport(
        format=format,
        path=str(path),
        example_shape=example_shape,
        dynamic_dims=dynamic_dims,
        static_dims=static_dims,
        static_reason=reason,
        checked_shapes=shapes,
        max_abs_diff=worst,
        tolerance=tolerance,
        notes=notes,
    )


# ----------------------------------------------------------------------------- command line


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    from attnzoo.weights.commands import add_weights_options

    parser.add_argument("--checkpoint", help="run folder or checkpoint folder")
    add_weights_options(parser)
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--out", help="output file (default: CHECKPOINT/model.onnx or .pt2)")
    parser.add_argument(
        "--static", action="store_true", help="fix batch and spatial size to the example's"
    )
    parser.add_argument("--batch-size", type=int, default=2, help="example batch (default 2)")
    parser.add_argument(
        "--tolerance", type=float, default=1e-4, help="max abs difference allowed (default 1e-4)"
    )
    from attnzoo.train.cli import add_trust_argument

    add_trust_argument(parser)


def load_trained_model(
    checkpoint: str | Path, trust_code: bool = False
) -> tuple[nn.Module, dict[str, Any], Any]:
    """(model with the checkpoint's weights in eval mode, metadata, its test split). A
    checkpoint whose config names a model builder to import needs ``trust_code=True``."""
    from attnzoo.train.checkpoint import find_checkpoint
    from attnzoo.train.runfolder import load_run, load_weights
    from attnzoo.train.setup import build_model, load_split, match_channels

    weights, meta, _, config = load_run(checkpoint, trust_code=trust_code)
    config.limit_val = 2
    data = load_split(config, "test")
    model = build_model(config, data)
    load_weights(model, weights, find_checkpoint(checkpoint))
    model.eval()
    data = match_channels(data, model, config)
    return model, meta, data


def run_export(args: argparse.Namespace) -> int:
    from attnzoo.train.checkpoint import find_checkpoint
    from attnzoo.weights.commands import source_of

    suffix = ".onnx" if args.format == "onnx" else ".pt2"
    if source_of(args) == "weights":
        from attnzoo.weights import load_pretrained

        model, plan = load_pretrained(args.weights, args.weights_format)
        meta: dict[str, Any] = {"mean": list(plan.mean), "std": list(plan.std)}
        channels, (height, width) = 3, (args.image_size, args.image_size)
        out = Path(args.out) if args.out else Path(args.weights).with_suffix(suffix)
    else:
        model, meta, data = load_trained_model(args.checkpoint, args.trust_run_folder)
        channels, (height, width) = data.channels, data.image_size
        out = Path(args.out) if args.out else find_checkpoint(args.checkpoint) / f"model{suffix}"
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    example = torch.randn(args.batch_size, channels, height, width)
    report = export_model(
        model, example, args.format, out, dynamic=not args.static, tolerance=args.tolerance
    )
    print(f"wrote {report.path} ({report.format})")
    print(f"input: (batch, channels, height, width), example {report.example_shape}")
    print(f"  dynamic: {', '.join(report.dynamic_dims) or 'none'}")
    if report.static_dims:
        why = f" ({report.static_reason})" if report.static_reason else ""
        print(f"  fixed: {', '.join(report.static_dims)}{why}")
    print(f"  normalise inputs with mean {meta['mean']} and std {meta['std']} (as in training)")
    for note in report.notes:
        print(f"  note: {note}")
    shapes = ", ".join(str(s) for s in report.checked_shapes)
    verdict = "ok" if report.ok else "EXCEEDS TOLERANCE"
    print(
        f"max abs difference vs PyTorch on random inputs {shapes}: {report.max_abs_diff:.3g} "
        f"(tolerance {report.tolerance:g}) {verdict}"
    )
    print(json.dumps({**report.to_dict(), "mean": meta["mean"], "std": meta["std"]}))
    return 0 if report.ok else 1
