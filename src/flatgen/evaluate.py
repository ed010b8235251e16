"""Sample quality of a trained run: W2 (and digits-FID / KID on digits) per weights, sampler and T'.

Every number comes with its floor: the same metric between an equal-size draw of real training
data and the test set. W2 and FID from finite samples are biased by the sample size, so a model
is judged against what real data of the same size achieves, never against zero.

RGB image data also get Inception FID / KID when the user names the FID Inception's weights
(flatgen.metrics.inception); digits keep digits-FID, their own classifier's features. The test
split's Inception features are computed once and cached per (data, n, weights hash); quality.json
states the protocol (reference split and size, n, KID subsets) and, per row, the sampling chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from flatgen.diffusion import generate
from flatgen.metrics import is_rgb, quality_report, train_floor_sample
from flatgen.progress import make_progress
from flatgen.train.run import Run

FLOOR_SEED = 0


def _inception_metric(weights: str | Path | None, test: torch.Tensor):
    """An InceptionReference on the test set (fake -> {"inception_fid", "inception_kid",
    "inception_kid_std"}), or None where there is no Inception score to take (no weights named,
    or data that are not RGB images)."""
    if weights is None or not is_rgb(test):
        return None
    from flatgen.metrics.inception import InceptionReference

    return InceptionReference(weights, test, split="test")


def evaluate_quality(
    run: Run,
    *,
    weights: Sequence[str] = ("raw",),
    steps: Sequence[int] = (10, 100),
    samplers: Sequence[str] = ("adm", "ddim"),
    n: int | None = None,
    seed: int = 1234,
    batch_size: int = 512,
    progress: bool = True,
    inception_weights: str | Path | None = None,
) -> dict[str, Any]:
    """{"n", "floor": {...}, "results": [{"weights", "sampler", "steps", metrics...}, ...]}."""
    train, test = run.data()
    n = n or len(test)
    floor_ref = train_floor_sample(train, n, seed=FLOOR_SEED)
    shape = tuple(test.shape[1:])
    inception = _inception_metric(inception_weights, test)
    combos = [(w, s, k) for w in weights for s in samplers for k in steps]
    rows: list[dict[str, Any]] = []
    floor: dict[str, Any] | None = None
    with make_progress(progress, fields="{task.fields[what]}") as bar:
        task = bar.add_task("evaluate", total=len(combos) * n, what="") if bar else None
        models = {w: run.model(w) for w in weights}
        for w, sampler, k in combos:
            if bar:
                bar.update(task, what=f"{w} {sampler} T'={k}")
            with torch.inference_mode():
                x = generate(models[w], run.schedule, n=n, shape=shape, steps=k, sampler=sampler,
                             seed=seed, batch_size=batch_size,
                             on_batch=(lambda b: bar.advance(task, b)) if bar else None)
            # the floor depends only on n, so it is computed with the first setting only
            report = quality_report(x, test, floor_ref if floor is None else None)
            if inception is not None:
                report |= inception(x)
                if floor is None:
                    report |= {f"{k}_floor": v for k, v in inception(floor_ref).items()}
            if floor is None:
                floor = {key: v for key, v in report.items() if "_floor" in key} | {"n": n}
            rows.append({"weights": w, "sampler": sampler, "steps": k,
                         "chain": run.schedule.chain_name(sampler)}
                        | {key: v for key, v in report.items() if "_floor" not in key})
    protocol: dict[str, Any] = {"reference": "test split", "n_reference": len(test), "n": n,
                                "floor": f"{n} train images (seed {FLOOR_SEED})"}
    if inception is not None:
        protocol["inception"] = inception.protocol(n)
    return {"n": n, "seed": seed, "protocol": protocol, "floor": floor, "results": rows}
