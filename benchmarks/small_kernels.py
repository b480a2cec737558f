"""The two small-kernel costs the default leaderboard pays on every step, side by side.

1. A 1x1 convolution on pooled features (B, C, 1, 1), as SE, CBAM, scSE, GC and GALA's global
   path used to run their MLPs, against the same parameters as one matrix product
   (:func:`attnzoo.layers.pointwise`), forward and backward.
2. An AdamW step over ResNet-8's parameters (with SE): per-tensor, multi-tensor (foreach) and
   fused (:func:`attnzoo.train.steps.make_optimizer` now takes the fused form).

One thread, batch 32, the best of 3 blocked medians of ``torch.utils.benchmark``:

    OMP_NUM_THREADS=1 python benchmarks/small_kernels.py
"""

import torch
import torch.nn.functional as F
from torch.utils.benchmark import Timer

from attnzoo import models
from attnzoo.layers import pointwise


def _best(work) -> float:
    timer = Timer("work()", globals={"work": work})
    return min(timer.blocked_autorange(min_run_time=0.3).median for _ in range(3))


def pooled_mlp() -> None:
    print("| C | 1x1 conv µs | pointwise µs | conv / pointwise |\n|---|---|---|---|")
    for channels in (16, 32, 64):
        conv = torch.nn.Conv2d(channels, channels // 4, 1)
        x = torch.randn(32, channels, 1, 1, requires_grad=True)

        def as_conv(x=x, conv=conv):
            conv(x).sum().backward()

        def as_product(x=x, conv=conv):
            pointwise(x.flatten(1), conv).sum().backward()

        slow, fast = _best(as_conv), _best(as_product)
        print(f"| {channels} | {slow * 1e6:.0f} | {fast * 1e6:.0f} | {slow / fast:.2f} |")


def optimizer_step() -> None:
    model = models.create("resnet8", num_classes=6, attention="se")
    F.cross_entropy(model(torch.randn(32, 3, 16, 16)), torch.zeros(32, dtype=torch.long)).backward()
    print("\n| AdamW form | ms per step |\n|---|---|")
    for form in ({"foreach": False}, {"foreach": True}, {"fused": True}):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-9, **form)
        ((name, value),) = form.items()
        print(f"| {name}={value} | {_best(optimizer.step) * 1e3:.2f} |")


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)\n")
    pooled_mlp()
    optimizer_step()


if __name__ == "__main__":
    main()
