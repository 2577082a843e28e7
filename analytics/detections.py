"""The ``detections`` table: what the batch detector found, one row per episode, for batch jobs to read by machine.

It lives in the steward zone: its usuals and scores were learned from exact counts of people (k = 1 inside the
analysis), and only a crowd of at least k devices is a detection. A run over a window replaces the rows of every
detection overlapping that window, so a rerun writes the same rows and a longer history refines them.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from citylake.analytics.alerts import alert_id as detection_id  # one id scheme: kind, where, start
from citylake.analytics.detect import Analysis
from citylake.lake import Lake, scan

COLUMNS = ("detection_id", "kind", "place_id", "sensor_ids", "start", "end", "peak", "peak_z", "severity", "evidence", "computed_at")


def detection_rows(analysis: Analysis, /, *, now: dt.datetime | None = None) -> pl.DataFrame:
    """The analysis's detections as rows of the table: an id from what, where and since when; sensors as text."""
    now = now or dt.datetime.now(dt.timezone.utc)
    found = analysis.detections.with_columns(pl.col("sensor_ids").list.join(",").replace("", None).alias("sensor_ids"))
    ids = [detection_id(r["kind"], r["place_id"] or r["sensor_ids"] or "", r["start"]) for r in found.iter_rows(named=True)]
    return found.with_columns(pl.Series("detection_id", ids, pl.String), pl.lit(now).dt.cast_time_unit("us").alias("computed_at"),
                              pl.col("peak_z").cast(pl.Float64)).select(COLUMNS)


def save(lake: Lake, analysis: Analysis, /, *, start: dt.datetime | None = None, end: dt.datetime | None = None) -> pl.DataFrame:
    """Write the analysis's detections over the window [start, end): they replace every row overlapping it. Returns the rows."""
    rows = detection_rows(analysis)
    where = [f"\"end\" > '{start.isoformat()}'" if start else None, f"start < '{end.isoformat()}'" if end else None]
    predicate = " AND ".join(w for w in where if w) or "true"
    lake.replace_where("detections", rows, predicate=predicate)
    return rows


def read(lake: Lake, /, *, start: dt.datetime | None = None, end: dt.datetime | None = None) -> pl.DataFrame:
    """The stored detections overlapping [start, end), by start."""
    rows = scan(lake, "detections")
    if start is not None:
        rows = rows.filter(pl.col("end") > start)
    if end is not None:
        rows = rows.filter(pl.col("start") < end)
    return rows.sort("start", "place_id").collect()
