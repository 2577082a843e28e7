"""Footfall on a Dask cluster: one task per UTC day of pings, each through the same query functions as one process
(``queries.footfall``), combined and made k-anonymous in the client.

Pings are partitioned by UTC date, and a bucket of up to a day never crosses midnight UTC, so a day's groups are whole:
the days' frames are concatenated, never merged, and the answer is the one-process answer exactly. Each task opens the
lake from its URI and storage settings, so a worker needs only to reach the lake (an ``s3://`` one: the store), and holds
one day's pings at a time: a window larger than one machine's memory fits.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import polars as pl

from citylake.h3_index.buckets import BUCKETS_US
from citylake.lake import Lake
from citylake.lake.storage import Storage
from citylake.queries import DEFAULT_K, Filters, QueryResult, footfall
from citylake.queries.base import FootfallBy, private_result, tidy
from citylake.queries.errors import BadFilter

DAY_US = 86_400 * 10**6
NO_FILTERS = Filters()
UTC = dt.timezone.utc


def footfall_on_cluster(lake: Lake, client, /, *, by: FootfallBy = "place", freq: str = "1h", res: int | None = None,
                        filters: Filters = NO_FILTERS, k: int = DEFAULT_K) -> QueryResult:
    """``queries.footfall`` on ``client``'s cluster, one task per day; the same answer as one process."""
    if freq not in BUCKETS_US or DAY_US % BUCKETS_US[freq]:
        raise BadFilter("freq", freq, "footfall on a cluster needs buckets that divide a day (5min … 1d); run it in one process")
    tasks = [client.submit(day_footfall, lake.uri, lake.storage, day, by=by, freq=freq, res=res, filters=filters, pure=False)
             for day in days_in(lake, filters)]
    frames = [frame for frame in client.gather(tasks) if frame.height]
    if not frames:  # no pings in the window: the one-process answer (empty) gives the columns
        frames = [footfall_frame(lake, by=by, freq=freq, res=res, filters=filters)]
    return private_result(tidy(pl.concat(frames, how="vertical_relaxed"), by), k=k, engine=f"polars on dask ({len(tasks)} days)")


def days_in(lake: Lake, filters: Filters) -> list[dt.date]:
    """The UTC dates holding pings within the filters' window (from the Delta log)."""
    days = sorted(dt.date.fromisoformat(d) for d in lake.rows_per_partition("pings", "date"))
    first = filters.start.astimezone(UTC).date() if filters.start else None
    last = (filters.end - dt.timedelta(microseconds=1)).astimezone(UTC).date() if filters.end else None
    return [d for d in days if (first is None or d >= first) and (last is None or d <= last)]


def day_footfall(lake_uri: str, storage: Storage | None, day: dt.date, /, *, by: FootfallBy, freq: str, res: int | None,
                 filters: Filters) -> pl.DataFrame:
    """One task: the day's groups, before k-anonymity (the client applies it to the whole answer)."""
    lake = Lake.open(lake_uri, storage=storage)
    start = dt.datetime.combine(day, dt.time(), UTC)
    window = dataclasses.replace(filters, start=max(filters.start or start, start),
                                 end=min(filters.end or start + dt.timedelta(days=1), start + dt.timedelta(days=1)))
    return footfall_frame(lake, by=by, freq=freq, res=res, filters=window)


def footfall_frame(lake: Lake, /, *, by: FootfallBy, freq: str, res: int | None, filters: Filters) -> pl.DataFrame:
    return pl.from_arrow(footfall(lake, by=by, freq=freq, res=res, filters=filters, k=1).table)
