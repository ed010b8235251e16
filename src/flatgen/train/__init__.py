"""Training: the Accelerate loop, the Method hook, checkpoints, and reading runs back."""

from flatgen.train.checkpoint import find_checkpoint, load_trainer_state, load_weights, save_checkpoint
from flatgen.train.loop import RunDirError, TrainResult, train
from flatgen.train.method import Method
from flatgen.train.run import WEIGHTS_CHOICES, Run, RunNotFoundError, load_run

__all__ = [
    "Method",
    "Run",
    "RunDirError",
    "RunNotFoundError",
    "TrainResult",
    "WEIGHTS_CHOICES",
    "find_checkpoint",
    "load_run",
    "load_trainer_state",
    "load_weights",
    "save_checkpoint",
    "train",
]
