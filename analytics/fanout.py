"""Footfall and stays on a Dask cluster. Footfall: one task per window of ``queries.windows`` (a span of whole UTC days of
pings, or a part of a dense day), each through the same query functions as one process (``queries.footfall``), combined
and made k-anonymous in the client: each task's groups are whole, the frames are concatenated, never merged, and the
answer is the one-process answer exactly. Each task opens the lake from its URI and storage settings, so a worker needs only to reach
the lake (an ``s3://`` one: the store), and holds at most about ``TASK_PINGS`` pings (a single bucket's, if more): a
window larger than one machine's memory fits, and a worker's memory does not grow with a day's density.

Stays: one task per span of days, and per share of its devices when the span holds more pings than a task's share (a
device's stays are its own), each finding its window's stays. A stay that holds neither its device's first nor its last
ping of the window is whole: the task applies the dwell to it. The others, however short, go to the combining step
(``stays_of``: in the client, or in a report's task), which joins a stay holding a device's last ping of one window to
the stay in the same place holding its first ping of the next (when the gap is within ``max_gap_s``), then applies the
dwell. A window is whole days, longer than any gap allowed, so no device can go silent for a whole window inside one stay.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import polars as pl

from citylake.analytics.detect import MIN_TASKS, TASK_PINGS
from citylake.h3_index.buckets import BUCKETS_US
from citylake.lake import Lake
from citylake.lake.storage import Storage
from citylake.queries import DEFAULT_K, Filters, QueryResult, engine, footfall, tidy_stays
from citylake.queries.base import FootfallBy, private_result, tidy
from citylake.queries.errors import BadFilter
from citylake.queries.polars import STAY_COLUMNS, lasting
from citylake.queries.windows import DAY_US, day_spans, day_windows, narrowed, pings_per_day

PIECES = {"device_id": pl.Int64, "place_id": pl.String, "start": pl.Datetime("us", "UTC"), "end": pl.Datetime("us", "UTC"),
          "pings": pl.UInt32, "opens": pl.Boolean, "closes": pl.Boolean, "_window": pl.Int64}
NO_FILTERS = Filters()
UTC = dt.timezone.utc


def footfall_on_cluster(lake: Lake, client, /, *, by: FootfallBy = "place", freq: str = "1h", res: int | None = None,
                        filters: Filters = NO_FILTERS, k: int = DEFAULT_K) -> QueryResult:
    """``queries.footfall`` on ``client``'s cluster, one task per span of days (or part of a dense day); the same answer
    as one process."""
    if freq not in BUCKETS_US or DAY_US % BUCKETS_US[freq]:
        raise BadFilter("freq", freq, "footfall on a cluster needs buckets that divide a day (5min … 1d); run it in one process")
    windows = [narrowed(filters, start, end) for start, end in task_windows(pings_per_day(lake, filters), BUCKETS_US[freq])]
    tasks = [client.submit(window_footfall, lake.uri, lake.storage, by=by, freq=freq, res=res, filters=window, pure=False)
             for window in windows if window]  # a part of a day outside the filters' window is no task
    frames = [frame for frame in client.gather(tasks) if frame.height]
    if not frames:  # no pings in the window: the one-process answer (empty) gives the columns
        frames = [footfall_frame(lake, by=by, freq=freq, res=res, filters=filters)]
    return private_result(tidy(pl.concat(frames, how="vertical_relaxed"), by), k=k, engine=f"polars on dask ({len(tasks)} tasks)")


def days_in(lake: Lake, filters: Filters) -> list[dt.date]:
    """The UTC dates holding pings within the filters' window (from the Delta log)."""
    return list(pings_per_day(lake, filters))


def task_windows(per_day: dict[dt.date, int], bucket_us: int, /) -> list[tuple[dt.datetime, dt.datetime]]:
    """The tasks' [start, end) windows in UTC (``queries.windows.day_windows``): days together up to ``task_share``, a
    day of more than ``TASK_PINGS`` cut into parts of whole buckets."""
    return day_windows(per_day, bucket_us, share=task_share(per_day), most=TASK_PINGS)


