"""The DRO-game comparison: game vs minimum-Wasserstein vs WGAN-GP vs the non-saturating GAN,
the same generator and budget.

For every dataset x method x seed: train for train.iters generator iterations, log exact W2
between G(z_eval) (fixed latents) and held-out data every eval_every iterations, then measure
W2 to a shifted test set (noise + translation). Stability (seed-to-seed spread, oscillation of
W2 over the last half) and the defenders' realized transport cost against their radius are
summarized in dro.summary. Writes results.json, table.md, table.csv, config.yaml and plots.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor

from flatgen.dro.baselines import NSGAN, WGANGP, min_wasserstein
from flatgen.dro.config import DatasetConfig, DROExperimentConfig, ShiftConfig
from flatgen.dro.game import DROGame
from flatgen.dro.nets import (
    AutoEncoder,
    MLPCritic,
    MLPGenerator,
    calibrated_features,
    train_autoencoder,
)
from flatgen.dro.plots import plot_image_grids, plot_samples_2d, plot_w2_curves
from flatgen.dro.summary import (
    TABLE_COLUMNS,
    format_markdown,
    summarize,
    table_rows,
    w2_oscillation,
)
from flatgen.dro.transport import OTDistance, exact_w2
from flatgen.io import write_text_atomic
from flatgen.progress import make_progress

# fixed seeds for data draws, so "seed" varies only initialization and training randomness
TRAIN_SEED, TEST_SEED, SHIFT_SEED, REFERENCE_SEED = 1000, 2000, 3000, 4000


@dataclass
class ExperimentData:
    """Flattened train / held-out / shifted held-out data for one dataset."""

    label: str
    train: Tensor
    test: Tensor
    shifted: Tensor
    image_shape: tuple[int, ...] | None


def shift_data(
    x: Tensor, shift: ShiftConfig, image_shape: tuple[int, ...] | None, *, seed: int = SHIFT_SEED
) -> Tensor:
    """x (flattened) translated (pixels for images, then a constant offset) plus Gaussian noise."""
    out = x.clone()
    p = shift.translate_pixels
    if p:
        if image_shape is None:
            raise ValueError("translate_pixels needs image data")
        imgs = out.view(-1, *image_shape)
        moved = torch.full_like(imgs, -1.0)  # digits background is -1
        moved[..., p:, p:] = imgs[..., :-p, :-p]
        out = moved.flatten(1)
    out = out + shift.translate / math.sqrt(out.shape[1])
    gen = torch.Generator().manual_seed(seed)
    return out + shift.noise_std * torch.randn(out.shape, generator=gen)


def load_experiment_data(ds: DatasetConfig, shift: ShiftConfig) -> ExperimentData:
    """Train and held-out sets (fixed across seeds) and the shifted held-out set."""
    from flatgen.data import load_digits_split, sample_toy2d

    if ds.kind == "toy2d":
        train = sample_toy2d(ds.name, ds.n_train, seed=TRAIN_SEED)
        test = sample_toy2d(ds.name, ds.n_test, seed=TEST_SEED)
        image_shape = None
    else:
        train_imgs, _ = load_digits_split("train")
        test_imgs, _ = load_digits_split("test")
        image_shape = tuple(train_imgs.shape[1:])
        train, test = train_imgs.flatten(1), test_imgs.flatten(1)
    return ExperimentData(ds.label, train, test, shift_data(test, shift, image_shape), image_shape)


def _build_trainer(
    cfg: DROExperimentConfig,
    method: str,
    data: ExperimentData,
    *,
    generator: MLPGenerator,
    seed: int,
) -> Any:
    latent, tr, dim = cfg.generator.latent_dim, cfg.train, data.train.shape[1]
    if method == "wgan_gp":
        w = cfg.wgan_gp
        critic = MLPCritic(dim, hidden=w.hidden, depth=w.depth)
        return WGANGP(
            generator,
            critic,
            latent,
            n_critic=w.n_critic,
            gp_weight=w.gp_weight,
            lr=w.lr or tr.lr,
            betas=w.betas,
            seed=seed,
        )
    if method == "ns_gan":
        n = cfg.ns_gan
        disc = MLPCritic(dim, hidden=n.hidden, depth=n.depth)
        return NSGAN(
            generator, disc, latent, n_disc=n.n_disc, lr=n.lr or tr.lr, betas=n.betas, seed=seed
        )
    o = cfg.ot
    ot = OTDistance(
        o.solver,
        reg=o.sinkhorn_reg,
        sinkhorn_iters=o.sinkhorn_iters,
        n_projections=o.n_projections,
        seed=seed,
    )
    if method == "minw":
        return min_wasserstein(generator, latent, ot=ot, lr=tr.lr, betas=tr.betas, seed=seed)
    g, encoder = cfg.game, None
    if g.feature_space:
        e = cfg.encoder
        ae = AutoEncoder(
            dim, latent_dim=e.latent_dim, hidden=e.hidden, depth=e.depth, activation=e.activation
        )
        gen = torch.Generator().manual_seed(seed)
        train_autoencoder(
            ae, data.train, steps=e.pretrain_steps, batch_size=e.batch_size, lr=e.lr, generator=gen
        )
        encoder = calibrated_features(ae, data.train)
    return DROGame(
        generator,
        latent,
        gamma=g.gamma,
        steps=g.steps,
        step_size=g.step_size,
        ot=ot,
        encoder=encoder,
        lr=tr.lr,
        betas=tr.betas,
        seed=seed,
        radius=g.radius,
        dual_lr=g.dual_lr,
    )


def _defenders(trainer: Any, stats_log: list[dict]) -> dict[str, Any] | None:
    """The defenders' radius, realized transport cost (mean over the last half) and final gamma."""
    if not isinstance(trainer, DROGame) or trainer.steps == 0:
        return None
    half = stats_log[len(stats_log) // 2 :]
    return {
        "radius": trainer.radius,
        "cost_last_half": float(np.mean([s["defender_cost"] for s in half])),
        "gamma_final": trainer.gamma,
    }


def run_single(
    cfg: DROExperimentConfig,
    data: ExperimentData,
    method: str,
    *,
    seed: int,
    on_iter: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Train one method with one seed; returns the W2 curve, final and shifted W2, samples."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    dim, tr = data.train.shape[1], cfg.train
    # built first so every method starts from the same generator for a given seed
    gc = cfg.generator
    generator = MLPGenerator(
        gc.latent_dim,
        dim,
        hidden=gc.hidden,
        depth=gc.depth,
        tanh=data.image_shape is not None,
        activation=gc.activation,
    )
    trainer = _build_trainer(cfg, method, data, generator=generator, seed=seed)
    batch_rng = torch.Generator().manual_seed(seed)
    z_eval = torch.randn(
        tr.n_eval, cfg.generator.latent_dim, generator=torch.Generator().manual_seed(10_000 + seed)
    )

    def draw_real() -> Tensor:
        return data.train[torch.randint(len(data.train), (tr.batch_size,), generator=batch_rng)]

    def evaluate() -> tuple[float, Tensor]:
        with torch.no_grad():
            samples = generator(z_eval)
        return exact_w2(samples, data.test), samples

    w2, _ = evaluate()
    iters, curve, stats_log = [0], [w2], []
    for it in range(1, tr.iters + 1):
        stats_log.append(trainer.step(draw_real))
        if it % tr.eval_every == 0 or it == tr.iters:
            w2, samples = evaluate()
            iters.append(it)
            curve.append(w2)
        if on_iter is not None:
            on_iter(it)
    tail = stats_log[-max(1, len(stats_log) // 10) :]
    stats = {k: float(np.mean([s[k] for s in tail])) for k in tail[0]}
    osc = w2_oscillation(iters, curve)
    return {
        "method": method,
        "seed": seed,
        "iters": iters,
        "w2": curve,
        "final_w2": curve[-1],
        "shifted_w2": exact_w2(samples, data.shifted),
        "wall_s": time.perf_counter() - start,
        "train_stats_last10pct": stats,
        "w2_oscillation": osc["mean_abs_diff"],
        "w2_total_variation": osc["total_variation"],
        "defenders": _defenders(trainer, stats_log),
        "samples": samples.numpy(),
    }


def _plot_samples(data: ExperimentData, samples: dict[str, np.ndarray], path: Path, seed: int):
    n = min(len(data.test), *(len(s) for s in samples.values()))
    panels = {"held-out data": data.test[:n].numpy(), **{m: s[:n] for m, s in samples.items()}}
    title = f"{data.label}: samples after training (seed {seed})"
    if data.image_shape is None:
        plot_samples_2d(panels, path, title)
    else:
        h, w = data.image_shape[-2:]
        plot_image_grids({k: v.reshape(-1, h, w) for k, v in panels.items()}, path, title)


def run_dro_experiment(cfg: dict, out_dir: Path, *, progress: bool = True) -> dict:
    """Validate cfg (DROExperimentConfig), run every dataset x method x seed, write outputs.

    Returns the summary: per dataset and method the statistics over seeds, the table (rows and
    markdown) and the written files. results.json holds the same plus every W2 curve.
    """
    config = (
        cfg if isinstance(cfg, DROExperimentConfig) else DROExperimentConfig.model_validate(cfg)
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    resolved = config.model_dump(mode="json")
    write_text_atomic(out_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))

    prev_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    n_runs = len(config.datasets) * len(config.methods) * len(config.seeds)
    datasets: dict[str, dict] = {}
    files = ["config.yaml"]
    try:
        with make_progress(progress, transient=True) as bar:
            overall = bar and bar.add_task("DRO experiment runs", total=n_runs)
            for ds in config.datasets:
                data = load_experiment_data(ds, config.shift)
                ref_idx = torch.randperm(
                    len(data.train), generator=torch.Generator().manual_seed(REFERENCE_SEED)
                )[: config.train.n_eval]
                reference = {
                    "w2": exact_w2(data.train[ref_idx], data.test),
                    "shifted_w2": exact_w2(data.train[ref_idx], data.shifted),
                    "n": len(ref_idx),
                }
                runs: dict[str, list[dict]] = {}
                first_samples: dict[str, np.ndarray] = {}
                for method in config.methods:
                    for seed in config.seeds:
                        task = bar and bar.add_task(
                            f"{data.label} {method} seed {seed}", total=config.train.iters
                        )
                        on_iter = bar and (lambda i, t=task: bar.update(t, completed=i))
                        r = run_single(config, data, method, seed=seed, on_iter=on_iter)
                        if bar is not None:
                            bar.remove_task(task)
                            bar.advance(overall)
                        first_samples.setdefault(method, r.pop("samples"))
                        runs.setdefault(method, []).append(r)
                summary, threshold = summarize(runs, config.converge_fraction)
                datasets[data.label] = {
                    "reference": reference,
                    "threshold": threshold,
                    "summary": summary,
                    "runs": runs,
                }
                sample_png = f"samples_{data.label}.png"
                _plot_samples(data, first_samples, out_dir / sample_png, config.seeds[0])
                files.append(sample_png)
    finally:
        torch.set_num_threads(prev_threads)

    plot_w2_curves(
        {
            label: {
                "reference": d["reference"]["w2"],
                "methods": {
                    m: {"iters": rs[0]["iters"], "w2": [r["w2"] for r in rs]}
                    for m, rs in d["runs"].items()
                },
            }
            for label, d in datasets.items()
        },
        out_dir / "w2_curves.png",
    )
    rows = table_rows(datasets)
    markdown = format_markdown(rows)
    write_text_atomic(out_dir / "table.md", markdown)
    buf = io.StringIO()
    csv.writer(buf).writerows([TABLE_COLUMNS, *rows])
    write_text_atomic(out_dir / "table.csv", buf.getvalue())
    files += ["w2_curves.png", "table.md", "table.csv", "results.json"]

    summary = {
        "name": config.name,
        "out_dir": str(out_dir),
        "files": files,
        "datasets": {
            label: {k: d[k] for k in ("reference", "threshold", "summary")}
            for label, d in datasets.items()
        },
        "table": {"columns": TABLE_COLUMNS, "rows": rows},
        "table_markdown": markdown,
    }
    results = {
        **summary,
        "config": resolved,
        "runs": {label: d["runs"] for label, d in datasets.items()},
    }
    write_text_atomic(out_dir / "results.json", json.dumps(results, indent=1))
    return summary
