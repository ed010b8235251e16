"""The report: a study's measurements collected into statistics, claims, tables, plots, HTML."""

from flatgen.report.collect import collect_study, summary_table

__all__ = ["collect_study", "summary_table"]
