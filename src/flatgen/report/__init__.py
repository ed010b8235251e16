"""The study: methods x seeds x evaluations, collected into tables, plots and report.html."""

from flatgen.report.collect import collect_study, summary_table
from flatgen.report.study import plan_commands, plan_units, run_study
from flatgen.report.study_config import (
    StudyConfig,
    StudyEvaluations,
    load_study_config,
    split_method,
)

__all__ = [
    "StudyConfig",
    "StudyEvaluations",
    "collect_study",
    "load_study_config",
    "plan_commands",
    "plan_units",
    "run_study",
    "split_method",
    "summary_table",
]
