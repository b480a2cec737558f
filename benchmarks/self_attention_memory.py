"""Peak memory and time of forward+backward: attnzoo's self-attention modules vs naive forms.

Not a test. Run once, on an otherwise idle CPU if possible:

    .venv/bin/python benchmarks/self_attention_memory.py [--sizes 32 64 128] [--threads 1]

Writes benchmarks/results/self_attention_memory.{json,md}.

Cases: ``nonlocal`` (embedded Gaussian, 2x2 sub-sampling), ``pam``, ``cca`` (R = 2) and
``apnb`` at C = 64, batch 1, square maps. Each runs once as the library module and once as a
naive re-implementation that uses the *same module's weights* but materialises the attention
matrix the way the usual implementations do:
- nonlocal, pam: the explicit N×N' (N×N) softmax matrix (official-code form);
- cca: dense N×N attention with a criss-cross mask (−inf off the row/column, centre once);
- apnb: the explicit N×S softmax matrix of the official code (S = 110 anchors; ANN is already
  asymmetric, so its naive form is not quadratic and the ratio is expected to stay near 1).
Before measuring, the script checks at 12×12 that each naive form gives the library's output.

Memory method: every (module, size, implementation) case runs in a fresh Python subprocess.
After building the module and input and a warm-up pass at 8×8 (so that one-off lazy
initialisation is not counted), and right before the measured pass, the subprocess writes "5"
to /proc/self/clear_refs, which resets the kernel's peak-RSS counter (VmHWM) to the current
RSS; after one forward+backward it reads VmHWM. Peak memory = VmHWM − VmRSS(before): the
extra resident memory the pass needed (activations, attention matrices, gradients), as the
kernel saw it. glibc returns large blocks to the OS on free, so freed intermediates do not
linger. Time: the measured pass, plus repeats (best of) while the total stays under ~4 s.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

import attnzoo

CHANNELS = 64
MODULES = ("nonlocal", "pam", "cca", "apnb")
RESULTS = Path(__file__).parent / "results"


def _rss_kib() -> dict[str, int]:
    status = Path("/proc/self/status").read_text()
    return {k: int(re.search(rf"{k}:\s+(\d+)", status).group(1)) for k in ("VmRSS", "VmHWM")}


# --- naive forms (same weights as the library module) -----------------------------------------


def naive_nonlocal(m, x: torch.Tensor) -> torch.Tensor:
    b, _, h, w = x.shape
    theta = m.theta(x).flatten(2).transpose(1, 2)  # (B, N, d)
    phi = m.pool(m.phi(x)).flatten(2)  # (B, d, N')
    g = m.pool(m.g(x)).flatten(2).transpose(1, 2)  # (B, N', d)
    attn = torch.softmax(theta @ phi * m.inner**-0.5, dim=-1)  # (B, N, N') materialised
    y = (attn @ g).transpose(1, 2).reshape(b, m.inner, h, w)  # (B, d, H, W)
    return x + m.out_norm(m.out_conv(y))


def naive_pam(m, x: torch.Tensor) -> torch.Tensor:
    q = m.query(x).flatten(2).transpose(1, 2)  # (B, N, d)
    k = m.key(x).flatten(2)  # (B, d, N)
    v = m.value(x).flatten(2)  # (B, C, N)
    attn = torch.softmax(q @ k, dim=-1)  # (B, N, N) materialised
    return m.gamma * (v @ attn.transpose(1, 2)).view_as(x) + x


def naive_cca(m, x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[2:]
    rows = torch.arange(h).repeat_interleave(w)  # (N,)
    cols = torch.arange(w).repeat(h)  # (N,)
    off_cross = (rows[:, None] != rows[None, :]) & (cols[:, None] != cols[None, :])  # (N, N)
    for _ in range(m.recurrence):
        q = m.query(x).flatten(2).transpose(1, 2)  # (B, N, d)
        k = m.key(x).flatten(2)  # (B, d, N)
        v = m.value(x).flatten(2)  # (B, C, N)
        logits = (q @ k).masked_fill(off_cross, float("-inf"))  # (B, N, N) materialised
        out = v @ torch.softmax(logits, dim=-1).transpose(1, 2)  # (B, C, N)
        x = x + m.gamma * out.view_as(x)
    return x


def naive_apnb(m, x: torch.Tensor) -> torch.Tensor:
    from attnzoo.modules.ann import pyramid_pool

    embedded = m.query_key(x)  # (B, d, H, W)
    q = embedded.flatten(2).transpose(1, 2)  # (B, N, d)
    k = pyramid_pool(embedded, m.pool_sizes).flatten(2)  # (B, d, S)
    v = pyramid_pool(m.value(x), m.pool_sizes).flatten(2).transpose(1, 2)  # (B, S, dv)
    attn = torch.softmax(q @ k * m.key_channels**-0.5, dim=-1)  # (B, N, S) materialised
    context = (attn @ v).transpose(1, 2).reshape(x.shape[0], -1, *x.shape[2:])  # (B, dv, H, W)
    return m.fuse(torch.cat([m.out_conv(context), x], dim=1))


NAIVE = {"nonlocal": naive_nonlocal, "pam": naive_pam, "cca": naive_cca, "apnb": naive_apnb}


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    module = attnzoo.create(name, CHANNELS).train()
    with torch.no_grad():  # non-zero residual scales so that every path does real work
        for pname, p in module.named_parameters():
            if pname == "gamma" or pname.endswith("out_norm.weight") or "out_conv" in pname:
                p.normal_(0, 0.1)
    return module


def run_case(name: str, size: int, impl: str, threads: int) -> dict[str, float]:
    """Runs in the subprocess: one measured forward+backward, then timing repeats."""
    torch.set_num_threads(threads)
    module = build(name)
    forward = module if impl == "attnzoo" else (lambda t: NAIVE[name](module, t))
    # warm-up at 8×8: one-off lazy initialisation (kernels, autograd engine) is not counted
    forward(torch.randn(1, CHANNELS, 8, 8, requires_grad=True)).sum().backward()
    module.zero_grad(set_to_none=True)
    x = torch.randn(1, CHANNELS, size, size, requires_grad=True)
    before = _rss_kib()["VmRSS"]
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS counter
    start = time.perf_counter()
    forward(x).square().mean().backward()
    times = [time.perf_counter() - start]
    peak = _rss_kib()["VmHWM"]
    while sum(times) < 4.0 and len(times) < 5:
        module.zero_grad(set_to_none=True)
        x.grad = None
        start = time.perf_counter()
        forward(x).square().mean().backward()
        times.append(time.perf_counter() - start)
    return {"peak_mib": (peak - before) / 1024, "time_s": min(times), "runs": len(times)}


def check_naive_forms() -> None:
    for name in MODULES:
        module = build(name).eval()
        x = torch.randn(1, CHANNELS, 12, 12)
        with torch.no_grad():
            torch.testing.assert_close(NAIVE[name](module, x), module(x), rtol=1e-4, atol=1e-4)


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def to_markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# Self-attention memory: attnzoo vs naive (forward+backward, CPU)",
        "",
        f"Command: `{meta['command']}`  ",
        f"torch {meta['torch']}, {meta['cpu']}, {meta['threads']} thread(s), C = {CHANNELS}, "
        "batch 1, float32, training mode.  ",
        "Peak = extra resident memory of one forward+backward (VmHWM reset via "
        "/proc/self/clear_refs in a fresh subprocess per case). Time = best of the runs.",
        "",
        "| module | H×W | N | attnzoo peak MiB | naive peak MiB | attnzoo / naive | "
        "attnzoo time s | naive time s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['module']} | {r['size']}×{r['size']} | {r['size'] ** 2} | "
            f"{r['attnzoo']['peak_mib']:.1f} | {r['naive']['peak_mib']:.1f} | "
            f"{100 * r['attnzoo']['peak_mib'] / r['naive']['peak_mib']:.1f}% | "
            f"{r['attnzoo']['time_s']:.3f} | {r['naive']['time_s']:.3f} |"
        )
    lines += [
        "",
        "Naive forms: nonlocal and pam materialise the N×N' / N×N softmax matrix (official "
        "code); cca is dense N×N attention with a criss-cross mask; apnb is the official "
        "explicit N×S (S = 110) matrix, not quadratic, so no large gap is expected there.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--case", nargs=3, metavar=("MODULE", "SIZE", "IMPL"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.case:
        name, size, impl = args.case
        print(json.dumps(run_case(name, int(size), impl, args.threads)))
        return
    check_naive_forms()
    rows = []
    for name in MODULES:
        for size in args.sizes:
            row: dict = {"module": name, "size": size}
            for impl in ("attnzoo", "naive"):
                cmd = [sys.executable, __file__, "--threads", str(args.threads)]
                cmd += ["--case", name, str(size), impl]
                done = subprocess.run(cmd, capture_output=True, text=True, check=True)
                row[impl] = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"{name:9s} {size:4d}  attnzoo {row['attnzoo']['peak_mib']:9.1f} MiB "
                f"{row['attnzoo']['time_s']:7.3f} s   naive {row['naive']['peak_mib']:9.1f} MiB "
                f"{row['naive']['time_s']:7.3f} s",
                flush=True,
            )
            rows.append(row)
    meta = {
        "command": "python benchmarks/self_attention_memory.py " + " ".join(sys.argv[1:]),
        "torch": torch.__version__,
        "cpu": _cpu_name(),
        "threads": args.threads,
        "channels": CHANNELS,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "self_attention_memory.json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n"
    )
    (RESULTS / "self_attention_memory.md").write_text(to_markdown(rows, meta))
    print(to_markdown(rows, meta))


if __name__ == "__main__":
    main()
