"""The robustness-suite registry: SUITES, a flatgen.registry.Registry of suite name -> Suite.
run_robustness_suite, the study config and the CLI read their choices from it; suites run in
its order (exposure after steps, so that it reuses the steps ladder's runs).

Adding a suite: one module here with a class that has `name`, `ticks`, `run`, `summarize` and
`plot` (see base.Suite), and, if it has settings, a `settings` class attribute naming its
base.SuiteSettings subclass (flatgen.robustness.settings composes RobustnessSettings from the
registered ones); and one entry in the tuple below. Outside flatgen, register_suite (or
SUITES.temporary in a test): the suite's settings keys come and go with it.
"""

from __future__ import annotations

from flatgen.registry import Registry
from flatgen.robustness.suites.attack import AttackSuite
from flatgen.robustness.suites.base import (
    CleanRun,
    Suite,
    SuiteContext,
    SuiteSettings,
    SuiteSummary,
)
from flatgen.robustness.suites.exposure import ExposureSuite
from flatgen.robustness.suites.noise import NoiseSuite
from flatgen.robustness.suites.quant import QuantSuite
from flatgen.robustness.suites.steps import StepsSuite


def _check_suite(suite: object) -> None:
    if not isinstance(suite, Suite):
        raise TypeError(f"{suite!r} lacks name/ticks/run/summarize/plot")
    settings = getattr(suite, "settings", None)
    if settings is not None and not (isinstance(settings, type)
                                     and issubclass(settings, SuiteSettings)):
        raise TypeError(f"suite {suite.name!r}: settings must be a SuiteSettings subclass, "
                        f"got {settings!r}")


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
    "SuiteSettings",
    "SuiteSummary",
    "register_suite",
    "unregister_suite",
]
