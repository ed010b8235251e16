"""The robustness-suite registry: suite name -> Suite. run_robustness_suite, the study config
and the CLI read their choices from SUITES; suites run in its order (exposure after steps, so
that it reuses the steps ladder's runs).

Adding a suite: one module here with a class that has `name`, `ticks`, `run`, `summarize` and
`plot` (see base.Suite), and one line below.
"""

from __future__ import annotations

from flatgen.robustness.suites.attack import AttackSuite
from flatgen.robustness.suites.base import CleanRun, Suite, SuiteContext, SuiteSummary
from flatgen.robustness.suites.exposure import ExposureSuite
from flatgen.robustness.suites.noise import NoiseSuite
from flatgen.robustness.suites.quant import QuantSuite
from flatgen.robustness.suites.steps import StepsSuite

SUITES: dict[str, Suite] = {
    s.name: s for s in (StepsSuite(), ExposureSuite(), QuantSuite(), AttackSuite(), NoiseSuite())
}


def register_suite(suite: Suite, *, replace: bool = False) -> Suite:
    """Add a suite to SUITES (after the built-in ones); refuses to shadow a name unless
    replace=True."""
    if not isinstance(suite, Suite):
        raise TypeError(f"{suite!r} lacks name/ticks/run/summarize/plot")
    if suite.name in SUITES and not replace:
        raise ValueError(f"a suite named {suite.name!r} is already registered")
    SUITES[suite.name] = suite
    return suite


def unregister_suite(name: str) -> None:
    """Remove a suite from SUITES (tests register toy suites for one run)."""
    SUITES.pop(name, None)


__all__ = [
    "SUITES",
    "CleanRun",
    "Suite",
    "SuiteContext",
    "SuiteSummary",
    "register_suite",
    "unregister_suite",
]
