"""What analysts read about people: the releases (``queries.release``), filtered after the fact.

A release has fixed public partitions and noise, so selecting its rows by place, cell, time, hour of day or weekday —
any number of times, in any combination — reveals nothing the release did not (differential privacy is closed under
post-processing), and nothing here says how many rows the release left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import pyarrow as pa
import shapely

from citylake.h3_index import cell_resolutions
from citylake.lake import Lake, registry, scan
from citylake.queries.base import QueryResult
from citylake.queries.errors import BadFilter
from citylake.queries.filters import Filters

NO_FILTERS = Filters()
STEWARD_HINT = "the steward's exact results (`--role steward`, with the lake's key) answer anything else"


@dataclass(frozen=True)
class Released:
    table: pa.Table
    source: str  # the release table the rows come from

    def as_result(self) -> QueryResult:
        """The rows as a ``QueryResult``, for the functions that build on footfall (``profile``, ``conditions``); nothing
        was withheld from it, only from the release."""
        return QueryResult(self.table, 0, 0, f"release {self.source}")

    def summary(self) -> str:
        return (f"{self.table.num_rows:,} rows from the release {self.source} (differentially private: counts carry noise; "
                "rows under the release's threshold are not shown; see the releases table)")


def footfall(lake: Lake, /, *, by: str = "place", freq: str = "1h", res: int | None = None, filters: Filters = NO_FILTERS) -> Released:
    """Released devices per place (or per cell at the release's resolution) per hour, as the filters select them."""
    if freq != "1h":
        raise BadFilter("freq", freq, f"footfall is released per hour; use --freq 1h (or {STEWARD_HINT})")
    if by == "place":
        rows = _in_time(scan(lake, "footfall_hourly"), filters).filter(_place_rows(lake, filters, "place_id"))
        return Released(rows.select("place_id", "name", "category", "bucket", "devices").sort("place_id", "bucket").collect().to_arrow(),
                        "footfall_hourly")
    if by == "cell":
        rows = _in_time(scan(lake, "footfall_cells_hourly"), filters).select("h3_cell", "bucket", "devices")
        rows = rows.sort("h3_cell", "bucket").collect()
        released_res = int(cell_resolutions(rows["h3_cell"].head(1).to_numpy())[0]) if rows.height else res
        if res is not None and res != released_res:
            raise BadFilter("res", res, f"cells are released at resolution {released_res}; use --res {released_res} (or {STEWARD_HINT})")
        return Released(_in_box(rows, filters).to_arrow(), "footfall_cells_hourly")
    raise BadFilter("by", by, f"footfall is released per place and per cell; use --by place or --by cell (or {STEWARD_HINT})")


def od(lake: Lake, /, *, filters: Filters = NO_FILTERS) -> Released:
    """Released devices travelling between two districts per day, as the filters select them (a trip ends are kept when
    either end is a selected place)."""
    rows = _in_time(scan(lake, "od_daily"), filters)
    if filters.place_ids or filters.categories:
        chosen = _place_rows(lake, filters, "origin") | _place_rows(lake, filters, "destination")
        rows = rows.filter(chosen)
    return Released(rows.select("origin", "destination", "bucket", "devices").sort("origin", "destination", "bucket").collect().to_arrow(),
                    "od_daily")


def _in_time(rows: pl.LazyFrame, filters: Filters) -> pl.LazyFrame:
    if filters.devices:  # never ignored in silence: a release is everyone's count
        raise BadFilter("devices", filters.devices, f"a release counts every device; a share of devices is for {STEWARD_HINT}")
    if filters.start:
        rows = rows.filter(pl.col("bucket") >= filters.start)
    if filters.end:
        rows = rows.filter(pl.col("bucket") < filters.end)
    if filters.hours:
        rows = rows.filter(filters.clock("bucket").dt.hour().is_in(list(filters.hours)))
    if filters.weekdays:
        rows = rows.filter((filters.clock("bucket").dt.weekday() - 1).is_in(list(filters.weekdays)))
    return rows


def _place_rows(lake: Lake, filters: Filters, column: str) -> pl.Expr:
    """Rows whose ``column`` names a place the filters select (by id, category, or a box around its outline's centre)."""
    if not (filters.place_ids or filters.categories or filters.bbox):
        return pl.lit(True)
    places = registry.places(lake, place_ids=filters.place_ids, categories=filters.categories, columns=("place_id", "geometry"))
    if filters.bbox:
        centres = shapely.centroid(registry.shapes(places))
        places = places.filter(pl.Series(shapely.contains_xy(shapely.box(*filters.bbox), shapely.get_x(centres), shapely.get_y(centres))))
    return pl.col(column).is_in(places["place_id"].to_list())


def _in_box(cells: pl.DataFrame, filters: Filters) -> pl.DataFrame:
    if not filters.bbox or cells.is_empty():
        return cells
    from citylake.h3_index import cells_to_latlng

    lat, lon = cells_to_latlng(cells["h3_cell"].to_numpy())
    return cells.filter(pl.Series(shapely.contains_xy(shapely.box(*filters.bbox), lon, lat)))
