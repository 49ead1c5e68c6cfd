"""The report: one self-contained report.html built from a run directory alone (no torch).

``build_report(run_dir)`` writes ``run_dir/report.html``; ``write_pngs(run_dir)`` writes the same
figures as PNG when kaleido and a Chromium are installed. Figure data is computed apart from the
drawing in ``taskscout.report.figures``.
"""

from taskscout.report.html import (
    Section,
    build_report,
    build_sections,
    png_support,
    render_html,
    write_pngs,
)

__all__ = ["Section", "build_report", "build_sections", "png_support", "render_html", "write_pngs"]
