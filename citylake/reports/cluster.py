"""District reports computed and drawn on a Dask cluster; the client only writes the files.

A zone category's stays among the reports' places are found by stay tasks, a span of days and share of devices each
(``analytics.fanout.stay_parts``), and combined with its flows by a task of its own (``zones_task``), once per category;
a task per place builds its report on them and draws its figures. Tasks open the lake from its URI and storage
settings and receive the analysis from the cluster (scattered once), so a worker needs only to reach the lake.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence

import polars as pl

from citylake.analytics import Analysis
from citylake.analytics.fanout import stay_parts, stays_of
from citylake.analytics.report import Report, ReportBatch, Zones, categories_of, zones_from
from citylake.lake import Lake
from citylake.lake.storage import Storage
from citylake.queries import DEFAULT_MAX_GAP_S, DEFAULT_MIN_DWELL_S, Filters
from citylake.reports.figures import figures

Drawn = tuple[Report, dict[str, bytes]]  # a report and its figures (title → PNG)


def drawn_on_cluster(lake: Lake, client, analysis: Analysis, place_ids: Sequence[str], /, *, start: dt.datetime | None = None,
                     end: dt.datetime | None = None, k: int, engine_name: str = "polars") -> Iterator[Drawn]:
    """Each place's report and figures, computed on ``client``'s cluster, in the order of ``place_ids`` as they finish."""
    category_of = categories_of(lake, place_ids)
    window = dict(start=start, end=end, k=k, engine_name=engine_name)
    zones = {category: client.submit(zones_task, _stay_parts(lake, client, category, start, end), k=k, pure=False)
             for category in sorted({c for c in category_of.values() if c})}
    shared = client.scatter(analysis)  # once, not once per task
    tasks = [client.submit(report_task, lake.uri, lake.storage, shared, place_id, category_of[place_id], zones.get(category_of[place_id]),
                           **window, pure=False) for place_id in place_ids]
    for task in tasks:
        yield task.result()


def zones_task(parts: list[tuple[pl.DataFrame, pl.DataFrame]], /, *, k: int) -> Zones:
    """One task: a zone category's stays from its stay tasks' parts, and the flows between its zones."""
    return zones_from(stays_of(parts, max_gap_s=DEFAULT_MAX_GAP_S, min_dwell_s=DEFAULT_MIN_DWELL_S), k=k)


def report_task(lake_uri: str, storage: Storage | None, analysis: Analysis, place_id: str, category: str | None,
                zones: Zones | None, /, *, start: dt.datetime | None, end: dt.datetime | None, k: int, engine_name: str) -> Drawn:
    """One task: a place's report (on its category's zones, when it has one) and its figures."""
    lake = Lake.open(lake_uri, storage=storage)
    report = ReportBatch(lake, analysis, start=start, end=end, k=k, engine_name=engine_name,
                         zones={category: zones} if category else None).build(place_id)
    return report, figures(lake, report)


def _stay_parts(lake: Lake, client, category: str, start: dt.datetime | None, end: dt.datetime | None) -> list:
    """A category's stays over the window (a report's: the default gap and dwell) as stay tasks on the cluster."""
    return stay_parts(lake, client, filters=Filters(start=start, end=end, categories=(category,)), max_gap_s=DEFAULT_MAX_GAP_S,
                      min_dwell_s=DEFAULT_MIN_DWELL_S)
