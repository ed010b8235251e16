"""The seams, end to end: a toy SAM variant, a toy robustness suite and a toy claim, added
through their registries alone, run in a tiny study and reach its report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from rich.console import Console

from flatgen.optim import SAM, SAM_VARIANTS
from flatgen.report.claims import CLAIMS, ClaimSpec, register
from flatgen.robustness import SuiteSummary, register_suite
from flatgen.robustness.suites import unregister_suite
from flatgen.study import StudyConfig, run_study
from flatgen.study.collect import collect_study

QUIET = Console(quiet=True)


class HalfSAM(SAM):
    """A toy variant: SAM's ascent at half its length."""

    name = "toy-half"
    options = ()

    def _direction(self, p):
        return None if p.grad is None else 0.5 * p.grad


class OutputNorm:
    """A toy suite: the mean |output| of the denoiser on the test set at t=0."""

    name = "toy-norm"

    def ticks(self, settings) -> int:
        return 1

    def run(self, ctx) -> dict:
        with torch.no_grad():
            t = torch.zeros(len(ctx.reference), dtype=torch.long)
            value = ctx.model(ctx.reference, t).abs().mean().item()
        ctx.tick()
        return {"value": value}

    def summarize(self, result: dict, *, metric: str) -> SuiteSummary:
        return SuiteSummary(scalars={"toy_output_norm": result["value"]}, ladders={})

    def plot(self, results: dict, out_dir: Path) -> list[Path]:
        return []


@pytest.fixture
def toy_variant():
    with SAM_VARIANTS.temporary(HalfSAM.name, HalfSAM):  # what `@register_sam_variant` does
        yield HalfSAM


@pytest.fixture
def toy_extensions(toy_variant):
    register_suite(OutputNorm())
    claim = register(ClaimSpec(
        id="toy_output_norm", kind="scalar", key="toy_output_norm", direction="lower",
        text="The toy variant lowers the toy suite's output norm.", source="a test",
        decides="toy_output_norm per seed", pairs=(("sam", "adm"),)))
    yield claim
    unregister_suite(OutputNorm.name)
    CLAIMS.unregister(claim.id)


def test_a_toy_variant_suite_and_claim_run_in_a_study(tmp_path, toy_extensions, one_thread):
    study = StudyConfig.model_validate({
        "name": "toy-extensions",
        "base": {"data": {"name": "toy2d", "n_train": 128, "n_test": 32},
                 "model": {"preset": "mlp2d"},
                 "train": {"steps": 4, "batch_size": 32, "warmup_steps": 1}},
        "methods": ["adm", "sam"], "seeds": [0, 1],
        "overrides": {"sam": ["method.sam.variant=toy-half"]},
        "evaluations": {"quality_steps": [2], "n_samples": 16, "sharpness": False,
                        "suites": ["toy-norm"], "robustness": {"n_samples": 16}},
    })
    out = tmp_path / "study"
    assert set(run_study(study, out, QUIET, progress=False).values()) == {"done"}
    saved = (out / "runs" / "sam-s0" / "config.yaml").read_text()
    assert "toy-half" in saved  # the variant trained the sam runs
    collect_study(study, out)
    results = json.loads((out / "results.json").read_text())
    rows = [r for r in results["results"] if r["method"] == "sam"]
    assert all(r["metrics"]["toy_output_norm"] > 0 for r in rows)
    claim = next(c for c in results["claims"] if c["id"] == "toy_output_norm")
    assert claim["verdict"]  # judged with the others (2 seeds: a test, Holm-adjusted)
    assert "toy_output_norm" in (out / "report.html").read_text()
