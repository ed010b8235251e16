"""Numbers over seeds as text: mean and sample std, and the one markdown table writer.

A low module (no scipy, no report/), so dro/ and classify/ tabulate as the report does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); std is 0.0 for one value, both NaN for none."""
    v = [float(x) for x in values]
    if not v:
        return math.nan, math.nan
    m = math.fsum(v) / len(v)
    if len(v) == 1:
        return m, 0.0
    return m, math.sqrt(math.fsum((x - m) ** 2 for x in v) / (len(v) - 1))


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """A GitHub-markdown table: the header, the rule, one line per row; ends in a newline."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines) + "\n"


__all__ = ["markdown_table", "mean_std"]
