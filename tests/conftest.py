import os

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny models: their work is dominated by thread start-up
    and, on a shared machine, by threads waiting for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_toy_config():
    """A toy2d config that trains in about a second."""
    from flatgen.config import build_config

    return build_config({
        "data": {"name": "toy2d", "n_train": 512, "n_test": 128},
        "model": {"preset": "mlp2d"},
        "train": {"steps": 12, "batch_size": 32, "warmup_steps": 2, "log_every": 2,
                  "ckpt_every": 5},
    })


@pytest.fixture
def fresh_accelerate():
    """Accelerate's process-wide state reset around a test that builds an Accelerator."""
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
