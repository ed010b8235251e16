"""The former, private name of flatgen.robustness.util, which is where the helpers live.

Kept only because some robustness modules (suite, steps, weight_noise, exposure) still import
it; new code imports flatgen.robustness.util.
"""

from flatgen.robustness.util import (
    derive_seed,
    evaluating,
    jsonable,
    make_generator,
    model_device,
)

__all__ = ["derive_seed", "evaluating", "jsonable", "make_generator", "model_device"]
