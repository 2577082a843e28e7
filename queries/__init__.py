"""People–things–places queries over the lake, on DuckDB or Polars with the same answers."""

from __future__ import annotations

if __name__ != "citylake.queries":  # this folder installs as citylake.queries; a checkout on sys.path must not make it `queries`
    raise ImportError(f"import citylake.queries, not {__name__}: citylake's rooms are subpackages of citylake")

from collections.abc import Sequence

import polars as pl
import pyarrow as pa

from citylake.h3_index import BUCKETS_US
from citylake.lake import Lake
from citylake.queries.base import DEFAULT_ENGINE, DEFAULT_K, Engine, FootfallBy, QueryResult, private_result, tidy
from citylake.queries.errors import BadFilter, QueryError, UnknownEngine
from citylake.queries.filters import Filters, check_freq, parse_hours, parse_weekdays
from citylake.queries.live import PlaceFinder
from citylake.queries.windows import day_windows, narrowed, pings_per_day

ENGINES = ("duckdb", "polars")
NO_FILTERS = Filters()


def engine(name: str, lake: Lake, /) -> Engine:
    if name == "duckdb":
        from citylake.queries.duckdb import DuckDBEngine

        return DuckDBEngine(lake)
    if name == "polars":
        from citylake.queries.polars import PolarsEngine

        return PolarsEngine(lake)
    raise UnknownEngine(name, list(ENGINES))


def footfall(
    lake: Lake, /, *, by: FootfallBy = "place", freq: str = "1h", res: int | None = None, filters: Filters = NO_FILTERS,
    k: int = DEFAULT_K, engine_name: str = DEFAULT_ENGINE,
) -> QueryResult:
    """Pings and distinct devices per place (or category, or H3 cell at ``res``) per time bucket, k-anonymous.

    Point-in-place uses ``place_cells``: pings in interior cells count directly, pings in boundary
    cells get an exact point-in-polygon test; no query scans every geometry.
    """
    return footfalls(lake, views=[(by, res)], freq=freq, filters=filters, k=k, engine_name=engine_name)[0]


def footfalls(
    lake: Lake, /, *, views: Sequence[tuple[FootfallBy, int | None] | tuple[FootfallBy, int | None, str]], freq: str = "1h",
    filters: Filters = NO_FILTERS, k: int = DEFAULT_K, engine_name: str = DEFAULT_ENGINE,
) -> list[QueryResult]:
    """``footfall`` grouped several ways over the same pings — ``views`` are (by, res) pairs, or (by, res, freq) for a
    bucket other than ``freq``, e.g. ``[("place", None), ("cell", 9, "1d")]`` — each k-anonymous; the Polars engine
    reads the pings once for all views and holds them, a window of ``ONE_WINDOW_PINGS`` at a time."""
    checked = [(view[0], _footfall_res(lake, view[0], view[1]), check_freq(view[2] if len(view) > 2 else freq)) for view in views]
    if k < 1:
        raise BadFilter("k", k, "k-anonymity needs k >= 1")
    runner = engine(engine_name, lake)
    raw = footfalls_by_window(lake, runner, views=checked, filters=filters)
    return [private_result(tidy(frame, by), k=k, engine=runner.name) for (by, _, _), frame in zip(checked, raw)]


ONE_WINDOW_PINGS = 12_000_000  # pings one footfall reads at once (10M: ~1.2 GB at its peak); a larger window is cut


def footfalls_by_window(lake: Lake, runner: Engine, /, *, views: list[tuple[FootfallBy, int, str]], filters: Filters) -> list[pl.DataFrame]:
    """``runner``'s footfalls of ``views`` (before k-anonymity), the filters' window cut into windows of whole buckets
    of at most about ``ONE_WINDOW_PINGS`` pings (``queries.windows``) when it holds more, their groups concatenated:
    the same answer, with memory bounded by a window rather than by the lake."""
    per_day = pings_per_day(lake, filters)
    if sum(per_day.values()) <= ONE_WINDOW_PINGS:
        return runner.footfalls(views=views, filters=filters)
    widest = max(BUCKETS_US[freq] for _, _, freq in views)  # the bucket widths divide one another
    windows = [narrowed(filters, start, end) for start, end in day_windows(per_day, widest, share=ONE_WINDOW_PINGS)]
    parts = [runner.footfalls(views=views, filters=window) for window in windows if window]
    return [_concatenated([part[n] for part in parts]) for n in range(len(views))]


