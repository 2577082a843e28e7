"""What is usual, learned from the lake's history, for the live watcher.

Places: distinct devices in 15-minute windows, per place and quarter-hour of the day (rush hours change within an hour),
weekdays apart from weekend days: the median (``usual``) and the MAD, for a kind of day the history holds at least
``MIN_KIND_DAYS`` days of (none otherwise: a weekday says nothing of a Sunday). Every place counts at every quarter-hour of
the history's days, an empty one as zero.

Sensors: each reading per sensor, metric and hour of day (by kind of day the same way): median and MAD; and per metric a ceiling
of ten times the 90th percentile, beyond which a value is impossible.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from citylake.analytics.scoring import MEDIAN_ERROR
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


def released_place_baselines(lake: Lake, place_ids: list[str], window: Filters) -> tuple[pl.DataFrame, dict[bool, int]]:
    """(place_id, slot, weekend, usual, mad) of devices per hour by hour of day, from the footfall release of the days of
    ``window`` that were released (a place-hour the release left out counts as at that day's threshold: it was at most
    that), and the weekdays and weekend days released. Post-processing of a release: anyone's to compute, so a line drawn
    from it says nothing more of anyone."""
    days = (scan(lake, "releases").filter((pl.col("table_name") == "footfall_hourly")
                                          & pl.col("day").is_between(window.start.date(), window.end.date(), closed="left"))
            .select(pl.col("day").cast(pl.Datetime("us", "UTC")), pl.col("threshold").cast(pl.Float64)).unique("day").collect())
    counts = (scan(lake, "footfall_hourly").filter(pl.col("bucket").is_between(window.start, window.end, closed="left"))
              .select("place_id", "bucket", pl.col("devices").cast(pl.Float64)).collect())
    hours = days.join(pl.DataFrame({"h": pl.int_range(0, 24, eager=True)}), how="cross").select(
        "day", "threshold", (pl.col("day") + pl.duration(hours=pl.col("h"))).alias("bucket"))
    grid = (pl.DataFrame({"place_id": place_ids}).join(hours, how="cross").join(counts, on=["place_id", "bucket"], how="left")
            .with_columns(pl.col("devices").fill_null(pl.col("threshold")), *slot_of()))
    return _usual(grid, ["place_id"], "devices"), days_of_kind(days["day"])


def sensor_baselines(lake: Lake, window: Filters) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(sensor_id, metric, slot, weekend, usual, mad) per hour slot of readings over ``window``; and (metric, ceiling)."""
    raw = (scan(lake, "readings").filter(window.ping_expr()).select("sensor_id", "metric", "ts", "value")
           .with_columns(pl.col("ts").dt.truncate("1d").alias("day"), *slot_of("ts")).collect())
    ceiling = raw.group_by("metric").agg((pl.col("value").quantile(0.9) * 10).alias("ceiling"))
    return _usual(raw, ["sensor_id", "metric"], "value"), ceiling


# -- the batch detector's usual: every hour of the window judged against the other days ----------------------------------

SHRINK_DAYS = 2.0  # a usual learned from n days leans on the pooled one as if it were worth this many days
EXTRA_FLOOR_USUAL = 5.0  # slots usually this busy or more say how far a place's days differ beyond Poisson noise


