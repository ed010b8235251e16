"""The study engine: methods x seeds, trained and measured unit by unit (report/ collects)."""

from flatgen.study.config import StudyConfig, StudyEvaluations, load_study_config, split_method
from flatgen.study.plan import Unit, plan_commands, plan_units
from flatgen.study.run import load_results, run_study

__all__ = [
    "StudyConfig",
    "StudyEvaluations",
    "Unit",
    "load_results",
    "load_study_config",
    "plan_commands",
    "plan_units",
    "run_study",
    "split_method",
]
