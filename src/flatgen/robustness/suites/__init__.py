"""The robustness-suite registry: SUITES, a flatgen.registry.Registry of suite name -> Suite.
run_robustness_suite, the study config and the CLI read their choices from it; suites run in
its order (exposure after steps, so that it reuses the steps ladder's runs).

Adding a suite: one module here with a class that has `name`, `ticks`, `run`, `summarize` and
`plot` (see base.Suite), and one entry in the tuple below; outside flatgen, register_suite
(or SUITES.temporary in a test).
"""

from __future__ import annotations

from flatgen.registry import Registry
from flatgen.robustness.suites.attack import AttackSuite
from flatgen.robustness.suites.base import CleanRun, Suite, SuiteContext, SuiteSummary
from flatgen.robustness.suites.exposure import ExposureSuite
from flatgen.robustness.suites.noise import NoiseSuite
from flatgen.robustness.suites.quant import QuantSuite
from flatgen.robustness.suites.steps import StepsSuite


def _check_suite(suite: object) -> None:
    if not isinstance(suite, Suite):
        raise TypeError(f"{suite!r} lacks name/ticks/run/summarize/plot")


SUITES: Registry[Suite] = Registry("robustness suite", check=_check_suite)
for _suite in (StepsSuite(), ExposureSuite(), QuantSuite(), AttackSuite(), NoiseSuite()):
    SUITES.register(_suite.name, _suite)


def register_suite(suite: Suite, *, replace: bool = False) -> Suite:
    """Add a suite to SUITES (after the built-in ones); refuses to shadow a name unless
    replace=True."""
    _check_suite(suite)  # before reading suite.name
    return SUITES.register(suite.name, suite, replace=replace)


def unregister_suite(name: str) -> None:
    """Remove a suite from SUITES (tests register toy suites for one run)."""
    SUITES.unregister(name)


__all__ = [
    "SUITES",
    "CleanRun",
    "Suite",
    "SuiteContext",
    "SuiteSummary",
    "register_suite",
    "unregister_suite",
]
