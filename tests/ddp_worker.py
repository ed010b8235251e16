"""One rank of the DDP test in test_step.py: train_step under DDP (gloo, CPU) via Accelerate.

Run with RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT set:
    python tests/ddp_worker.py OUT_DIR
Each scenario trains the same tiny model on this rank's share of the data and saves the final
parameters to OUT_DIR/{scenario}_rank{rank}.safetensors. The test imports this module for the
single-process references, so model, data and optimizers are defined once, here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from torch import Tensor, nn

from flatgen.optim import SAM, LookSAM
from flatgen.train.step import train_step

WORLD = 2
STEPS = 3
MICRO = 2  # micro-batches per step
PER_RANK = 4  # examples per micro-batch and rank
RHO = 0.2
LR = 0.1
SCENARIOS = {  # name: (optimizer, sync_perturbation, rank whose ascent overflows at step 0)
    "sgd": ("sgd", False, None),
    "sam": ("sam", False, None),
    "sam_sync": ("sam", True, None),
    "looksam": ("looksam", False, None),  # LookSAM all-reduces its ascent pass by itself
    "sam_overflow": ("sam", False, 1),  # fp16 loss scaling; every replica must skip step 0
}


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).double()


def make_optimizer(kind: str, model: nn.Module) -> torch.optim.Optimizer:
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    if kind == "sam":
        return SAM(model.parameters(), torch.optim.SGD, rho=RHO, lr=LR, momentum=0.9)
    if kind == "looksam":
        return LookSAM(model.parameters(), torch.optim.SGD, rho=RHO, k=2, alpha=0.5, lr=LR)
    raise ValueError(kind)


def data(step: int) -> tuple[Tensor, Tensor]:
    """(x, y) of one step for all ranks: shapes (MICRO, WORLD * PER_RANK, 3) and (..., 1)."""
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(MICRO, WORLD * PER_RANK, 3, generator=g, dtype=torch.float64)
    y = torch.sin(3 * x.sum(-1, keepdim=True)) + 0.1 * torch.randn(
        MICRO, WORLD * PER_RANK, 1, generator=g, dtype=torch.float64
    )
    return x, y


def micro_batches(step: int, rank: int | None) -> list[tuple[Tensor, Tensor]]:
    """This rank's micro-batches, or the global ones (all ranks concatenated) for rank=None."""
    x, y = data(step)
    if rank is not None:
        x, y = (t[:, rank * PER_RANK : (rank + 1) * PER_RANK] for t in (x, y))
    return list(zip(x, y, strict=True))


def loss_fn(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    x, y = batch
    return (model(x) - y).pow(2).mean()


def run(scenario: str, accelerator, rank: int | None) -> dict[str, Tensor]:
    """Train one scenario; rank=None trains a single process on the global batches.

    Returns the final parameters, with the loss scale under "scale" where there is one.
    """
    kind, sync, overflow_rank = SCENARIOS[scenario]
    model = make_model()
    model, opt = accelerator.prepare(model, make_optimizer(kind, model))
    scaler = accelerator.scaler = (
        None if overflow_rank is None else torch.amp.GradScaler("cpu", init_scale=2.0**10)
    )
    for step in range(STEPS):
        fn = loss_fn
        if step == 0 and overflow_rank is not None and rank == overflow_rank:
            fn = overflowing_once()
        train_step(model, opt, micro_batches(step, rank), loss_fn=fn, accelerator=accelerator,
                   sync_perturbation=sync)
    accelerator.scaler = None
    state = dict(accelerator.unwrap_model(model).state_dict())
    if scaler is not None:
        state["scale"] = torch.tensor(scaler.get_scale())
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def overflowing_once():
    """loss_fn whose first call gives an infinite loss."""
    calls = 0

    def fn(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        nonlocal calls
        calls += 1
        return loss_fn(model, batch) * (float("inf") if calls == 1 else 1.0)

    return fn


def main(out: Path) -> None:
    from accelerate import Accelerator
    from safetensors.torch import save_file

    accelerator = Accelerator(cpu=True)
    assert accelerator.num_processes == WORLD, accelerator.state
    rank = accelerator.process_index
    for name in SCENARIOS:
        save_file(run(name, accelerator, rank), str(out / f"{name}_rank{rank}.safetensors"))
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    # results are saved and the group destroyed; skip interpreter teardown, where torch's gloo
    # threads occasionally abort ("terminate called without an active exception", seen once in CI)
    sys.stdout.flush()
    os._exit(0)
