"""Export a run's U-Net and noise schedule as a diffusers pipeline directory."""

from __future__ import annotations

from pathlib import Path

from diffusers import DDPMPipeline, DDPMScheduler

from flatgen.models import UNetDenoiser
from flatgen.train.run import Run


def export_pipeline(run: Run, out: str | Path, weights: str = "raw") -> Path:
    """Save a DDPMPipeline (UNet2DModel + DDPMScheduler) that `DDPMPipeline.from_pretrained` loads."""
    model = run.model(weights)
    if not isinstance(model, UNetDenoiser):
        raise ValueError(f"only U-Net presets export to diffusers; this run uses {run.cfg.model.preset!r}")
    # timestep_spacing "linspace": DDPMPipeline then walks the ADM sampler's respaced chain
    scheduler = DDPMScheduler.from_config(run.schedule.scheduler_config())
    out = Path(out)
    DDPMPipeline(unet=model.unet, scheduler=scheduler).save_pretrained(out, safe_serialization=True)
    return out