def hourly_usual(series: pl.DataFrame, /, *, tz: str = "UTC", value: str = "devices") -> pl.DataFrame:
    """Each place-hour of ``series`` (place_id, bucket, value: every hour of the days with data) with the usual for it and
    how sure that usual is: ``usual``, ``extra`` (spread beyond Poisson) and ``days`` (other days of its kind it was
    learned from), or a null usual where the history cannot support one (fewer than ``MIN_KIND_DAYS`` other days of its
    kind, or fewer than ``MIN_HISTORY_DAYS`` other days in all).

    Slots are the hour of the day and the kind of day (weekday / weekend) in the city's time zone ``tz``. The usual of one
    day's hour is learned from the *other* days (leave one out: in a short window an event would otherwise raise its own
    usual): the median of the same slot on the other days of its kind, shrunk toward a pooled usual — the same hour's
    median over all other days, scaled by how busy days of this kind are — by ``SHRINK_DAYS`` days' worth. The spread
    beyond Poisson noise is the slot's MAD less its Poisson part, shrunk likewise toward the place's typical
    overdispersion (a MAD of three days says little)."""
    local = pl.col("bucket").dt.convert_time_zone(tz)
    keyed = series.with_columns(local.dt.date().alias("day"), local.dt.hour().cast(pl.Int16).alias("slot"),
                                (local.dt.weekday() >= 6).alias("weekend"))
    kind, hour = ["place_id", "weekend", "slot"], ["place_id", "slot"]
    keyed = keyed.with_columns(_leave_one_out_median(value, kind).alias("kind_median"), (pl.len().over(kind) - 1).alias("days"),
                               _leave_one_out_median(value, hour).alias("hour_median"))
    # how busy a day of this kind is against all days (the place's daily totals): a Sunday in a park, a Sunday downtown
    totals = keyed.group_by("place_id", "day", "weekend").agg(pl.col(value).sum().alias("total"))
    level = (totals.with_columns(pl.col("total").median().over("place_id", "weekend").alias("kind_total"),
                                 pl.col("total").median().over("place_id").alias("all_total"),
                                 pl.len().over("place_id").alias("all_days"))
             .select("place_id", "day", ((pl.col("kind_total") + 1) / (pl.col("all_total") + 1)).alias("kind_level"),
                     (pl.col("all_days") - 1).alias("other_days")))
    keyed = keyed.join(level, on=["place_id", "day"], how="left")
    pooled = pl.col("hour_median") * pl.col("kind_level")
    usual = ((pl.col("days") * pl.col("kind_median") + SHRINK_DAYS * pooled) / (pl.col("days") + SHRINK_DAYS))
    supported = (pl.col("days") >= MIN_KIND_DAYS) & (pl.col("other_days") >= MIN_HISTORY_DAYS)
    keyed = keyed.with_columns(pl.when(supported).then(usual).alias("usual"))
    # the spread beyond Poisson: per slot from its MAD, shrunk toward the place's typical spread; never under the latter
    spread = keyed.with_columns(pl.col(value).median().over(kind).alias("slot_median")).with_columns(
        (pl.col(value) - pl.col("slot_median")).abs().median().over(kind).alias("mad"))
    spread = spread.with_columns(((1.4826 * pl.col("mad")) ** 2 - pl.col("slot_median")).clip(0.0).alias("slot_extra2"))
    alpha = _overdispersion(spread, value)
    spread = spread.join(alpha, on="place_id", how="left").with_columns(pl.col("alpha").fill_null(alpha["alpha"].median() or 0.0))
    pooled = pl.col("alpha") * pl.col("usual") ** 2
    extra2 = pl.max_horizontal((pl.col("days") * pl.col("slot_extra2") + SHRINK_DAYS * pooled) / (pl.col("days") + SHRINK_DAYS), pooled)
    return spread.with_columns(extra2.sqrt().alias("extra")).drop("kind_median", "hour_median", "kind_level", "slot_median", "mad",
                                                                  "slot_extra2", "alpha")


CHI2_MEDIAN = 0.4549  # the median of a squared standard normal
ALPHAS = (0.0, 0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.06, 0.08, 0.12, 0.16, 0.24, 0.32, 0.48, 0.64, 1.0)


def _overdispersion(scored: pl.DataFrame, value: str) -> pl.DataFrame:
    """Per place, how far its hours stray from their usual beyond Poisson noise, as a share of the usual squared (the
    negative binomial's alpha): the smallest of ``ALPHAS`` under which the median squared deviation, in units of its
    variance usual·(1 + 1.57/n) + alpha·usual², is at most a squared standard normal's median — over every hour usually at
    least ``EXTRA_FLOOR_USUAL`` busy (hundreds of hours, where a slot has a few days; robust to the few that are events)."""
    busy = scored.filter(pl.col("usual") >= EXTRA_FLOOR_USUAL).select(
        "place_id", (pl.col(value) - pl.col("usual")) ** 2, pl.col("usual") * (1 + MEDIAN_ERROR / pl.col("days")),
        (pl.col("usual") ** 2).alias("usual2"))
    busy.columns = ["place_id", "deviation2", "poisson", "usual2"]
    tried = busy.join(pl.DataFrame({"alpha": ALPHAS}), how="cross").group_by("place_id", "alpha").agg(
        (pl.col("deviation2") / (pl.col("poisson") + pl.col("alpha") * pl.col("usual2"))).median().alias("scaled"))
    fitting = tried.filter(pl.col("scaled") <= CHI2_MEDIAN).group_by("place_id").agg(pl.col("alpha").min())
    return busy.select("place_id").unique().join(fitting, on="place_id", how="left").with_columns(pl.col("alpha").fill_null(ALPHAS[-1]))


def _leave_one_out_median(value: str, keys: list[str]) -> pl.Expr:
    """The median of ``value`` over the other rows of its group (the rows of the group less this one), without pairing every
    row with every other: removing the row of rank r from the sorted values shifts the positions at or after r by one."""
    ordered = pl.col(value).sort().over(keys, mapping_strategy="join")
    rank = pl.col(value).rank("ordinal").over(keys).cast(pl.Int64) - 1
    rest = pl.len().over(keys).cast(pl.Int64) - 1

    def at(position: pl.Expr) -> pl.Expr:  # the value at ``position`` among the rest, read from the full sorted list
        return ordered.list.get(pl.when(position < rank).then(position).otherwise(position + 1), null_on_oob=True)

    low, high = (rest - 1) // 2, rest // 2
    return pl.when(rest > 0).then((at(low) + at(high)) / 2)
