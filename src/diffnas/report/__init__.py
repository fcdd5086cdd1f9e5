"""The run report and the drawings it is made of.

`page`: one self-contained report.html from a run directory; `draw`: cell diagrams,
α heat maps and edge-weight plots (Matplotlib, imported on first use).
"""

from diffnas.report.page import collect_series, write_report

__all__ = ["collect_series", "write_report"]