def _concatenated(frames: list[pl.DataFrame]) -> pl.DataFrame:
    held = [frame for frame in frames if frame.height] or frames[:1]  # an empty window's frame may lack its columns' types
    return pl.concat(held, how="vertical_relaxed")


def _footfall_res(lake: Lake, by: FootfallBy, res: int | None) -> int:
    if by not in ("place", "category", "cell"):
        raise BadFilter("by", by, "use place, category or cell")
    res = lake.cell_res if res is None else res
    if not 0 <= res <= lake.cell_res:
        raise BadFilter("res", res, f"cells can be grouped at resolutions 0 to {lake.cell_res} (the lake's cell resolution)")
    return res


DEFAULT_MAX_GAP_S = 30 * 60  # a device silent for longer than this inside a place has left and come back
DEFAULT_MIN_DWELL_S = 5 * 60  # shorter presences are passing through, not staying


def stays(
    lake: Lake, /, *, filters: Filters = NO_FILTERS, max_gap_s: int = DEFAULT_MAX_GAP_S, min_dwell_s: int = DEFAULT_MIN_DWELL_S,
    engine_name: str = DEFAULT_ENGINE,
) -> pl.DataFrame:
    """Stays of devices in polygonal places: maximal runs of a device's consecutive pings inside one place,
    no gap longer than ``max_gap_s``, lasting at least ``min_dwell_s``. Per device: for the steward only."""
    if max_gap_s <= 0 or min_dwell_s < 0:
        raise BadFilter("max_gap_s/min_dwell_s", (max_gap_s, min_dwell_s), "the gap must be positive and the dwell not negative")
    return tidy_stays(engine(engine_name, lake).stays(filters=filters, max_gap_s=max_gap_s, min_dwell_s=min_dwell_s))


def tidy_stays(raw: pl.DataFrame, /) -> pl.DataFrame:
    """Stays (device_id, place_id, start, end, pings) as every engine and the cluster give them: in UTC, with their
    duration, in order."""
    return (raw.with_columns(pl.col("start").dt.convert_time_zone("UTC"), pl.col("end").dt.convert_time_zone("UTC"),
                             pl.col("pings").cast(pl.Int64))
            .with_columns(((pl.col("end") - pl.col("start")).dt.total_microseconds() / 1e6).alias("duration_s"))
            .select("device_id", "place_id", "start", "end", "duration_s", "pings").sort("device_id", "place_id", "start"))


def stay_points(
    lake: Lake, /, *, radius_m: float = 200.0, min_dwell_s: int = 15 * 60, res: int | None = None, filters: Filters = NO_FILTERS,
    engine_name: str = DEFAULT_ENGINE,
) -> pl.DataFrame:
    """Stay points anywhere (the R-metres / T-minutes rule, see ``queries.staypoints``), with the cell of each
    centre at ``res`` (default: the lake's). Per device: for the steward only."""
    from citylake.queries.staypoints import stay_points as detect
    from citylake.queries.staypoints import with_cells

    if radius_m <= 0 or min_dwell_s < 0:
        raise BadFilter("radius_m/min_dwell_s", (radius_m, min_dwell_s), "the radius must be positive and the dwell not negative")
    pings = engine(engine_name, lake).pings(filters=filters)
    return with_cells(detect(pings, radius_m=radius_m, min_dwell_s=min_dwell_s), lake.cell_res if res is None else res)


def od_cells(points: pl.DataFrame, /, *, res: int, freq: str = "1d", k: int = DEFAULT_K, engine_name: str = DEFAULT_ENGINE) -> QueryResult:
    """Trips between consecutive stay points of each device in different H3 cells at ``res``: per (origin cell,
    destination cell, bucket of departure), trips and distinct devices; k-anonymous."""
    from citylake.h3_index import cell_to_parent

    zones = points.with_columns(pl.Series("place_id", cell_to_parent(points["h3_cell"].to_numpy(), res) if points.height else [],
                                          pl.Int64))
    return od(zones, freq=freq, k=k, engine_name=engine_name)


