"""One classifier run of a study: train it and save its weights, then measure it from them.

What the study engine (flatgen.study, kind "classifier") keeps in a run directory:
  runs/<method>-s<seed>/config.json    what the run was trained with (data, model, train,
                                       method, seed); another config is refused
  runs/<method>-s<seed>/checkpoint/    model (and distillation teacher) weights, safetensors
  runs/<method>-s<seed>/train.json     written last by training: the run is trained
  runs/<method>-s<seed>/result.json    the measurements (written by the engine)
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from flatgen.classify.config import (
    ClassifierStudyConfig,
    DistillationMethod,
    WRMMethod,
    _Method,
)
from flatgen.classify.data import fixed_batch
from flatgen.classify.evaluate import (
    TemperatureScaled,
    accuracy,
    robust_accuracies,
    sharpness_measures,
)
from flatgen.classify.models import apply_spectral_norm, build_classifier, classifier_preset_for
from flatgen.classify.train import train_classifier
from flatgen.io import write_json_atomic
from flatgen.optim.wrm import classifier_per_sample_loss, wrm_certificate
from flatgen.progress import make_progress
from flatgen.train.checkpoint import load_weights, save_checkpoint
from flatgen.train.schedule import make_accelerator

TRAINED = "train.json"
EVAL_STAGES = ("attacks", "lambda_max", "trace", "worst-case", "average-case")
Data = tuple[Tensor, Tensor, Tensor, Tensor]


def run_name(method: _Method, seed: int) -> str:
    return f"{method.label}-s{seed}"


def fingerprint(cfg: ClassifierStudyConfig, method: _Method, seed: int) -> str:
    """A hash of what a run's numbers depend on (data, model, train, attacks, sharpness,
    method, seed), kept in each result."""
    parts = cfg.model_dump(include={"data", "model", "train", "attacks", "sharpness"})
    parts.update(method=method.model_dump(), seed=seed)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class _Bar:
    """One rich bar per run: training steps per phase, then the evaluation stages."""

    def __init__(self, progress: Any, name: str) -> None:
        self.progress, self.name = progress, name
        self.task = progress.add_task(name, total=None) if progress is not None else None

    def tick(self, phase: str, done: int, total: int) -> None:
        if self.task is not None:
            self.progress.update(
                self.task, description=f"{self.name} {phase}", completed=done, total=total
            )

    def stage(self, name: str) -> None:
        self.tick(f"eval: {name}", EVAL_STAGES.index(name) + 1, len(EVAL_STAGES))


@contextmanager
def run_bar(name: str, *, progress: bool) -> Iterator[_Bar]:
    with make_progress(progress) as bars:
        yield _Bar(bars, name)


def wrm_checks(
    model: torch.nn.Module, x: Tensor, y: Tensor, *, spec: WRMMethod, rhos: list[float]
) -> dict[str, Any]:
    """The WRM certificate on (x, y), with its convergence and smoothness checks and label.

    rhos are the squared L2 attack radii: a per-sample L2 ball of radius eps lies inside the
    Wasserstein ball E||x - x0||^2 <= eps^2, so each bound also covers that L2 attack (without
    the [0, 1] box, which only shrinks the attack's set).
    """
    cert = wrm_certificate(
        classifier_per_sample_loss(model, y),
        x,
        spec.gamma,
        rhos=rhos,
        steps=spec.certificate_steps,
        step_size=spec.step_size,
        grad_tol=spec.grad_tol,
    )
    return cert.to_dict()


def _preset(cfg: ClassifierStudyConfig, x: Tensor) -> str:
    if cfg.model.preset is not None:
        return cfg.model.preset
    return classifier_preset_for(tuple(x.shape[1:]))


def new_model(cfg: ClassifierStudyConfig, method: _Method, *, x: Tensor, seed: int) -> nn.Module:
    """The untrained network of (method, seed): the same initial weights for every method."""
    torch.manual_seed(seed)
    return build_classifier(
        _preset(cfg, x),
        dropout=method.dropout,
        n_classes=10,  # digits and CIFAR-10
        activation=method.activation if isinstance(method, WRMMethod) else "relu",
        channels=tuple(cfg.model.channels) if cfg.model.channels else None,
        hidden=cfg.model.hidden,
    )


def is_trained(run_dir: Path) -> bool:
    return (run_dir / TRAINED).is_file()


def train_run(
    cfg: ClassifierStudyConfig, method: _Method, seed: int, *, data: Data, run_dir: Path,
    bar: _Bar | None = None,
) -> dict[str, Any]:
    """Train one (method, seed) and save its weights into run_dir; what train.json holds."""
    xtr, ytr, _, _ = data
    model = new_model(cfg, method, x=xtr, seed=seed)
    trained = train_classifier(
        model, xtr, ytr, method=method, train=cfg.train, seed=seed,
        tick=bar.tick if bar else None, accelerator=make_accelerator(cpu=cfg.train.cpu),
    )
    weights = {"model": model}
    if trained.teacher is not None:
        weights["teacher"] = trained.teacher
    save_checkpoint(run_dir / "checkpoint", weights, {"method": method.label, "seed": seed})
    info = {"final_train_loss": trained.losses[-1], "train_seconds": round(trained.seconds, 2),
            "steps": len(trained.losses), "teacher_steps": len(trained.teacher_losses)}
    write_json_atomic(run_dir / TRAINED, info)
    return info


def load_run(
    cfg: ClassifierStudyConfig, method: _Method, seed: int, *, x: Tensor, run_dir: Path
) -> dict[str, nn.Module]:
    """The saved networks of a trained run (model, and teacher for distillation), in eval mode."""
    out = {}
    names = ("model", "teacher") if isinstance(method, DistillationMethod) else ("model",)
    for name in names:
        net = new_model(cfg, method, x=x, seed=seed)
        if method.spectral_norm:  # the parametrization must exist before its weights load
            apply_spectral_norm(net)
        net.load_state_dict(load_weights(run_dir / "checkpoint", name))
        out[name] = net.eval()
    return out


def measure_run(
    cfg: ClassifierStudyConfig, method: _Method, seed: int, *, data: Data, run_dir: Path,
    bar: _Bar | None = None,
) -> dict[str, Any]:
    """Clean and robust accuracy, sharpness (and the WRM certificate, distillation's teacher
    and its attack at T) of a trained run; the result record."""
    t0 = time.perf_counter()
    xtr, ytr, xte, yte = data
    xf, yf = fixed_batch(xtr, ytr, cfg.sharpness.n_batch)
    info = json.loads((run_dir / TRAINED).read_text())
    device = make_accelerator(cpu=cfg.train.cpu).device  # measure where it trained
    nets = {k: v.to(device) for k, v in load_run(cfg, method, seed, x=xtr, run_dir=run_dir).items()}
    model = nets["model"]
    xte, yte, xf, yf = (t.to(device) for t in (xte, yte, xf, yf))
    if bar:
        bar.stage("attacks")
    robust = robust_accuracies(model, xte, yte, spec=cfg.attacks, seed=seed)
    sharp = sharpness_measures(
        model, xf, yf, spec=cfg.sharpness, seed=seed, progress=bar.stage if bar else None
    )
    extra: dict[str, Any] = {"final_train_loss": info["final_train_loss"]}
    if isinstance(method, WRMMethod):
        n = cfg.sharpness.n_batch
        rhos = [e**2 for e in cfg.attacks.eps_l2]
        extra["wrm_certificate"] = wrm_checks(model, xte[:n], yte[:n], spec=method, rhos=rhos)
    if "teacher" in nets:
        extra["teacher_clean"] = accuracy(nets["teacher"], xte, yte)
        # the attack on logits / T sees through the saturated softmax of the student at T = 1
        soft = robust_accuracies(
            TemperatureScaled(model, method.temperature), xte, yte,
            spec=cfg.attacks.model_copy(update={"attacks": ["pgd"]}), seed=seed,
        )
        extra["at_temperature"] = {k: v for k, v in soft.items() if k != "clean"}
    return {
        "method": method.label,
        "kind": method.method,
        "seed": seed,
        "fingerprint": fingerprint(cfg, method, seed),
        "spec": method.model_dump(),
        "seconds": round(info["train_seconds"] + time.perf_counter() - t0, 2),
        "train_seconds": info["train_seconds"],
        "robust": robust,
        "sharpness": sharp,
        "extra": extra,
    }
