"""The seams, end to end: a toy SAM variant, a toy robustness suite with its own settings and a
toy claim on that suite's ladder, added through their registries alone, run in a tiny study
(its config a YAML file) and reach its report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from pydantic import Field, field_validator
from rich.console import Console

from flatgen.config import ConfigError
from flatgen.optim import SAM, SAM_VARIANTS
from flatgen.records import ladders_of
from flatgen.report.claims import CLAIMS, ClaimSpec
from flatgen.robustness.record import ladder_record
from flatgen.robustness.settings import RobustnessSettings, parse_settings
from flatgen.robustness.suites import SUITES, SuiteSettings, SuiteSummary
from flatgen.study import run_study
from flatgen.study.collect import collect_study
from flatgen.study.config import load_study_config

QUIET = Console(quiet=True)


class HalfSAM(SAM):
    """A toy variant: SAM's ascent at half its length."""

    name = "toy-half"
    options = ()

    def _direction(self, p):
        return None if p.grad is None else 0.5 * p.grad


class OutputNormSettings(SuiteSettings):
    """The toy suite's own settings: the scales of its ladder."""

    toy_scales: list[float] = Field(default_factory=lambda: [1.0, 2.0])

    @field_validator("toy_scales")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(s <= 0 for s in v):
            raise ValueError("toy_scales must be > 0")
        return sorted(set(v))


class OutputNorm:
    """A toy suite: the mean |output| m of the denoiser on the test set at t=0, and a ladder
    m * (1 + scale) at each of settings.toy_scales (a rise of m * scale)."""

    name = "toy-norm"
    settings = OutputNormSettings

    def ticks(self, settings) -> int:
        return 1

    def run(self, ctx) -> dict:
        with torch.no_grad():
            t = torch.zeros(len(ctx.reference), dtype=torch.long)
            value = ctx.model(ctx.reference, t).abs().mean().item()
        ctx.tick()
        scales = ctx.settings.toy_scales
        return {"value": value, "scales": scales, "values": [value * (1 + s) for s in scales]}

    def summarize(self, result: dict, *, metric: str) -> SuiteSummary:
        ladder = ladder_record(levels=result["scales"], clean=result["value"],
                               values=result["values"], metric="toy", level_name="scale",
                               extra={})
        return SuiteSummary(scalars={"toy_output_norm": result["value"]},
                            ladders={"toy_output_ladder": ladder})

    def plot(self, results: dict, out_dir: Path) -> list[Path]:
        return []


TOY_CLAIM = ClaimSpec(
    id="toy_output_rise", kind="degradation", key="toy_output_ladder", direction="lower",
    statistic="rise", level_setting="toy_scales", level_name="scale",
    text="The toy variant lowers the rise of the toy suite's ladder.", source="a test",
    decides="the rise at the judged scale per seed", pairs=(("sam", "adm"),))


@pytest.fixture
def toy_extensions():
    # what `@register_sam_variant`, register_suite and a claim module's register() do
    with SAM_VARIANTS.temporary(HalfSAM.name, HalfSAM), \
            SUITES.temporary(OutputNorm.name, OutputNorm()), \
            CLAIMS.temporary(TOY_CLAIM.id, TOY_CLAIM):
        yield


def _study_yaml(tmp_path: Path, robustness: dict, *, toy: bool = True) -> Path:
    """The tiny study's config file: the toy suite and its claim (toy), else a built-in suite."""
    path = tmp_path / "toy-study.yaml"
    path.write_text(yaml.safe_dump({
        "name": "toy-extensions",
        "base": {"data": {"name": "toy2d", "n_train": 128, "n_test": 32},
                 "model": {"preset": "mlp2d"},
                 "train": {"steps": 4, "batch_size": 32, "warmup_steps": 1}},
        "methods": ["adm", "sam"], "seeds": [0, 1],
        "overrides": {"sam": ["method.sam.variant=toy-half"]},
        "evaluations": {"quality_steps": [2], "n_samples": 16, "sharpness": False,
                        "suites": ["toy-norm" if toy else "noise"], "robustness": robustness},
        # a level of the toy suite's setting, fixed before the run
        "verdicts": {"levels": {"toy_output_rise": 3} if toy else {}},
    }))
    return path


def test_a_toy_variant_suite_and_claim_run_in_a_study(tmp_path, toy_extensions, one_thread):
    with pytest.raises(ConfigError, match=r"evaluations\.robustness\.toy_scales: toy_scales "
                                          r"must be > 0"):
        load_study_config(_study_yaml(tmp_path, {"toy_scales": [0]}))
    with pytest.raises(ConfigError, match=r"verdicts\.levels\.toy_output_rise: 3 is not a level"):
        load_study_config(_study_yaml(tmp_path, {}))  # the default scales are 1 and 2
    study = load_study_config(_study_yaml(tmp_path, {"n_samples": 16, "toy_scales": [3, 0.5, 3]}))
    assert study.evaluations.robustness.toy_scales == [0.5, 3.0]  # through its validator
    out = tmp_path / "study"
    assert set(run_study(study, out, QUIET, progress=False).values()) == {"done"}
    saved = (out / "runs" / "sam-s0" / "config.yaml").read_text()
    assert "toy-half" in saved  # the variant trained the sam runs
    collect_study(study, out)
    results = json.loads((out / "results.json").read_text())
    rows = [r for r in results["results"] if r["method"] == "sam"]
    assert all(r["metrics"]["toy_output_norm"] > 0 for r in rows)
    for row in rows:  # the suite's ladder, at the scales its settings gave
        ladder = ladders_of(row)["toy_output_ladder"]
        norm = row["metrics"]["toy_output_norm"]
        assert ladder["levels"] == [0.5, 3.0]
        assert ladder["values"] == pytest.approx([1.5 * norm, 4 * norm])
    claim = next(c for c in results["claims"] if c["id"] == "toy_output_rise")
    assert claim["level"] == 3.0 and claim["comparisons"][0]["how_chosen"] == "pre-registered"
    assert claim["verdict"]  # judged with the others (2 seeds: a test, Holm-adjusted)
    assert "toy_output_rise" in (out / "report.html").read_text()


def test_a_suites_settings_come_and_go_with_its_registration(tmp_path):
    with SUITES.temporary(OutputNorm.name, OutputNorm()):
        assert RobustnessSettings().toy_scales == [1.0, 2.0]  # its default
        assert parse_settings(["robustness.toy_scales=[2, 1, 2]"]).toy_scales == [1.0, 2.0]
        with pytest.raises(ValueError, match=r"robustness\.toy_scales: toy_scales must be > 0"):
            parse_settings(["robustness.toy_scales=[0]"])
    assert "toy_scales" not in RobustnessSettings().model_dump()
    with pytest.raises(ValueError, match=r"robustness\.toy_scales: unknown key"):
        parse_settings(["robustness.toy_scales=[2]"])
    with pytest.raises(ConfigError, match=r"evaluations\.robustness\.toy_scales: unknown key"):
        load_study_config(_study_yaml(tmp_path, {"toy_scales": [2]}, toy=False))