def dwell(stays_frame: pl.DataFrame, /, *, k: int = DEFAULT_K, engine_name: str = DEFAULT_ENGINE) -> QueryResult:
    """Per place: visits, distinct devices, median and 90th-percentile stay in minutes; k-anonymous."""
    per_place = (stays_frame.group_by("place_id")
                 .agg(pl.len().cast(pl.Int64).alias("visits"), pl.col("device_id").n_unique().cast(pl.Int64).alias("devices"),
                      (pl.col("duration_s").median() / 60).round(1).alias("median_min"),
                      (pl.col("duration_s").quantile(0.9, "linear") / 60).round(1).alias("p90_min"))
                 .sort("place_id"))
    return private_result(per_place, k=k, engine=engine_name)  # engine_name: where the stays were found


def visits(stays_frame: pl.DataFrame, /, *, freq: str = "1h", k: int = DEFAULT_K, engine_name: str = DEFAULT_ENGINE) -> QueryResult:
    """Stays starting in each place per time bucket (visits and distinct devices); k-anonymous."""
    from citylake.h3_index import polars_expr as X

    per_bucket = (stays_frame.group_by("place_id", X.time_bucket("start", check_freq(freq)).alias("bucket"))
                  .agg(pl.len().cast(pl.Int64).alias("visits"), pl.col("device_id").n_unique().cast(pl.Int64).alias("devices"))
                  .sort("place_id", "bucket"))
    return private_result(per_bucket, k=k, engine=engine_name)


def od(stays_frame: pl.DataFrame, /, *, freq: str = "1d", k: int = DEFAULT_K, engine_name: str = DEFAULT_ENGINE) -> QueryResult:
    """Trips between consecutive stays of each device in different places, per (origin, destination, bucket of departure):
    trips and distinct devices; k-anonymous. Choose the zones with the stays' filters (e.g. categories=("district",))."""
    flows = (trips(stays_frame, freq=freq).group_by("origin", "destination", "bucket")
             .agg(pl.len().cast(pl.Int64).alias("trips"), pl.col("device_id").n_unique().cast(pl.Int64).alias("devices"))
             .sort("origin", "destination", "bucket"))
    return private_result(flows, k=k, engine=engine_name)


def trips(stays_frame: pl.DataFrame, /, *, freq: str = "1d") -> pl.DataFrame:
    """device_id, origin, destination, bucket (of departure): each move between consecutive stays of a device in different
    places. Per device: for the steward, and for releases, which bound how many a device adds."""
    from citylake.h3_index import polars_expr as X

    ordered = stays_frame.sort("device_id", "start", "place_id")
    moves = ordered.with_columns(pl.col("place_id").shift(-1).over("device_id").alias("destination"))
    moves = moves.filter(pl.col("destination").is_not_null() & (pl.col("destination") != pl.col("place_id")))
    departure = X.time_bucket("end", check_freq(freq)).alias("bucket")
    return moves.select("device_id", pl.col("place_id").alias("origin"), "destination", departure)


def conditions(
    lake: Lake, /, *, radius_m: float = 300.0, filters: Filters = NO_FILTERS, k: int = DEFAULT_K, engine_name: str = DEFAULT_ENGINE,
    hourly: QueryResult | None = None,
) -> pl.DataFrame:
    """What the sensors within ``radius_m`` of each place read during the place's busy hours (hours of day whose
    mean footfall reaches half the busiest hour's, from k-anonymous footfall): per place and metric, the busy
    hours, readings, sensors, mean, min and max. ``hourly``: the places' hourly footfall, when the caller has it."""
    from citylake.queries.near import busy_hours, readings_near

    hourly = hourly or footfall(lake, by="place", freq="1h", filters=filters, k=k, engine_name=engine_name)
    clock = filters.tz or "UTC"  # busy hours as the city reads them
    busy = busy_hours(pl.from_arrow(hourly.table), tz=clock)
    readings = readings_near(lake, radius_m=radius_m, freq="1h", filters=filters, engine_name=engine_name)
    during = (readings.with_columns(pl.col("bucket").dt.convert_time_zone(clock).dt.hour().cast(pl.Int8).alias("hour"))
              .join(busy, on=["place_id", "hour"]))
    hours = busy.group_by("place_id").agg(pl.col("hour").sort().cast(pl.String).str.join(",").alias("busy_hours"))
    return (during.group_by("place_id", "metric")
            .agg(pl.col("readings").sum(), pl.col("sensors").max(),
                 ((pl.col("mean") * pl.col("readings")).sum() / pl.col("readings").sum()).round(3).alias("mean"),
                 pl.col("min").min(), pl.col("max").max())
            .join(hours, on="place_id").select("place_id", "busy_hours", "metric", "readings", "sensors", "mean", "min", "max")
            .sort("place_id", "metric"))


