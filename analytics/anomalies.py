"""Anomalies against a seasonal baseline, and sensor faults told apart from real events.

Baseline: for each entity (a place's footfall, a sensor's metric) and each hour of day — split
weekday / weekend when history has both — the median and the MAD over the history. A bucket's
robust z-score is (value − median) / (1.4826 · MAD), with the MAD floored so that very regular
series do not turn noise into alarms. Consecutive flagged buckets form an episode.

Faults are properties of one sensor's raw readings: a flat line (the same value for two hours),
impossible values (negative, or ten times beyond what 90% of the metric's readings stay under; a
broken sensor's jumps to 0 are caught as anomalies explained by its flat line or silence nearby),
and silence (no reading for an hour). An anomaly on a sensor that is
faulty at the time is a fault, not an event.
"""

from __future__ import annotations

import polars as pl

from citylake.h3_index import CitylakeError


class AnalysisInputError(CitylakeError):
    """Nothing to analyse."""

Z_THRESHOLD = 4.0  # robust z beyond which a bucket is unusual
MAD_FLOOR_SHARE = 0.05  # the MAD is at least this share of the median (and at least 1 unit)
FLAT_READINGS = 8  # this many equal consecutive readings (two hours at 15 min) is a flat line
SILENCE = "1h"  # no reading for this long is silence


def robust_z(series: pl.DataFrame, /, *, entity: list[str], value: str = "value", tz: str = "UTC") -> pl.DataFrame:
    """``series`` (entity columns, bucket, value) with median, mad and z per hour-of-day baseline (hours and weekends in
    the city's time zone ``tz``)."""
    local = pl.col("bucket").dt.convert_time_zone(tz)
    weekend = (local.dt.weekday() >= 6).alias("weekend")
    weekend_split = series.select(weekend.n_unique()).item() > 1
    keyed = series.with_columns(local.dt.hour().alias("hour"), *([weekend] if weekend_split else []))
    keys = [*entity, "hour", *(["weekend"] if weekend_split else [])]
    keyed = keyed.with_columns(pl.col(value).median().over(keys).alias("median"))
    keyed = keyed.with_columns((pl.col(value) - pl.col("median")).abs().median().over(keys).alias("mad"))
    spread = pl.max_horizontal(1.4826 * pl.col("mad"), MAD_FLOOR_SHARE * pl.col("median").abs(), pl.lit(1.0))
    return keyed.with_columns(((pl.col(value) - pl.col("median")) / spread).alias("z"))


def episodes(scored: pl.DataFrame, /, *, entity: list[str], threshold: float = Z_THRESHOLD, step: str = "1h",
             flag: pl.Expr | None = None, keep: tuple[str, ...] = ()) -> pl.DataFrame:
    """Runs of consecutive buckets with |z| ≥ threshold (or where ``flag`` holds): entity, start, end (exclusive), buckets,
    peak z, the peak's bucket, direction, and the ``keep`` columns at the peak."""
    flagged = scored.filter(pl.col("z").abs() >= threshold if flag is None else flag).sort(*entity, "bucket")
    if flagged.is_empty():
        return pl.DataFrame(schema={**{e: scored.schema[e] for e in entity}, "start": scored.schema["bucket"],
                                    "end": scored.schema["bucket"], "buckets": pl.UInt32, "peak_z": pl.Float64,
                                    "peak": scored.schema["bucket"], **{c: scored.schema[c] for c in keep}, "direction": pl.String})
    gap = pl.col("bucket") - pl.col("bucket").shift(1) != pl.duration(hours=1) if step == "1h" else pl.lit(True)
    same = pl.all_horizontal([pl.col(e) == pl.col(e).shift(1) for e in entity])
    new = (~same | gap).fill_null(True)
    runs = flagged.with_columns(new.cum_sum().alias("run"))
    return (runs.group_by(*entity, "run")
            .agg(pl.col("bucket").min().alias("start"), (pl.col("bucket").max() + pl.duration(hours=1)).alias("end"),
                 pl.len().alias("buckets"), pl.col("z").get(pl.col("z").abs().arg_max()).round(1).alias("peak_z"),
                 pl.col("bucket").get(pl.col("z").abs().arg_max()).alias("peak"),
                 *(pl.col(c).get(pl.col("z").abs().arg_max()) for c in keep))
            .with_columns(pl.when(pl.col("peak_z") > 0).then(pl.lit("above")).otherwise(pl.lit("below")).alias("direction"))
            .drop("run").sort(*entity, "start"))


def sensor_faults(readings: pl.DataFrame, /) -> pl.DataFrame:
    """Fault episodes per sensor from raw readings (sensor_id, ts, metric, value): sensor_id, metric, fault, start, end."""
    ordered = readings.sort("sensor_id", "metric", "ts")
    by = ["sensor_id", "metric"]
    ceiling = ordered.group_by("metric").agg((pl.col("value").quantile(0.9) * 10).alias("ceiling"))  # robust to a few broken sensors
    marked = ordered.join(ceiling, on="metric").with_columns(
        (pl.col("value") != pl.col("value").shift(1).over(by)).fill_null(True).cum_sum().over(by).alias("level"),
        ((pl.col("value") < 0) | (pl.col("value") > pl.col("ceiling"))).alias("impossible"),
        ((pl.col("ts") - pl.col("ts").shift(1).over(by)) > pl.duration(hours=1)).fill_null(False).alias("after_silence"))
    # a faulty reading stands for its sensor's usual interval: one bad reading is a fault from it to the next (an end is
    # exclusive, and a fault of one reading must not be empty)
    marked = marked.with_columns((pl.col("ts") - pl.col("ts").shift(1).over(by)).median().over(by).fill_null(pl.duration(minutes=1))
                                 .alias("interval"))
    last = (pl.col("ts") + pl.col("interval")).max().alias("end")
    flat = (marked.group_by(*by, "level").agg(pl.len().alias("n"), pl.col("ts").min().alias("start"), last)
            .filter(pl.col("n") >= FLAT_READINGS).with_columns(pl.lit("flat line").alias("fault")))
    impossible = (marked.filter(pl.col("impossible")).group_by(*by)
                  .agg(pl.col("ts").min().alias("start"), last, pl.len().alias("n"))
                  .with_columns(pl.lit("impossible values").alias("fault")))
    silence = (marked.filter(pl.col("after_silence"))
               .select(*by, (pl.col("ts") - pl.duration(hours=1)).alias("start"), pl.col("ts").alias("end"),
                       pl.lit(1, pl.UInt32).alias("n"))
               .with_columns(pl.lit("silence").alias("fault")))
    columns = [*by, "fault", "start", "end", "n"]
    return pl.concat([f.select(columns) for f in (flat, impossible, silence)], how="vertical_relaxed").sort(*by, "start")
