"""WRMConfig, the training config's `method.dro` section: pydantic only, so that flatgen.config
loads no torch. The algorithm it configures is flatgen.optim.wrm (Sinha, Namkoong, Duchi 2018)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class WRMConfig(BaseModel):
    """WRM robust training (`method.dro`): sup_x loss(x) - gamma * ||x - x0||^2 by ascent."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    gamma: float = Field(gt=0, description="penalty on the squared transport distance")
    steps: int = Field(15, ge=0, description="inner gradient-ascent steps")
    step_size: float | None = Field(
        None, gt=0, description="first ascent step, decays as 1/sqrt(t); None: 1 / (2 gamma)"
    )
