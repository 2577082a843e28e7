"""The situational-analysis job: series from the lake (fanned out over days with Dask, through the
same ``queries`` functions as every other output), anomalies and faults, and detections that say
what is unusual, where, since when, and on what evidence.
"""

from __future__ import annotations

import datetime as dt
import time
import zoneinfo
from dataclasses import dataclass, field

import polars as pl

from citylake.analytics.anomalies import episodes, robust_z, sensor_faults
from citylake.analytics.baselines import MIN_HISTORY_DAYS, MIN_KIND_DAYS, hourly_usual
from citylake.analytics.hotspots import emerging, getis_ord
from citylake.analytics.scoring import (
    DROP,
    FAULT,
    HIGH_Z,
    READINGS,
    SEVERITY_RANK,
    SURGE,
    count_z,
    drop_severity,
    is_surge,
    surge_judgement,
)
from citylake.h3_index.threads import thread_map
from citylake.lake import Lake, registry, scan
from citylake.lake.storage import Storage
from citylake.queries import DEFAULT_K, Filters, engine, footfalls
from citylake.queries.windows import days_of

UTC = dt.timezone.utc
HOTSPOT_RES = 9
MERGE_GAP = pl.duration(hours=2)  # detections of one place closer than this are one episode


@dataclass
class Analysis:
    detections: pl.DataFrame  # kind (scoring.KINDS), place_id, sensor_ids, start, end, peak, peak_z, severity, evidence
    faults: pl.DataFrame
    place_scores: pl.DataFrame  # hourly devices per place with its usual (null: not judged, too little history) and z
    sensor_scores: pl.DataFrame  # hourly mean per sensor and metric with baseline and z
    hotspots: pl.DataFrame  # Gi* of pings per cell over the window
    trends: pl.DataFrame  # emerging / persistent / fading cells over the days
    seconds: dict[str, float] = field(default_factory=dict)  # the Dask part and the detection part
    timezone: str = "UTC"  # the city's: hours of the day and weekends were judged in it
    k: int = DEFAULT_K  # no crowd of fewer devices is detected

    def history_needed(self, place_ids: list[str], start: dt.datetime | None = None, end: dt.datetime | None = None) -> str | None:
        """Why some hours of these places in the window were not judged, as a reader should be told it ("needs 2 more
        days of history for places like this: …"); None when every hour was judged."""
        return history_needed(self.place_scores, place_ids, start, end)


HISTORY_DAYS = 28  # days of pings either side of an analysed window that teach the places' usual (as the watcher's default)
UTC_MIN, UTC_MAX = dt.datetime.min.replace(tzinfo=UTC), dt.datetime.max.replace(tzinfo=UTC)
MAX_GRID_ROWS = 200_000_000  # place-hours scored at once (about 5 GB of series); beyond it, say how to narrow the window


def _history_days(lake: Lake, start: dt.datetime | None, end: dt.datetime | None, *, analysed: set[dt.date]) -> list[dt.date]:
    """Days with pings within ``HISTORY_DAYS`` of a window, outside it: what is usual is learned from them as well."""
    if start is None and end is None:
        return []
    low = (start or UTC_MIN + dt.timedelta(days=HISTORY_DAYS)).date() - dt.timedelta(days=HISTORY_DAYS)
    high = (end or UTC_MAX - dt.timedelta(days=HISTORY_DAYS)).date() + dt.timedelta(days=HISTORY_DAYS)
    return [day for day in days_of(lake, None, None) if low <= day <= high and day not in analysed]


MIN_TASKS = 8  # enough tasks to keep every worker of a small cluster busy to the end
TASK_PINGS = 2_000_000  # pings a task holds at most (~350 MB at its peak), so a worker needs no more memory for a larger lake


