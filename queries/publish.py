"""Published aggregates: the k-anonymous tables about people that analysts may read in SQL.

The analyst workspace cannot read raw pings (not even their files), so views over them would
not work there; instead a steward job computes the aggregates with the same queries every
other output uses and writes them as lake tables, each row carrying the k it was cut at.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from citylake.lake import Lake
from citylake.queries import Filters, footfall, od, stays
from citylake.queries.base import DEFAULT_K

CELL_RES = 9  # ~0.1 km² cells: fine enough for a street block, coarse enough to reach k devices
OD_ZONES = "district"


def publish(lake: Lake, /, *, k: int = DEFAULT_K, engine_name: str = "duckdb") -> dict[str, int]:
    """Recompute every published aggregate (one overwrite commit per table); rows written per table."""
    now = pl.lit(dt.datetime.now(dt.timezone.utc)).dt.cast_time_unit("us").alias("computed_at")
    stamp = [pl.lit(k, pl.Int64).alias("k"), now]
    written = {}
    places = pl.from_arrow(footfall(lake, by="place", freq="1h", k=k, engine_name=engine_name).table)
    written["footfall_hourly"] = _write(lake, "footfall_hourly", places.with_columns(stamp))
    cells = pl.from_arrow(footfall(lake, by="cell", res=CELL_RES, freq="1h", k=k, engine_name=engine_name).table)
    written["footfall_cells_hourly"] = _write(lake, "footfall_cells_hourly", cells.with_columns(stamp))
    found = stays(lake, filters=Filters(categories=(OD_ZONES,)), engine_name=engine_name)
    flows = pl.from_arrow(od(found, freq="1d", k=k, engine_name=engine_name).table)
    written["od_daily"] = _write(lake, "od_daily", flows.with_columns(stamp))
    return written


def _write(lake: Lake, name: str, rows: pl.DataFrame) -> int:
    lake.write(name, rows, mode="overwrite")
    return rows.height
