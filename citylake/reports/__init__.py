"""District reports as files: computed by ``citylake.analytics.report``, drawn here (figures, HTML, Markdown), above
analytics and viz."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from citylake.analytics import Analysis
from citylake.analytics.report import Report, ReportBatch
from citylake.lake import Lake
from citylake.reports.cluster import drawn_on_cluster
from citylake.reports.figures import figures
from citylake.reports.render import to_html, to_markdown


def write(lake: Lake, report: Report, out: str | Path, /) -> Path:
    """Write ``report`` as HTML (``.html``) or Markdown (``.md``, figures as PNG files beside it)."""
    return write_drawn(report, figures(lake, report), out)


def write_drawn(report: Report, drawn: dict[str, bytes], out: str | Path, /) -> Path:
    """Write ``report`` with its figures already drawn (title → PNG)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = to_markdown(report, drawn, out) if out.suffix.lower() == ".md" else to_html(report, drawn)
    out.write_text(text, encoding="utf-8")
    return out


def write_reports(lake: Lake, analysis: Analysis, place_ids: Sequence[str], /, *, out: str | Path, single: bool = False,
                  start: dt.datetime | None = None, end: dt.datetime | None = None, k: int, announce: Callable[[str], None] = print,
                  engine_name: str = "polars", client=None) -> list[Report]:
    """One report per place: into the file ``out`` when ``single``, else ``out/<place>.html``; what the reports share is
    computed once. With ``client`` (a Dask client) each report is computed and drawn by a task on its cluster, and only
    written here."""
    if client is None:
        batch = ReportBatch(lake, analysis, start=start, end=end, k=k, engine_name=engine_name)
        drawn = ((report, figures(lake, report)) for report in map(batch.build, place_ids))
    else:
        drawn = drawn_on_cluster(lake, client, analysis, place_ids, start=start, end=end, k=k, engine_name=engine_name)
    made = []
    for report, pictures in drawn:
        target = write_drawn(report, pictures, Path(out) if single else Path(out) / f"{report.place_id.replace(':', '_')}.html")
        events = report.headline["events"]
        announce(f"report: {target} — {'events not judged (thin history)' if events is None else f'{events} events'}, "
                 f"{report.headline['sensor_faults']} sensor faults, "
                 f"{report.headline['hot_cells']} hot cells")
        made.append(report)
    return made


def write_summary(reports: list[Report], out: str | Path) -> Path:
    """The machine-readable summary of a batch of reports (JSON)."""
    out = Path(out)
    out.write_text(json.dumps({"reports": [r.summary() for r in reports]}, indent=2, default=str) + "\n")
    return out


__all__ = ["Report", "ReportBatch", "write", "write_drawn", "write_reports", "write_summary"]
