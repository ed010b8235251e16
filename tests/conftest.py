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


@pytest.fixture(scope="session")
def random_inception_file(tmp_path_factory):
    """(path, net): the FID Inception architecture with random weights, saved as safetensors
    (the tests of Inception FID and of the ladders' score share it)."""
    from safetensors.torch import save_file

    from flatgen.metrics.inception import _fidelity_module, _local_weights

    module = _fidelity_module()
    cls = module.FeatureExtractorInceptionV3
    original = cls.load_state_dict
    cls.load_state_dict = lambda self, state, *a, **k: None  # keep the random initialisation
    try:
        with _local_weights(module, {}):
            torch.manual_seed(0)
            net = cls("inception-v3-compat", ["2048"])
    finally:
        cls.load_state_dict = original
    path = tmp_path_factory.mktemp("inception") / "random_inception.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path, net
