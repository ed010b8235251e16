"""Export a run's U-Net and noise schedule as a diffusers pipeline directory."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from diffusers import DDPMPipeline, DDPMScheduler

from flatgen.errors import OutputError
from flatgen.io import check_outside_runs, check_writable, dir_mode
from flatgen.models import UNetDenoiser
from flatgen.train.run import Run


def check_export_dir(out: str | Path, *, force: bool = False) -> None:
    """OutputError unless `out` can receive an export: new, empty, or (with force) an export.

    A run directory or any other folder with files in it is never written into, --force or not:
    a pipeline folder must hold the pipeline alone.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {str(out)!r} is a file: give a folder for the pipeline")
    if out.is_dir() and any(out.iterdir()):
        if (out / "config.yaml").is_file() or (out / "checkpoints").exists():
            raise OutputError(f"--out {str(out)!r} is a flatgen run directory: export into a new "
                              "folder, e.g. --out exported/NAME")
        if not (out / "model_index.json").is_file():
            raise OutputError(f"--out {str(out)!r} holds other files: export into a new or empty "
                              "folder")
        if not force:
            raise OutputError(f"--out {str(out)!r} holds an export already: pass --force to "
                              "replace it, or choose another --out")
    check_outside_runs(out.parent)  # never a pipeline inside a run or another model
    check_writable(out.parent if not out.exists() else out)


def _temporary_prefix(out: Path) -> str:
    return f".tmp-{out.name}-"


def remove_stale_exports(out: str | Path) -> list[Path]:
    """Delete the `.tmp-NAME-*` folders beside `out` that an export of NAME killed before its
    rename left (an export writes only there until the rename)."""
    out = Path(out)
    removed = []
    if out.parent.is_dir():
        for p in out.parent.glob(_temporary_prefix(out) + "*"):
            if p.is_dir() and len(p.name) == len(_temporary_prefix(out)) + 8:  # mkdtemp's
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def export_pipeline(
    run: Run, out: str | Path, *, weights: str = "raw", force: bool = False
) -> Path:
    """Save a DDPMPipeline (UNet2DModel + DDPMScheduler) that `DDPMPipeline.from_pretrained` loads.

    Written into a temporary folder beside `out` and renamed into place, so `out` never holds a
    half-written or mixed pipeline (see check_export_dir for what may be replaced).
    """
    out = Path(out)
    check_export_dir(out, force=force)
    model = run.model(weights)
    if not isinstance(model, UNetDenoiser):
        raise ValueError("only U-Net presets export to diffusers; "
                         f"this run uses {run.cfg.model.preset!r}")
    # timestep_spacing "linspace": DDPMPipeline then walks the ADM sampler's respaced chain
    scheduler = DDPMScheduler.from_config(run.schedule.scheduler_config())
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_exports(out)
    tmp = Path(tempfile.mkdtemp(prefix=_temporary_prefix(out), dir=out.parent))
    try:
        os.chmod(tmp, dir_mode())
        pipeline = DDPMPipeline(unet=model.unet, scheduler=scheduler)
        pipeline.save_pretrained(tmp, safe_serialization=True)
        if out.exists():  # empty, or an export replaced with --force
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
