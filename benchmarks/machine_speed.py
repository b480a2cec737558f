"""How fast this machine is right now, on the reference loop of the project's machine notes.

The notes give ResNet-20 at 16 px, batch 64, one thread: about 1,000 training images/s on the
2-core CPU. Wall times of a leaderboard on a shared machine drift by 10-30% from hour to hour;
run this before and after a timed run and report its images/s beside the wall time, so that a
time can be read against the machine's speed at that moment:

    OMP_NUM_THREADS=1 python benchmarks/machine_speed.py
"""

import time

import torch
import torch.nn.functional as F

from attnzoo import models


def main(seconds: float = 20.0) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = models.create("resnet20", num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images, labels = torch.randn(64, 3, 16, 16), torch.randint(0, 10, (64,))

    def step() -> None:
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    for _ in range(5):
        step()
    rates = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        for _ in range(10):
            step()
        rates.append(640 / (time.perf_counter() - start))
    rates.sort()
    print(
        f"ResNet-20, 16 px, batch 64, 1 thread: {rates[len(rates) // 2]:.0f} training images/s "
        f"(median of {len(rates)} blocks of 10 steps; best {rates[-1]:.0f})"
    )


if __name__ == "__main__":
    main()
