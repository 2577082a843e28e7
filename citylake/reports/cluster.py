"""District reports computed and drawn on a Dask cluster; the client only writes the files.

A task per zone category among the reports' places computes its stays and flows once (``analytics.report.zones_of``);
a task per place builds its report on them and draws its figures. Tasks open the lake from its URI and storage
settings and receive the analysis from the cluster (scattered once), so a worker needs only to reach the lake.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence

from citylake.analytics import Analysis
from citylake.analytics.report import Report, ReportBatch, Zones, categories_of, zones_of
from citylake.lake import Lake
from citylake.lake.storage import Storage
from citylake.reports.figures import figures

Drawn = tuple[Report, dict[str, bytes]]  # a report and its figures (title → PNG)


def drawn_on_cluster(lake: Lake, client, analysis: Analysis, place_ids: Sequence[str], /, *, start: dt.datetime | None = None,
                     end: dt.datetime | None = None, k: int, engine_name: str = "polars") -> Iterator[Drawn]:
    """Each place's report and figures, computed on ``client``'s cluster, in the order of ``place_ids`` as they finish."""
    category_of = categories_of(lake, place_ids)
    window = dict(start=start, end=end, k=k, engine_name=engine_name)
    zones = {category: client.submit(category_task, lake.uri, lake.storage, category, **window, pure=False)
             for category in sorted({c for c in category_of.values() if c})}
    shared = client.scatter(analysis)  # once, not once per task
    tasks = [client.submit(report_task, lake.uri, lake.storage, shared, place_id, category_of[place_id], zones.get(category_of[place_id]),
                           **window, pure=False) for place_id in place_ids]
    for task in tasks:
        yield task.result()


def category_task(lake_uri: str, storage: Storage | None, category: str, /, **window) -> Zones:
    """One task: a zone category's stays and flows over the window, shared by its places' reports."""
    return zones_of(Lake.open(lake_uri, storage=storage), category, **window)


def report_task(lake_uri: str, storage: Storage | None, analysis: Analysis, place_id: str, category: str | None,
                zones: Zones | None, /, *, start: dt.datetime | None, end: dt.datetime | None, k: int, engine_name: str) -> Drawn:
    """One task: a place's report (on its category's zones, when it has one) and its figures."""
    lake = Lake.open(lake_uri, storage=storage)
    report = ReportBatch(lake, analysis, start=start, end=end, k=k, engine_name=engine_name,
                         zones={category: zones} if category else None).build(place_id)
    return report, figures(lake, report)