def profile(
    lake: Lake, /, *, radius_m: float = 300.0, freq: str = "1h", filters: Filters = NO_FILTERS, k: int = DEFAULT_K,
    engine_name: str = DEFAULT_ENGINE, hourly: QueryResult | None = None,
) -> QueryResult:
    """People–things–places: each place's footfall per bucket beside the mean reading of every metric of the
    sensors within ``radius_m`` (one column per metric), the table to plot one against the other. k-anonymous:
    a bucket whose footfall is withheld is absent. ``hourly``: the places' footfall per ``freq``, when the caller has it."""
    from citylake.queries.near import readings_near

    people = hourly or footfall(lake, by="place", freq=freq, filters=filters, k=k, engine_name=engine_name)
    readings = readings_near(lake, radius_m=radius_m, freq=freq, filters=filters, engine_name=engine_name)
    wide = readings.pivot(on="metric", index=["place_id", "bucket"], values="mean", sort_columns=True) if readings.height else None
    table = pl.from_arrow(people.table)
    if wide is not None:
        table = table.join(wide, on=["place_id", "bucket"], how="left")
    return QueryResult(table.sort("place_id", "bucket").to_arrow(), people.suppressed, k, people.engine)


def correlations(profile_table: pl.DataFrame, /) -> pl.DataFrame:
    """Per place and metric: Pearson correlation of distinct devices with the metric's mean over the buckets."""
    metrics = [c for c in profile_table.columns if c not in ("place_id", "name", "category", "bucket", "pings", "devices")]
    if not metrics:
        return pl.DataFrame(schema={"place_id": pl.String, "metric": pl.String, "buckets": pl.Int64, "r": pl.Float64})
    long = profile_table.unpivot(on=metrics, index=["place_id", "devices"], variable_name="metric").drop_nulls("value")
    return (long.group_by("place_id", "metric")
            .agg(pl.len().cast(pl.Int64).alias("buckets"), pl.corr(pl.col("devices").cast(pl.Float64), "value").round(3).alias("r"))
            .sort("place_id", "metric"))


def things_near(lake: Lake, /, **options) -> pl.DataFrame:
    """Sensors or POIs within a radius of each selected place (``queries.near.near``; loaded on first use)."""
    from citylake.queries.near import near

    return near(lake, **options)


def nearest_things(lake: Lake, /, **options) -> pl.DataFrame:
    """The k nearest sensors or POIs of each place or sensor (``queries.near.nearest_things``; loaded on first use)."""
    from citylake.queries.near import nearest_things as nearest

    return nearest(lake, **options)


def with_hex_cells(table: pa.Table, column: str, /, *, into: str | None = None) -> pa.Table:
    """``column``'s H3 cells (integers in the lake) as hex strings at the edge: in its place, or as a new column ``into``."""
    from citylake.h3_index import cells_to_strings

    hexes = pa.array(cells_to_strings(table.column(column).to_numpy()), pa.string())
    if into:
        return table.append_column(into, hexes)
    return table.set_column(table.schema.get_field_index(column), column, hexes)


def save_stays(lake: Lake, stays_frame: pl.DataFrame, /, *, max_gap_s: int, min_dwell_s: int) -> int:
    """Write stays as the derived table ``stays``, with the parameters that made them (one commit; replaces earlier runs)."""
    import datetime as dt

    rows = stays_frame.with_columns(pl.lit(max_gap_s).alias("max_gap_s"), pl.lit(min_dwell_s).alias("min_dwell_s"),
                                    pl.lit(dt.datetime.now(dt.timezone.utc)).dt.cast_time_unit("us").alias("computed_at"))
    return lake.write("stays", rows, mode="overwrite")


__all__ = [
    "BadFilter", "DEFAULT_ENGINE",
    "ENGINES", "Filters", "QueryError", "QueryResult", "UnknownEngine", "conditions", "correlations", "dwell", "engine",
    "footfall", "footfalls", "od", "od_cells", "trips", "profile", "save_stays", "stay_points", "stays", "tidy_stays", "visits",
    "with_hex_cells",
    "things_near", "nearest_things", "parse_hours", "parse_weekdays", "DEFAULT_K", "PlaceFinder",
]
