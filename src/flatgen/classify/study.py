"""The classifier study: methods x seeds, each trained, attacked and measured for sharpness.

Layout of the output directory:
  runs/<method>-s<seed>/result.json     the measurements of one run; done if its fingerprint
                                        (data, model, train, attacks, sharpness, method, seed)
                                        matches the config, else the run is redone
  runs/<method>-s<seed>/checkpoint/     model (and distillation teacher) weights, safetensors
  runs/<method>-s<seed>/error.log       the traceback of a failed run (retried on restart)
  results.json, results.csv, table.md, scatter.png
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import Tensor

from flatgen.classify import report
from flatgen.classify.config import (
    ClassifierStudyConfig,
    DistillationMethod,
    WRMMethod,
    _Method,
)
from flatgen.classify.data import fixed_batch, load_classifier_data
from flatgen.classify.evaluate import (
    TemperatureScaled,
    accuracy,
    robust_accuracies,
    sharpness_measures,
)
from flatgen.classify.models import build_classifier
from flatgen.classify.train import make_accelerator, train_classifier
from flatgen.io import write_json_atomic, write_text_atomic
from flatgen.optim.wrm import classifier_per_sample_loss, wrm_certificate
from flatgen.progress import make_progress
from flatgen.train.checkpoint import save_checkpoint

RESULT = "result.json"
EVAL_STAGES = ("attacks", "lambda_max", "trace", "worst-case", "average-case")


def run_name(method: _Method, seed: int) -> str:
    return f"{method.label}-s{seed}"


def fingerprint(cfg: ClassifierStudyConfig, method: _Method, seed: int) -> str:
    """What a run's numbers depend on; a stored result with another fingerprint is redone."""
    parts = cfg.model_dump(include={"data", "model", "train", "attacks", "sharpness"})
    parts.update(method=method.model_dump(), seed=seed)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _finished(run_dir: Path, key: str) -> dict[str, Any] | None:
    try:
        result = json.loads((run_dir / RESULT).read_text())
    except (OSError, ValueError):
        return None
    return result if result.get("fingerprint") == key else None


@contextmanager
def _threads(n: int | None):
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

    def close(self) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)


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


def run_one(
    cfg: ClassifierStudyConfig,
    method: _Method,
    seed: int,
    *,
    data: tuple[Tensor, Tensor, Tensor, Tensor],
    run_dir: Path,
    bar: _Bar | None = None,
) -> dict[str, Any]:
    """Train one (method, seed), measure it, save its weights; the result dict (also written)."""
    xtr, ytr, xte, yte = data
    xf, yf = fixed_batch(xtr, ytr, cfg.sharpness.n_batch)
    t0 = time.perf_counter()
    torch.manual_seed(seed)  # the same initial weights for every method of a seed
    model = build_classifier(
        _preset(cfg, xtr),
        dropout=method.dropout,
        n_classes=10,  # digits and CIFAR-10
        activation=method.activation if isinstance(method, WRMMethod) else "relu",
        channels=tuple(cfg.model.channels) if cfg.model.channels else None,
        hidden=cfg.model.hidden,
    )
    trained = train_classifier(
        model,
        xtr,
        ytr,
        method=method,
        train=cfg.train,
        seed=seed,
        tick=bar.tick if bar else None,
        accelerator=make_accelerator(cfg.train.cpu),
    )
    model.eval()
    device = next(model.parameters()).device  # evaluate where it trained
    xte, yte, xf, yf = (t.to(device) for t in (xte, yte, xf, yf))
    if bar:
        bar.stage("attacks")
    robust = robust_accuracies(model, xte, yte, spec=cfg.attacks, seed=seed)
    sharp = sharpness_measures(
        model, xf, yf, spec=cfg.sharpness, seed=seed, progress=bar.stage if bar else None
    )
    extra: dict[str, Any] = {"final_train_loss": trained.losses[-1]}
    if isinstance(method, WRMMethod):
        n = cfg.sharpness.n_batch
        rhos = [e**2 for e in cfg.attacks.eps_l2]
        extra["wrm_certificate"] = wrm_checks(model, xte[:n], yte[:n], spec=method, rhos=rhos)
    weights = {"model": model}
    if isinstance(method, DistillationMethod) and trained.teacher is not None:
        teacher = trained.teacher.eval()
        weights["teacher"] = teacher
        extra["teacher_clean"] = accuracy(teacher, xte, yte)
        # the attack on logits / T sees through the saturated softmax of the student at T = 1
        soft = robust_accuracies(
            TemperatureScaled(model, method.temperature),
            xte,
            yte,
            spec=cfg.attacks.model_copy(update={"attacks": ["pgd"]}),
            seed=seed,
        )
        extra["at_temperature"] = {k: v for k, v in soft.items() if k != "clean"}
    save_checkpoint(run_dir / "checkpoint", weights, {"method": method.label, "seed": seed})
    result = {
        "method": method.label,
        "kind": method.method,
        "seed": seed,
        "fingerprint": fingerprint(cfg, method, seed),
        "spec": method.model_dump(),
        "seconds": round(time.perf_counter() - t0, 2),
        "train_seconds": round(trained.seconds, 2),
        "robust": robust,
        "sharpness": sharp,
        "extra": extra,
    }
    write_json_atomic(run_dir / RESULT, result)
    return result


def _preset(cfg: ClassifierStudyConfig, x: Tensor) -> str:
    if cfg.model.preset is not None:
        return cfg.model.preset
    return "cnn-digits" if tuple(x.shape[1:]) == (1, 8, 8) else "cnn-cifar"


def run_classifier_study(
    cfg: ClassifierStudyConfig | dict, out_dir: Path, *, progress: bool = True
) -> dict[str, Any]:
    """Run every (method, seed) not yet done, then write results.json, results.csv, table.md
    and scatter.png into out_dir. Returns a summary with "table_markdown" and "verdict".

    cfg is a ClassifierStudyConfig or its dict (validated here: a bad key raises pydantic's
    ValidationError). A failed run is recorded (error.log) and the others go on.
    """
    if not isinstance(cfg, ClassifierStudyConfig):
        cfg = ClassifierStudyConfig.model_validate(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    console = Console(stderr=True)
    units = [(m, s) for s in cfg.seeds for m in cfg.methods]
    rows, failed, skipped = [], {}, 0
    with _threads(cfg.threads):
        data = load_classifier_data(cfg.data)
        with make_progress(progress) as bars:
            overall = bars.add_task("classifier study", total=len(units)) if bars else None
            for method, seed in units:
                run_dir = out_dir / "runs" / run_name(method, seed)
                done = _finished(run_dir, fingerprint(cfg, method, seed))
                if done is not None:
                    rows.append(done)
                    skipped += 1
                else:
                    bar = _Bar(bars, run_name(method, seed))
                    try:
                        rows.append(run_one(cfg, method, seed, data=data, run_dir=run_dir, bar=bar))
                        (run_dir / "error.log").unlink(missing_ok=True)
                    except KeyboardInterrupt:
                        raise
                    except Exception as err:  # noqa: BLE001 - a failed run must not sink the study
                        failed[run_name(method, seed)] = f"{type(err).__name__}: {err}"
                        write_text_atomic(run_dir / "error.log", traceback.format_exc())
                        console.print(f"[red]{run_name(method, seed)} failed[/red]: {err}")
                    finally:
                        bar.close()
                if bars:
                    bars.advance(overall)
    summary = report.write_outputs(cfg, rows, failed=failed, out_dir=out_dir)
    summary.update(skipped=skipped, wall_seconds=round(time.perf_counter() - t0, 1))
    return summary