def task_share(per_day: dict[dt.date, int], /) -> int:
    """Pings a task takes at most: ``TASK_PINGS`` (a worker's memory), or fewer when that leaves under ``MIN_TASKS``
    tasks (every worker busy to the end). Each task opens the lake and loads the places' covers once, so fewer tasks
    cost less (on a store, fewer round trips)."""
    return min(TASK_PINGS, max(1, -(-sum(per_day.values()) // MIN_TASKS)))


def window_footfall(lake_uri: str, storage: Storage | None, /, *, by: FootfallBy, freq: str, res: int | None,
                    filters: Filters) -> pl.DataFrame:
    """One task: the groups of the ``filters``' window, before k-anonymity (the client applies it to the whole answer).
    The window's edges fall on bucket edges (or the caller's), so its groups are whole."""
    return footfall_frame(Lake.open(lake_uri, storage=storage), by=by, freq=freq, res=res, filters=filters)


def footfall_frame(lake: Lake, /, *, by: FootfallBy, freq: str, res: int | None, filters: Filters) -> pl.DataFrame:
    return pl.from_arrow(footfall(lake, by=by, freq=freq, res=res, filters=filters, k=1).table)


def stays_on_cluster(lake: Lake, client, /, *, filters: Filters = NO_FILTERS, max_gap_s: int, min_dwell_s: int) -> pl.DataFrame:
    """``queries.stays`` on ``client``'s cluster, a task per span of days (``day_spans``) and share of its devices
    (``stay_tasks``); the same stays as one process."""
    return stays_of(client.gather(stay_parts(lake, client, filters=filters, max_gap_s=max_gap_s, min_dwell_s=min_dwell_s)),
                    max_gap_s=max_gap_s, min_dwell_s=min_dwell_s)


def stay_parts(lake: Lake, client, /, *, filters: Filters, max_gap_s: int, min_dwell_s: int) -> list:
    """The futures of ``window_stays`` for every task of ``stay_tasks``, for ``stays_of`` to combine (in the client, or
    in a task of their own)."""
    if not 0 < max_gap_s < DAY_US // 10**6 or min_dwell_s < 0:
        raise BadFilter("max_gap_s/min_dwell_s", (max_gap_s, min_dwell_s), "stays on a cluster need a gap of a second to under "
                        "a day and a dwell not negative; run a longer gap in one process")
    return [client.submit(window_stays, lake.uri, lake.storage, start, end, number, filters=dataclasses.replace(filters, devices=share),
                          max_gap_s=max_gap_s, min_dwell_s=min_dwell_s, pure=False)
            for start, end, number, share in stay_tasks(pings_per_day(lake, filters))]


def stay_tasks(per_day: dict[dt.date, int], /) -> list[tuple[dt.datetime, dt.datetime, int, tuple[int, int] | None]]:
    """The stays' tasks: each span of ``day_spans`` as a [start, end) window in UTC with its number, and, for a span of
    more pings than a task's share, each share of its devices (r, of) — a device's stays are its own, so shares need no
    joining; only windows do."""
    tasks = []
    share = task_share(per_day)
    for number, (first, last) in enumerate(day_spans(per_day, share=share)):
        start = dt.datetime.combine(first, dt.time(), UTC)
        end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), UTC)
        pings = sum(rows for day, rows in per_day.items() if first <= day <= last)
        of = -(-pings // share)
        tasks += [(start, end, number, (r, of) if of > 1 else None) for r in range(of)]
    return tasks


def window_stays(lake_uri: str, storage: Storage | None, start: dt.datetime, end: dt.datetime, number: int, /, *, filters: Filters,
                 max_gap_s: int, min_dwell_s: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One task: the stays of [``start``, ``end``) (see ``stay_pieces``) as two frames — those that hold neither a
    device's first nor its last ping of the window, whole already, kept when they last ``min_dwell_s``; and those that do,
    however short, with the window's ``number``, to be joined across the window's edges (``joined_stays``)."""
    lake = Lake.open(lake_uri, storage=storage)
    window = narrowed(filters, start, end)  # whole days holding pings within the filters' window: they always meet
    pieces = engine("polars", lake).stay_pieces(filters=window, max_gap_s=max_gap_s)
    edge = pl.col("opens") | pl.col("closes")
    whole = pieces.filter(~edge & lasting(min_dwell_s)).select(STAY_COLUMNS)
    return whole, pieces.filter(edge).with_columns(pl.lit(number, pl.Int64).alias("_window"))


def stays_of(parts: list[tuple[pl.DataFrame, pl.DataFrame]], /, *, max_gap_s: int, min_dwell_s: int) -> pl.DataFrame:
    """The stays from the tasks' ``window_stays``: the whole ones, and the edge pieces joined across windows."""
    whole = [done for done, _ in parts]
    edges = [pieces for _, pieces in parts] or [pl.DataFrame(schema=PIECES)]
    joined = joined_stays(pl.concat(edges, how="vertical_relaxed"), max_gap_s=max_gap_s, min_dwell_s=min_dwell_s)
    return tidy_stays(pl.concat([*whole, joined], how="vertical_relaxed"))


def joined_stays(pieces: pl.DataFrame, /, *, max_gap_s: int, min_dwell_s: int) -> pl.DataFrame:
    """Stays of consecutive windows joined where one holds its device's last ping of a window and the next, in the same
    place, its first ping of the next window, within ``max_gap_s``; then those lasting ``min_dwell_s``, as one process
    gives them (device_id, place_id, start, end, pings)."""
    # in a window, the stay that opens it first and the one that closes it last (pings of one time can start two stays)
    pieces = pieces.sort("device_id", "place_id", "_window", "opens", "closes", "start",
                         descending=[False, False, False, True, False, False])
    same = (pl.col("device_id") == pl.col("device_id").shift(1)) & (pl.col("place_id") == pl.col("place_id").shift(1))
    goes_on = (same & pl.col("closes").shift(1) & pl.col("opens") & (pl.col("_window") == pl.col("_window").shift(1) + 1)
               & ((pl.col("start") - pl.col("end").shift(1)).dt.total_microseconds() <= max_gap_s * 10**6)).fill_null(False)
    stays = (pieces.with_columns((~goes_on).cast(pl.Int64).cum_sum().alias("_stay"))
             .group_by("_stay", maintain_order=True)
             .agg(pl.col("device_id").first(), pl.col("place_id").first(), pl.col("start").min(), pl.col("end").max(),
                  pl.col("pings").sum()))
    return stays.filter(lasting(min_dwell_s)).select(STAY_COLUMNS)
