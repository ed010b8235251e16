"""The report: a study's typed records judged into claims, tables, plots and HTML (build_report)."""

from flatgen.report.build import Report, build_report
from flatgen.report.tables import summary_table

__all__ = ["Report", "build_report", "summary_table"]