def task_hours(days: int, busiest_day: int) -> int:
    """Hours of pings per Dask task: a whole day when it can (a task reads its day's files, so fewer tasks read less),
    else the longest part of a day that gives the cluster ``MIN_TASKS`` tasks and keeps each under ``TASK_PINGS``.
    Hours divide the day, so hourly series split exactly at task edges."""
    return next((hours for hours in (24, 12, 8, 6, 4, 3, 2)
                 if days * 24 // hours >= MIN_TASKS and busiest_day * hours / 24 <= TASK_PINGS), 1)


def window_series(lake_uri: str, storage: Storage | None, start: dt.datetime, hours: int, history: bool = False) -> dict[str, pl.DataFrame]:
    """One window's inputs, through the queries layer (one Dask task; it opens the lake itself from its URI and storage
    settings, so it runs in any worker that can reach the lake: the same disk, or the object store).
    Everything is per hour, so windows aligned to hours add up exactly. A ``history`` window (a day around the one
    analysed, to learn what is usual from) gives only the places' and sensors' hourly series."""
    lake = Lake.open(lake_uri, storage=storage)
    window = Filters(start=start, end=start + dt.timedelta(hours=hours))
    sensor_ids = registry.sensors(lake, columns=("sensor_id",))["sensor_id"].to_list()
    hourly = engine("polars", lake).readings(sensor_ids=sensor_ids, freq="1h", filters=window)
    if history:
        places = pl.from_arrow(footfalls(lake, views=[("place", None)], freq="1h", filters=window, k=1, engine_name="polars")[0].table)
        return {"places": places, "readings": hourly}
    # a steward job: k applies to what it outputs (reports), not to the baselines it learns from
    places, cells = (pl.from_arrow(result.table) for result in footfalls(
        lake, views=[("place", None), ("cell", HOTSPOT_RES)], freq="1h", filters=window, k=1, engine_name="polars"))
    # hotspots use pings per cell and day and the most devices in one hour; both combine across windows (a sum, a
    # max), so hours need not travel back to the client
    cells = cells.group_by("h3_cell", pl.col("bucket").dt.truncate("1d").alias("day")).agg(
        pl.col("pings").sum(), pl.col("devices").max().alias("most_devices_in_an_hour"))
    raw = scan(lake, "readings").filter(window.ping_expr()).select("sensor_id", "ts", "metric", "value").collect()
    return {"places": places, "cells": cells, "readings": hourly, "raw": raw}


def analyse(lake: Lake, /, *, start: dt.datetime | None = None, end: dt.datetime | None = None, client=None, k: int = DEFAULT_K,
            tz: str | None = None) -> Analysis:
    """Run the analysis over the lake's days (Dask: ``client`` a distributed Client, else local threads); no crowd under
    ``k`` devices is detected; hours of the day are the lake's time zone's (or ``tz``'s). A window with days of pings
    around it (up to ``HISTORY_DAYS`` before and after) learns the places' usual from them too."""
    import dask

    days = days_of(lake, start, end)
    hours = task_hours(len(days), max(days.values(), default=0))
    windows = [dt.datetime.combine(day, dt.time(), UTC) + dt.timedelta(hours=h) for day in days for h in range(0, 24, hours)]
    windows = [w for w in windows if (start is None or w >= start - dt.timedelta(hours=hours)) and (end is None or w < end)]
    tasks = [dask.delayed(window_series)(lake.uri, lake.storage, w, hours) for w in windows]
    if not tasks:  # no pings in the window: nothing to analyse, but an empty analysis still makes a report
        from citylake.analytics.anomalies import AnalysisInputError

        raise AnalysisInputError("no pings in the lake for this window; ingest pings (`citylake ingest pings`) or widen --from/--to")
    tasks += [dask.delayed(window_series)(lake.uri, lake.storage, dt.datetime.combine(day, dt.time(), UTC), 24, True)
              for day in _history_days(lake, start, end, analysed=set(days))]
    started = time.perf_counter()
    options = {"k": k, "tz": tz or lake.timezone, "window": (start, end)}
    if client is None:
        parts = dask.compute(*tasks, scheduler="threads")
        fanned_out = time.perf_counter() - started
        result = detect_parts(lake, parts, **options)
    else:  # the window series stay on the workers; detection runs there too: anomalies and hotspots, a task each
        from distributed import wait

        parts = client.compute(tasks)
        wait(parts)
        fanned_out = time.perf_counter() - started
        found = client.submit(anomalies_task, lake.uri, lake.storage, parts, **options, pure=False)
        spots = client.submit(hotspots_task, parts, pure=False)
        result = analysis_of(found.result(), spots.result(), k=k, tz=options["tz"])
    result.seconds = {"series_on_dask": round(fanned_out, 2), "detection": round(time.perf_counter() - started - fanned_out, 2)}
    return result


def anomalies_task(lake_uri: str, storage: Storage | None, parts: list[dict[str, pl.DataFrame]], /, **options) -> Anomalies:
    """The anomalies half of detection as a Dask task: the lake opened from its URI and storage settings, the window
    series handed over by Dask."""
    return find_anomalies(Lake.open(lake_uri, storage=storage), _gathered(parts, "places"), _gathered(parts, "readings"),
                          _gathered(parts, "raw"), **options)


def hotspots_task(parts: list[dict[str, pl.DataFrame]], /) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The hotspots half of detection as a Dask task, beside the anomalies on another worker."""
    return _hotspots(_gathered(parts, "cells"))


def detect_parts(lake: Lake, parts, /, **options) -> Analysis:
    """``detect`` over the window series the fan-out made, concatenated per kind."""
    return detect(lake, *(_gathered(parts, name) for name in ("places", "cells", "readings", "raw")), **options)


def _gathered(parts: list[dict[str, pl.DataFrame]], name: str) -> pl.DataFrame:
    return pl.concat([p[name] for p in parts if name in p], how="vertical_relaxed")


Anomalies = tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]  # place scores, sensor scores, faults, detections


def detect(lake: Lake, places: pl.DataFrame, cells: pl.DataFrame, hourly: pl.DataFrame, raw: pl.DataFrame, /, *,
           k: int = DEFAULT_K, tz: str = "UTC", window: tuple[dt.datetime | None, dt.datetime | None] = (None, None)) -> Analysis:
    """Anomalies, faults and detections on one thread while the hotspots are scored on another (both mostly run
    outside the GIL; on a cluster the two are tasks of their own after the fan-out, in the client otherwise). ``places``
    may hold days outside ``window`` to learn the usual from; only the window's hours are scored."""
    found, spots = thread_map(lambda part: part(), [
        lambda: find_anomalies(lake, places, hourly, raw, k=k, tz=tz, window=window), lambda: _hotspots(cells)])
    return analysis_of(found, spots, k=k, tz=tz)


def find_anomalies(lake: Lake, places: pl.DataFrame, hourly: pl.DataFrame, raw: pl.DataFrame, /, *, k: int, tz: str,
                   window: tuple[dt.datetime | None, dt.datetime | None]) -> Anomalies:
    """Places' and sensors' hourly scores (the window's hours), sensor faults, and the detections they make."""
    place_scores = score_places(_complete(places.select("place_id", "bucket", pl.col("devices").cast(pl.Float64)), ["place_id"],
                                          "devices"), k=k, tz=tz)
    sensor_scores = robust_z(hourly.select("sensor_id", "metric", "bucket", pl.col("mean").alias("value")),
                             entity=["sensor_id", "metric"], tz=tz)
    start, end = window
    if start is not None or end is not None:
        inside = pl.col("bucket").is_between(start or UTC_MIN, end or UTC_MAX, closed="left")
        place_scores, sensor_scores = place_scores.filter(inside), sensor_scores.filter(inside)
    faults = sensor_faults(raw)
    return place_scores, sensor_scores, faults, _detections(lake, place_scores, sensor_scores, faults, k=k, tz=tz)


def analysis_of(found: Anomalies, spots: tuple[pl.DataFrame, pl.DataFrame], /, *, k: int, tz: str) -> Analysis:
    place_scores, sensor_scores, faults, detections = found
    hotspots, trends = spots
    return Analysis(detections, faults, place_scores, sensor_scores, hotspots, trends, timezone=tz, k=k)


def score_places(series: pl.DataFrame, /, *, k: int = DEFAULT_K, tz: str = "UTC") -> pl.DataFrame:
    """Each place-hour (place_id, bucket, devices) against its usual (``baselines.hourly_usual``): count-aware z
    (``scoring.count_z``), the ratio to the usual, and whether it is a surge (``scoring.is_surge``; null where not judged)."""
    if series.is_empty():
        return series.with_columns(*(pl.lit(None, t).alias(c) for c, t in (
            ("day", pl.Date), ("slot", pl.Int16), ("weekend", pl.Boolean), ("days", pl.UInt32), ("other_days", pl.UInt32),
            ("usual", pl.Float64), ("extra", pl.Float64), ("z", pl.Float64), ("ratio", pl.Float64), ("surge", pl.Boolean))))
    scored = hourly_usual(series, tz=tz).with_columns(count_z(days="days").alias("z"),
                                                      (pl.col("devices") / pl.col("usual").clip(1.0)).alias("ratio"))
    return scored.with_columns(is_surge(k).alias("surge"))


def history_needed(place_scores: pl.DataFrame, place_ids: list[str], start: dt.datetime | None = None,
                   end: dt.datetime | None = None) -> str | None:
    """What the history lacks for the hours of ``place_ids`` in the window that were not judged, or None."""
    rows = place_scores.filter(pl.col("place_id").is_in(place_ids))
    if start is not None:
        rows = rows.filter(pl.col("bucket") >= start)
    if end is not None:
        rows = rows.filter(pl.col("bucket") < end)
    unjudged = rows.filter(pl.col("usual").is_null())
    if unjudged.is_empty():
        return None
    # days of each kind the lake holds for these places: a usual of one day needs MIN_KIND_DAYS *other* days of its kind
    held = place_scores.filter(pl.col("place_id").is_in(place_ids)).group_by("weekend").agg(pl.col("day").n_unique())
    kinds = {False: 0, True: 0} | dict(zip(held["weekend"], held["day"]))
    wanted = []
    for weekend in sorted(set(unjudged["weekend"].to_list())):
        kind, more_kind = ("weekend days" if weekend else "weekdays"), MIN_KIND_DAYS + 1 - kinds[weekend]
        more_all = MIN_HISTORY_DAYS + 1 - sum(kinds.values())
        more = max(more_kind, more_all, 1)
        wanted.append((more, f"{kind}: {kinds[weekend]} held, an hour's usual takes {MIN_KIND_DAYS} other {kind} and "
                             f"{MIN_HISTORY_DAYS} other days in all"))
    share = unjudged.height / max(rows.height, 1)
    most = max(more for more, _ in wanted)
    return (f"needs {most} more day{'s' if most > 1 else ''} of history for places like this: "
            f"{share:.0%} of the window's hours could not be judged ({'; '.join(why for _, why in wanted)})")


def _hotspots(cells: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Gi* of pings per cell over the window, and the cells' trend over its days (``cells``: h3_cell, day, pings,
    most_devices_in_an_hour, from every window; a day split between windows is added up here)."""
    totals = cells.group_by("h3_cell").agg(pl.col("pings").sum().cast(pl.Float64), pl.col("most_devices_in_an_hour").max())
    daily = cells.group_by("h3_cell", pl.col("day").alias("bucket")).agg(pl.col("pings").sum().cast(pl.Float64))
    hotspots = (getis_ord(totals.select("h3_cell", "pings"), value="pings")
                .join(totals.select("h3_cell", "most_devices_in_an_hour"), on="h3_cell", how="left")
                .with_columns(pl.col("most_devices_in_an_hour").fill_null(0)))
    return hotspots, emerging(daily, value="pings")


def _complete(series: pl.DataFrame, entity: list[str], value: str) -> pl.DataFrame:
    """Every entity at every hour of the days that have data (an hour with no devices is a zero, not a gap). The grid
    follows the days the lake holds, not the span between its first and last row: two rows years apart add two days."""
    if series.is_empty():
        return series
    days = series.select(pl.col("bucket").dt.truncate("1d").unique())
    hours = days.join(pl.DataFrame({"hour": pl.int_range(0, 24, eager=True)}), how="cross").select(
        (pl.col("bucket") + pl.duration(hours=pl.col("hour"))).alias("bucket"))
    hours = hours.filter(pl.col("bucket").is_between(series["bucket"].min(), series["bucket"].max()))
    entities = series.select(entity).unique()
    if entities.height * hours.height > MAX_GRID_ROWS:
        from citylake.analytics.anomalies import AnalysisInputError

        raise AnalysisInputError(f"the analysis would score {entities.height:,} places at {hours.height:,} hours, more than "
                                 f"{MAX_GRID_ROWS:,} values; narrow it with --from/--to or to fewer places")
    grid = entities.join(hours, how="cross")
    return grid.join(series, on=[*entity, "bucket"], how="left").with_columns(pl.col(value).fill_null(0.0))


def _detections(lake: Lake, place_scores: pl.DataFrame, sensor_scores: pl.DataFrame, faults: pl.DataFrame, /, *, k: int,
                tz: str) -> pl.DataFrame:
    sensors = registry.sensors(lake, columns=("sensor_id", "kind", "place_id"))
    fault_windows = faults.group_by("sensor_id").agg(pl.col("start").min(), pl.col("end").max(), pl.col("fault").unique().sort())
    sensor_runs = episodes(sensor_scores, entity=["sensor_id", "metric"], keep=("value", "median"))
    explained = sensor_runs.join(fault_windows, on="sensor_id", how="left", suffix="_fault").filter(
        pl.col("start_fault").is_not_null() & (pl.col("start") <= pl.col("end_fault") + pl.duration(hours=1))
        & (pl.col("end") >= pl.col("start_fault") - pl.duration(hours=1)))
    unexplained = sensor_runs.join(explained.select("sensor_id", "metric", "start"), on=["sensor_id", "metric", "start"], how="anti")
    evidence_sensors = (unexplained.filter(pl.col("buckets") >= 2).join(sensors, on="sensor_id", how="left")
                        .with_columns((pl.col("value") / pl.col("median").clip(1e-9)).alias("ratio"))
                        .select("place_id", "start", "end", "peak", "peak_z", pl.col("sensor_id").alias("source"),
                                pl.when((pl.col("kind") == "traffic") & (pl.col("direction") == "below")).then(pl.lit(DROP))
                                .otherwise(pl.lit(READINGS)).alias("kind"),
                                _sensor_severity().alias("severity"),
                                pl.format("{} {} at {}x its usual for the hour (z={})", "sensor_id", "metric", pl.col("ratio").round(2),
                                          "peak_z").alias("evidence")))
    surges = episodes(place_scores, entity=["place_id"], flag=pl.col("surge").fill_null(False), keep=("ratio", "usual", "devices"))
    surges = surges.filter((pl.col("buckets") >= 2) | (pl.col("peak_z") >= HIGH_Z))  # an hour alone must be beyond doubt
    judged = [surge_judgement(ratio=r["ratio"], z=r["peak_z"], usual=r["usual"], k=k, counted="devices in an hour",
                              when=_slot_words(r["peak"], tz), observed=r["devices"]) for r in surges.iter_rows(named=True)]
    evidence_people = surges.select(
        "place_id", "start", "end", "peak", "peak_z", pl.lit(None, pl.String).alias("source"), pl.lit(SURGE).alias("kind"),
        pl.Series("severity", [severity for severity, _ in judged], pl.String),
        pl.Series("evidence", [f"{words}; {buckets} hour{'s' if buckets > 1 else ''}" for (_, words), buckets
                               in zip(judged, surges["buckets"])], pl.String))
    candidates = pl.concat([evidence_people, evidence_sensors], how="vertical_relaxed").drop_nulls("place_id").sort("place_id", "start")
    events = _fold_into_smaller_places(lake, _merge(candidates))
    fault_rows = fault_windows.join(sensors, on="sensor_id", how="left").select(
        pl.lit(FAULT).alias("kind"), "place_id", pl.concat_list(pl.col("sensor_id")).alias("sensor_ids"), "start", "end",
        pl.col("start").alias("peak"), pl.lit(None, pl.Float64).alias("peak_z"), pl.lit("check sensor").alias("severity"),
        pl.col("fault").list.join(", ").alias("evidence"))
    return pl.concat([events.select(fault_rows.columns), fault_rows], how="vertical_relaxed").sort("start", "place_id")


def _sensor_severity() -> pl.Expr:
    """A traffic counter far under its usual is a drop (``scoring.drop_severity``); readings alone are never high."""
    drop = pl.when(pl.col("ratio") < 0.25).then(pl.lit("high")).otherwise(pl.lit("medium"))
    assert drop_severity(0.2) == "high" and drop_severity(0.3) == "medium"  # the same bands as the watcher's
    return (pl.when((pl.col("kind") == "traffic") & (pl.col("direction") == "below")).then(drop)
            .when(pl.col("peak_z").abs() >= HIGH_Z).then(pl.lit("medium")).otherwise(pl.lit("low")))


def _slot_words(at: dt.datetime, tz: str) -> str:
    """The usual's slot of an hour as a reader says it: "weekday 14:00 Asia/Shanghai"."""
    local = at.astimezone(zoneinfo.ZoneInfo(tz))
    return f"{'weekend' if local.weekday() >= 5 else 'weekday'} {local:%H}:00 {tz}"


def _fold_into_smaller_places(lake: Lake, events: pl.DataFrame) -> pl.DataFrame:
    """A crowd inside the expo hall also fills the district around it: when a place's detection overlaps in time
    with one of a place inside it, the inner place is where it happens; the outer one's evidence joins it."""
    if events.height < 2:
        return events
    places = registry.places(lake, place_ids=events["place_id"].unique().to_list(), columns=("place_id", "geometry"))
    shapes = dict(zip(places["place_id"], registry.shapes(places)))
    rows = events.to_dicts()
    keep = [True] * len(rows)
    for i, outer in enumerate(rows):
        for j, inner in enumerate(rows):
            if i == j or not keep[j] or outer["place_id"] not in shapes or inner["place_id"] not in shapes:
                continue
            overlap = inner["start"] < outer["end"] and outer["start"] < inner["end"]
            if overlap and shapes[outer["place_id"]].area > shapes[inner["place_id"]].area \
                    and shapes[outer["place_id"]].contains(shapes[inner["place_id"]].representative_point()):
                keep[i] = False
                inner["evidence"] += f"; also around it in {outer['place_id']}: {outer['evidence']}"
                break
    return pl.DataFrame([r for r, k in zip(rows, keep) if k], schema=events.schema)


def _merge(candidates: pl.DataFrame) -> pl.DataFrame:
    """One detection per place and overlapping (or nearly touching) time: evidence from footfall and sensors together. It
    is a crowd surge when people were counted, else a traffic drop when a counter fell, else unusual readings; its severity
    the worst of its evidence's."""
    if candidates.is_empty():
        return pl.DataFrame(schema={"kind": pl.String, "place_id": pl.String, "sensor_ids": pl.List(pl.String),
                                    "start": pl.Datetime("us", "UTC"), "end": pl.Datetime("us", "UTC"), "peak": pl.Datetime("us", "UTC"),
                                    "peak_z": pl.Float64, "severity": pl.String, "evidence": pl.String})
    ordered = candidates.sort("place_id", "start").with_columns(pl.col("end").cum_max().over("place_id").alias("reach"))
    new = ((pl.col("place_id") != pl.col("place_id").shift(1)) | (pl.col("start") > pl.col("reach").shift(1) + MERGE_GAP)).fill_null(True)
    kind_rank = pl.col("kind").replace_strict({SURGE: 0, DROP: 1, READINGS: 2}, return_dtype=pl.Int8)
    severity_rank = pl.col("severity").replace_strict(SEVERITY_RANK, default=0, return_dtype=pl.Int8)
    return (ordered.with_columns(new.cum_sum().alias("group")).group_by("place_id", "group")
            .agg(pl.col("kind").get(kind_rank.arg_min()), pl.col("source").drop_nulls().unique().sort().alias("sensor_ids"),
                 pl.col("start").min(), pl.col("end").max(), pl.col("peak").get(pl.col("peak_z").abs().arg_max()),
                 pl.col("peak_z").get(pl.col("peak_z").abs().arg_max()), pl.col("severity").get(severity_rank.arg_max()),
                 pl.col("evidence").sort_by(kind_rank).str.join("; "))
            .drop("group"))
