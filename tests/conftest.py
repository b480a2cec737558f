"""Fixtures shared across test folders."""

from pathlib import Path

import pytest

from attnzoo.train import TrainConfig, train


@pytest.fixture(scope="session")
def cbam_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A resnet20 + CBAM run folder trained for one step on tiny embedded data (5 test images
    with importance maps), shared by the tests of the commands that read checkpoints."""
    run = tmp_path_factory.mktemp("cbam_checkpoint") / "run"
    config = TrainConfig(
        model="resnet20",
        attention="cbam",
        data="synthetic",
        data_options={"num_images": 16, "num_test": 5, "clutter": 2},
        image_size=16,
        batch_size=8,
        epochs=1,
        max_steps=1,
        progress="none",
        device="cpu",
    )
    train(config, run)
    return run
