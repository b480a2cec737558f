"""Run ``attnzoo bench`` where torchvision's build does not match torch's (this CPU machine).

pytorch-grad-cam imports torchvision; on this machine ``import torchvision`` fails ("operator
torchvision::nms does not exist": a CUDA torchvision wheel beside a CPU torch), so the bench
would report the Grad-CAM rows as ``n/a: pytorch-grad-cam unavailable (...)``. This launcher
first declares the two missing operator schemas (``tests/_vision_imports.py``, the same shim the
tests use; the ResNets here never call those operators), then runs the bench unchanged. The
declaration is at import time, so the bench's spawned worker processes (``--jobs``), which
re-import this file, get it too. With matching builds, plain ``attnzoo bench`` needs none of
this.

    python benchmarks/bench_gradcam.py --out benchmarks/results/leaderboard_cpu [bench flags]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _vision_imports import import_torchvision

import_torchvision()

if __name__ == "__main__":
    from attnzoo.cli import main

    sys.exit(main(["bench", *sys.argv[1:]]))
