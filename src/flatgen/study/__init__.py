"""The study engine: methods x seeds, trained and measured unit by unit, for every registered
kind of study (study/kinds.py: diffusion, classifier); study.collect builds the report."""

from flatgen.study.config import StudyConfig, StudyEvaluations, load_study_config, split_method
from flatgen.study.kind import StudyKind, Unit
from flatgen.study.kinds import KINDS, kind_of, load_study, study_kind, task_of
from flatgen.study.plan import plan_commands, plan_units
from flatgen.study.run import load_results, run_study

__all__ = [
    "KINDS",
    "StudyConfig",
    "StudyEvaluations",
    "StudyKind",
    "Unit",
    "kind_of",
    "load_results",
    "load_study",
    "load_study_config",
    "plan_commands",
    "plan_units",
    "run_study",
    "split_method",
    "study_kind",
    "task_of",
]
