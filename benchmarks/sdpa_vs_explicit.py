"""Is an explicit softmax(q kᵀ) v faster than fused SDPA at small N on CPU?

docs/performance.md proposed switching `layers.attention_fp32` to the explicit N×N path below
some N to close non-local's gap to timm at the smallest CIFAR maps. This measures the two
paths alone, forward+backward, side by side in one run (best of 3 blocked medians):

    python benchmarks/sdpa_vs_explicit.py
"""

import torch
import torch.nn.functional as F
from torch.utils.benchmark import Timer


def explicit(q, k, v, scale):
    return torch.softmax((q @ k.transpose(-1, -2)) * scale, -1) @ v  # (B, 1, N, d)


def fused(q, k, v, scale):
    return F.scaled_dot_product_attention(q, k, v, scale=scale)  # (B, 1, N, d)


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 8")
    print("| N | d | explicit ms | fused ms | fused / explicit |\n|---|---|---|---|---|")
    for n, d in ((64, 4), (64, 8), (256, 4), (256, 8), (256, 32), (1024, 4), (1024, 32)):
        q, k, v = (torch.randn(8, 1, n, d, requires_grad=True) for _ in range(3))
        times = {}
        for name, fn in (("explicit", explicit), ("fused", fused)):

            def work(fn=fn, q=q, k=k, v=v):
                fn(q, k, v, 0.1).sum().backward()

            timer = Timer("work()", globals={"work": work})
            times[name] = min(timer.blocked_autorange(min_run_time=0.3).median for _ in range(3))
        ratio = times["fused"] / times["explicit"]
        print(
            f"| {n} | {d} | {times['explicit'] * 1e3:.3f} | {times['fused'] * 1e3:.3f} | {ratio:.2f} |"
        )


if __name__ == "__main__":
    main()
