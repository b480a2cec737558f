"""Training engine, checkpoints and run folders; ``attnzoo train`` / ``attnzoo eval``.

``train(TrainConfig(...), out_dir)`` trains one model on one dataset (one process, or many under
``torchrun``); ``evaluate_checkpoint(path)`` measures a saved model. See docs/training.md.
"""

from attnzoo.train.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from attnzoo.train.config import TrainConfig
from attnzoo.train.engine import build_model, evaluate, learning_rate, train
from attnzoo.train.evaluate import evaluate_checkpoint

__all__ = [
    "TrainConfig",
    "build_model",
    "evaluate",
    "evaluate_checkpoint",
    "find_checkpoint",
    "learning_rate",
    "load_checkpoint",
    "save_checkpoint",
    "train",
]

# Importing the submodule attnzoo.train.evaluate rebinds the name `evaluate` on this package to
# that module; the public name is the function.
from attnzoo.train.steps import evaluate  # noqa: F811
