"""People–things–places queries over the lake, on DuckDB or Polars with the same answers."""

from __future__ import annotations

import polars as pl

from lake import Lake
from queries.base import DEFAULT_K, Engine, FootfallBy, QueryResult, private_result, tidy
from queries.errors import BadFilter, QueryError, UnknownEngine
from queries.filters import Filters, check_freq

ENGINES = ("duckdb", "polars")
NO_FILTERS = Filters()


def engine(name: str, lake: Lake, /) -> Engine:
    if name == "duckdb":
        from queries.duckdb import DuckDBEngine

        return DuckDBEngine(lake)
    if name == "polars":
        from queries.polars import PolarsEngine

        return PolarsEngine(lake)
    raise UnknownEngine(name, list(ENGINES))


def footfall(
    lake: Lake, /, *, by: FootfallBy = "place", freq: str = "1h", res: int | None = None, filters: Filters = NO_FILTERS,
    k: int = DEFAULT_K, engine_name: str = "duckdb",
) -> QueryResult:
    """Pings and distinct devices per place (or category, or H3 cell at ``res``) per time bucket, k-anonymous.

    Point-in-place uses ``place_cells``: pings in interior cells count directly, pings in boundary
    cells get an exact point-in-polygon test; no query scans every geometry.
    """
    if by not in ("place", "category", "cell"):
        raise BadFilter("by", by, "use place, category or cell")
    res = lake.cell_res if res is None else res
    if not 0 <= res <= lake.cell_res:
        raise BadFilter("res", res, f"cells can be grouped at resolutions 0 to {lake.cell_res} (the lake's cell resolution)")
    if k < 1:
        raise BadFilter("k", k, "k-anonymity needs k >= 1")
    runner = engine(engine_name, lake)
    raw = runner.footfall(by=by, freq=check_freq(freq), res=res, filters=filters)
    return private_result(tidy(raw, by), k=k, engine=runner.name)


DEFAULT_MAX_GAP_S = 30 * 60  # a device silent for longer than this inside a place has left and come back
DEFAULT_MIN_DWELL_S = 5 * 60  # shorter presences are passing through, not staying


def stays(
    lake: Lake, /, *, filters: Filters = NO_FILTERS, max_gap_s: int = DEFAULT_MAX_GAP_S, min_dwell_s: int = DEFAULT_MIN_DWELL_S,
    engine_name: str = "duckdb",
) -> pl.DataFrame:
    """Stays of devices in polygonal places: maximal runs of a device's consecutive pings inside one place,
    no gap longer than ``max_gap_s``, lasting at least ``min_dwell_s``. Per device: for the steward only."""
    if max_gap_s <= 0 or min_dwell_s < 0:
        raise BadFilter("max_gap_s/min_dwell_s", (max_gap_s, min_dwell_s), "the gap must be positive and the dwell not negative")
    raw = engine(engine_name, lake).stays(filters=filters, max_gap_s=max_gap_s, min_dwell_s=min_dwell_s)
    return (raw.with_columns(pl.col("start").dt.convert_time_zone("UTC"), pl.col("end").dt.convert_time_zone("UTC"),
                             pl.col("pings").cast(pl.Int64))
            .with_columns(((pl.col("end") - pl.col("start")).dt.total_microseconds() / 1e6).alias("duration_s"))
            .select("device_id", "place_id", "start", "end", "duration_s", "pings").sort("device_id", "place_id", "start"))


def dwell(stays_frame: pl.DataFrame, /, *, k: int = DEFAULT_K, engine_name: str = "polars") -> QueryResult:
    """Per place: visits, distinct devices, median and 90th-percentile stay in minutes; k-anonymous."""
    per_place = (stays_frame.group_by("place_id")
                 .agg(pl.len().cast(pl.Int64).alias("visits"), pl.col("device_id").n_unique().cast(pl.Int64).alias("devices"),
                      (pl.col("duration_s").median() / 60).round(1).alias("median_min"),
                      (pl.col("duration_s").quantile(0.9, "linear") / 60).round(1).alias("p90_min"))
                 .sort("place_id"))
    return private_result(per_place, k=k, engine=engine_name)  # engine_name: where the stays were found


def visits(stays_frame: pl.DataFrame, /, *, freq: str = "1h", k: int = DEFAULT_K, engine_name: str = "polars") -> QueryResult:
    """Stays starting in each place per time bucket (visits and distinct devices); k-anonymous."""
    from h3_index import polars_expr as X

    per_bucket = (stays_frame.group_by("place_id", X.time_bucket("start", check_freq(freq)).alias("bucket"))
                  .agg(pl.len().cast(pl.Int64).alias("visits"), pl.col("device_id").n_unique().cast(pl.Int64).alias("devices"))
                  .sort("place_id", "bucket"))
    return private_result(per_bucket, k=k, engine=engine_name)


def od(stays_frame: pl.DataFrame, /, *, freq: str = "1d", k: int = DEFAULT_K, engine_name: str = "polars") -> QueryResult:
    """Trips between consecutive stays of each device in different places, per (origin, destination, bucket of departure):
    trips and distinct devices; k-anonymous. Choose the zones with the stays' filters (e.g. categories=("district",))."""
    from h3_index import polars_expr as X

    ordered = stays_frame.sort("device_id", "start", "place_id")
    trips = ordered.with_columns(pl.col("place_id").shift(-1).over("device_id").alias("destination"),
                                 pl.col("start").shift(-1).over("device_id").alias("arrival"))
    trips = trips.filter(pl.col("destination").is_not_null() & (pl.col("destination") != pl.col("place_id")))
    flows = (trips.group_by(pl.col("place_id").alias("origin"), "destination", X.time_bucket("end", check_freq(freq)).alias("bucket"))
             .agg(pl.len().cast(pl.Int64).alias("trips"), pl.col("device_id").n_unique().cast(pl.Int64).alias("devices"))
             .sort("origin", "destination", "bucket"))
    return private_result(flows, k=k, engine=engine_name)


def save_stays(lake: Lake, stays_frame: pl.DataFrame, /, *, max_gap_s: int, min_dwell_s: int) -> int:
    """Write stays as the derived table ``stays``, with the parameters that made them (one commit; replaces earlier runs)."""
    import datetime as dt

    rows = stays_frame.with_columns(pl.lit(max_gap_s).alias("max_gap_s"), pl.lit(min_dwell_s).alias("min_dwell_s"),
                                    pl.lit(dt.datetime.now(dt.timezone.utc)).dt.cast_time_unit("us").alias("computed_at"))
    return lake.write("stays", rows, mode="overwrite")


__all__ = [
    "BadFilter", "ENGINES", "Filters", "QueryError", "QueryResult", "UnknownEngine", "dwell", "engine", "footfall", "od",
    "save_stays", "stays", "visits",
]
