"""What is usual, learned from the lake's history, for the live watcher.

Places: distinct devices in 15-minute windows, per place and quarter-hour of the day (rush hours change within an hour),
weekdays apart from weekend days: the median (``usual``) and the MAD, for a kind of day the history holds at least
``MIN_KIND_DAYS`` days of (none otherwise: a weekday says nothing of a Sunday). Every place counts at every quarter-hour of the history's days, an empty one
as zero.

Sensors: each reading per sensor, metric and hour of day (by kind of day the same way): median and MAD; and per metric a ceiling
of ten times the 90th percentile, beyond which a value is impossible.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from citylake.lake import Lake, scan
from citylake.queries import Filters, footfall

MIN_HISTORY_DAYS = 3  # fewer days of history than this cannot tell a surge from an ordinary day
MIN_KIND_DAYS = 2  # days of a kind (weekday / weekend) the history needs before that kind of day has a usual
WINDOW = "15min"


def slot_of(column: str = "bucket", *, quarters: bool = False) -> list[pl.Expr]:
    """The baseline's slot of a timestamp: its hour of day (or quarter-hour, 0-95), and whether it falls on a weekend."""
    slot = pl.col(column).dt.hour().cast(pl.Int16) * 4 + pl.col(column).dt.minute() // 15 if quarters else pl.col(column).dt.hour()
    return [slot.cast(pl.Int16).alias("slot"), (pl.col(column).dt.weekday() >= 6).alias("weekend")]


def _spread(grid: pl.DataFrame, keys: list[str], value: str) -> pl.DataFrame:
    stats = grid.with_columns(pl.col(value).median().over(keys).alias("usual"))
    return (stats.group_by(keys).agg(pl.col("usual").first(), (pl.col(value) - pl.col("usual")).abs().median().alias("mad"),
                                     pl.col("day").n_unique().alias("days")))


def _usual(grid: pl.DataFrame, entity: list[str], value: str) -> pl.DataFrame:
    """Per entity, slot and kind of day: the usual and its spread, where the history holds ``MIN_KIND_DAYS`` days of that
    kind. A weekday's usual says nothing of a Sunday's, so a kind of day without history has no usual at all."""
    return _spread(grid, [*entity, "slot", "weekend"], value).filter(pl.col("days") >= MIN_KIND_DAYS).drop("days")


def days_of_kind(days: pl.Series) -> dict[bool, int]:
    """How many weekdays (False) and weekend days (True) ``days`` holds."""
    weekend = (days.dt.weekday() >= 6).value_counts()
    counts = dict(zip(weekend[weekend.columns[0]], weekend["count"]))
    return {False: counts.get(False, 0), True: counts.get(True, 0)}


def history_window(day: dt.date, days: int) -> Filters:
    start = dt.datetime.combine(day - dt.timedelta(days=days), dt.time(), dt.timezone.utc)
    return Filters(start=start, end=dt.datetime.combine(day, dt.time(), dt.timezone.utc))


def place_baselines(lake: Lake, place_ids: list[str], window: Filters) -> tuple[pl.DataFrame, dict[bool, int]]:
    """(place_id, slot, weekend, usual, mad) of devices per 15-minute window by quarter-hour slot over ``window``, and the
    weekdays and weekend days it had (no usual at all under ``MIN_HISTORY_DAYS`` days)."""
    counts = pl.from_arrow(footfall(lake, by="place", freq=WINDOW, filters=window, k=1, engine_name="polars").table)
    counts = counts.select("place_id", "bucket", pl.col("devices").cast(pl.Float64))
    days = counts.select(pl.col("bucket").dt.truncate("1d").unique().alias("day"))
    if days.height < MIN_HISTORY_DAYS:
        return pl.DataFrame(schema={"place_id": pl.String, "slot": pl.Int16, "weekend": pl.Boolean, "usual": pl.Float64,
                                    "mad": pl.Float64}), days_of_kind(days["day"])
    quarters = days.join(pl.DataFrame({"q": pl.int_range(0, 96, eager=True)}), how="cross").select(
        "day", (pl.col("day") + pl.duration(minutes=15 * pl.col("q"))).alias("bucket"))
    grid = (pl.DataFrame({"place_id": place_ids}).join(quarters, how="cross")
            .join(counts, on=["place_id", "bucket"], how="left").with_columns(pl.col("devices").fill_null(0.0), *slot_of(quarters=True)))
    return _usual(grid, ["place_id"], "devices"), days_of_kind(days["day"])


def sensor_baselines(lake: Lake, window: Filters) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(sensor_id, metric, slot, weekend, usual, mad) per hour slot of readings over ``window``; and (metric, ceiling)."""
    raw = (scan(lake, "readings").filter(window.ping_expr()).select("sensor_id", "metric", "ts", "value")
           .with_columns(pl.col("ts").dt.truncate("1d").alias("day"), *slot_of("ts")).collect())
    ceiling = raw.group_by("metric").agg((pl.col("value").quantile(0.9) * 10).alias("ceiling"))
    return _usual(raw, ["sensor_id", "metric"], "value"), ceiling
