"""The quantization suite: round-to-nearest weights per tensor / per channel, alone ("w") or
with the layer inputs quantized too ("wa", activations at the weight width unless
settings.activation_bits fixes it), at each bit width, on the evaluation sampler."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from flatgen import records as keys
from flatgen.robustness.quantize import (
    calibration_inputs,
    model_size_bytes,
    quantize_activations,
    quantize_weights,
)
from flatgen.robustness.record import ladder_record
from flatgen.robustness.suites.base import (
    ONE_OR_MANY,
    UNIQUE,
    Settings,
    SuiteContext,
    SuiteSettings,
    SuiteSummary,
    metric_of,
    stream_count,
)
from flatgen.robustness.util import make_generator


def _bits(v: list[int]) -> list[int]:
    if any(not 2 <= b <= 16 for b in v):
        raise ValueError("bits must be in 2..16")
    return sorted(set(v), reverse=True)


class QuantSettings(SuiteSettings):
    """The quantization ladders: bits x granularity x scheme (w: weights only, wa: and
    activations), on the evaluation sampler and T' (settings.eval_*)."""

    bits: Annotated[list[int], AfterValidator(_bits)] = Field(
        default_factory=lambda: [8, 6, 4, 3]
    )
    granularity: Annotated[list[Literal["tensor", "channel"]], ONE_OR_MANY, UNIQUE] = Field(
        default_factory=lambda: ["channel", "tensor"]
    )
    quant_schemes: Annotated[list[Literal["w", "wa"]], ONE_OR_MANY, UNIQUE] = Field(
        default_factory=lambda: ["w", "wa"]
    )
    activation_bits: int | None = Field(None, ge=2, le=16)  # for "wa"; None: the weight bits
    activation_calibration: Literal["minmax", "percentile"] = "minmax"
    activation_percentile: float = Field(99.99, gt=50, le=100)
    calibration_n: int = Field(32, ge=1)

    def scheme_activation_bits(self, scheme: str, bits: int) -> int | None:
        """The activation bit width of a quant scheme at weight width `bits` (None: float)."""
        if scheme == "w":
            return None
        return self.activation_bits if self.activation_bits is not None else bits

# result keys per scheme: weights only keep the names they always had
_QUALITY = {"w": "quality", "wa": "quality_act"}


class QuantSuite:
    """Result per model: {"float": quality, "select_float": quality | absent,
    <granularity>: {"bits", "size_bytes", "float_bytes", "activation_bits": [...] (wa),
    "quality" (w), "quality_act" (wa), "select_quality" / "select_quality_act" (selection)}}.
    Ladders quant_<scheme>_<granularity>: levels bits, clean the float quality on the same
    sampler and noise."""

    name = "quant"
    settings = QuantSettings

    def ticks(self, settings: Settings, *, selection: bool = False) -> int:
        return (len(settings.bits) * len(settings.granularity) * len(settings.quant_schemes)
                * stream_count(selection))

    def run(self, ctx: SuiteContext) -> dict[str, Any]:
        s, q = ctx.settings, QuantSettings.of(ctx.settings)
        calib = None
        if "wa" in s.quant_schemes:  # ranges from the float model's own sampling trajectory
            calib = calibration_inputs(
                ctx.model, ctx.schedule, shape=ctx.shape, n=s.calibration_n, steps=s.eval_steps,
                sampler=s.eval_sampler, generator=make_generator(s.seed, "calibration"),
            )
        out: dict[str, Any] = {"float": ctx.evaluate()}
        if ctx.selection:
            out["select_float"] = ctx.evaluate(stream="select")
        for gran in s.granularity:
            rows: dict[str, Any] = {
                "bits": list(s.bits),
                "size_bytes": [model_size_bytes(ctx.model, b, gran)["bytes"] for b in s.bits],
                "float_bytes": model_size_bytes(ctx.model)["float_bytes"],
            }
            for scheme in s.quant_schemes:
                for stream in ctx.streams:
                    key = ("select_" if stream == "select" else "") + _QUALITY[scheme]
                    rows[key] = []
            if "wa" in s.quant_schemes:
                rows["activation_bits"] = [q.scheme_activation_bits("wa", b) for b in s.bits]
            for bits in s.bits:
                ctx.describe(f"{ctx.name}: {bits}-bit per {gran}")
                qmodel = quantize_weights(ctx.model, bits, gran)
                for scheme in s.quant_schemes:
                    model = qmodel
                    if scheme == "wa":
                        model = quantize_activations(
                            qmodel, calib, bits=q.scheme_activation_bits("wa", bits),
                            method=s.activation_calibration, percentile=s.activation_percentile,
                        )
                    for stream in ctx.streams:
                        key = ("select_" if stream == "select" else "") + _QUALITY[scheme]
                        rows[key].append(ctx.evaluate(model, stream=stream))
                        ctx.tick()
            out[gran] = rows
        return out

    def summarize(self, result: Mapping[str, Any], *, metric: str) -> SuiteSummary:
        summary = SuiteSummary()
        clean = metric_of(result["float"], metric)
        select_clean = (metric_of(result["select_float"], metric)
                        if "select_float" in result else None)
        summary.scalars[keys.float_quality_key(metric)] = clean
        for gran, rows in result.items():
            if gran in ("float", "select_float"):
                continue
            for scheme, qkey in _QUALITY.items():
                if qkey not in rows:
                    continue
                values = [metric_of(q, metric) for q in rows[qkey]]
                for b, v in zip(rows["bits"], values, strict=True):
                    summary.scalars[keys.quant_quality_key(metric, b, gran, scheme=scheme)] = v
                select = rows.get("select_" + qkey)
                sel = None
                if select is not None:
                    sel = (select_clean, [metric_of(q, metric) for q in select])
                extra = {"size_bytes": rows["size_bytes"], "float_bytes": rows["float_bytes"]}
                if scheme == "wa":
                    extra["activation_bits"] = rows["activation_bits"]
                summary.ladders[keys.quant_ladder_id(scheme, gran)] = ladder_record(
                    levels=rows["bits"], clean=clean, values=values, select=sel, metric=metric,
                    level_name="bits", extra=extra,
                )
        return summary

    def plot(self, results: Mapping[str, Any], out_dir: Path) -> list[Path]:
        from flatgen.robustness.plots import plot_quant

        return [plot_quant(results, Path(out_dir) / "robustness_quant.png")]
