"""What each endpoint reads, for one account: the releases and alerts through ``api`` (as an analyst: never the steward's
exact results, whatever the account), narrowed to a pilot's area for a pilot."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import shapely
from fastapi import HTTPException

from citylake import api
from citylake.analytics.hotspots import getis_ord
from citylake.h3_index import cells_to_latlng
from citylake.lake import TABLES, registry
from citylake.privacy import STEWARD_ONLY_TABLES, Account
from citylake.privacy.accounts import PILOT, STEWARD
from citylake.queries import Filters
from citylake.queries.released import Released
from citylake.viz import alerts_view, footfall_view, hotspots_map, od_view
from citylake.viz import map_payload as kepler_payload

LAYERS = ("footfall", "od", "hotspots", "alerts")
# planners and pilots read through endpoints, not SQL: the releases, the map layers and the alerts
ENDPOINT_TABLES = ("places", "footfall_hourly", "footfall_cells_hourly", "od_daily", "alerts_released", "releases")


def tables_for(lake, account: Account) -> list[dict]:
    if account.role == STEWARD:
        names = lake.names
    elif account.reads_sql:
        names = [name for name in lake.readable_names if name not in STEWARD_ONLY_TABLES]
    else:
        names = [name for name in ENDPOINT_TABLES if name in lake.readable_names]
    return [{"name": name, "zone": TABLES[name].zone, "description": TABLES[name].description} for name in names]


def places(server, account: Account, categories: tuple[str, ...]) -> pa.Table:
    found = registry.places(server.lake, categories=categories, columns=("place_id", "name", "category", "geometry"))
    if account.role == PILOT:
        found = found.filter(pl.col("place_id").is_in(_area_place_ids(server, account)))
    outlines = shapely.to_wkt(registry.shapes(found), rounding_precision=6)
    return found.select("place_id", "name", "category").with_columns(pl.Series("wkt", outlines, pl.String)).to_arrow()


def footfall(server, account: Account, *, by: str, filters: Filters) -> Released:
    if account.role != PILOT:
        return api.footfall(server.lake, role="analyst", by=by, filters=filters)
    if by == "cell":
        found = api.footfall(server.lake, role="analyst", by="cell", filters=filters)
        return Released(_cells_inside(found.table, _area(server, account).shape), found.source)
    found = api.footfall(server.lake, role="analyst", by=by, filters=filters)
    rows = pl.from_arrow(found.table).filter(pl.col("place_id").is_in(_area_place_ids(server, account)))
    return Released(rows.to_arrow(), found.source)


def od(server, account: Account, *, filters: Filters) -> Released:
    found = api.od(server.lake, role="analyst", filters=Filters(start=filters.start, end=filters.end, categories=("district",)))
    if account.role != PILOT:
        return found
    inside = _area_place_ids(server, account)
    rows = pl.from_arrow(found.table).filter(pl.col("origin").is_in(inside) | pl.col("destination").is_in(inside))
    return Released(rows.to_arrow(), found.source)


def hotspots(server, account: Account, *, filters: Filters) -> pl.DataFrame:
    cells = pl.from_arrow(footfall(server, account, by="cell", filters=filters).table)
    per_cell = cells.group_by("h3_cell").agg(pl.col("devices").sum().alias("devices"),
                                             pl.col("devices").max().alias("most_devices_in_an_hour"))
    scored = getis_ord(per_cell.select("h3_cell", "devices"), value="devices")
    return scored.join(per_cell.select("h3_cell", "most_devices_in_an_hour"), on="h3_cell", how="left").with_columns(
        pl.col("most_devices_in_an_hour").fill_null(0))


def alerts(server, account: Account, *, open_only: bool = False, since=None) -> pl.DataFrame:
    found = api.alerts(server.lake, open_only=open_only, since=since)
    if account.role == PILOT:
        found = found.filter(pl.col("place_id").is_in(_area_place_ids(server, account)))
    return found


def map_payload(server, account: Account, layer: str, *, filters: Filters) -> dict:
    lake = server.lake
    if layer == "footfall":
        view = footfall_view(lake, _cells_of_places(server, account, filters), freq="1h")
    elif layer == "od":
        view = od_view(lake, od(server, account, filters=filters), category="district", freq="1d")
    elif layer == "hotspots":
        view = hotspots_map(lake, hotspots(server, account, filters=filters), k=0)
        view.note = "Gi* over the released devices per cell (differentially private); no cell is left out"
    elif layer == "alerts":
        view = alerts_view(lake, alerts(server, account, since=filters.start))
    else:
        raise HTTPException(404, f"no map layer {layer!r}; the layers are {', '.join(LAYERS)}")
    if filters.place_ids or filters.categories:
        _focus(view, lake, filters)
    return kepler_payload(view)


def _cells_of_places(server, account: Account, filters: Filters) -> Released:
    """Released footfall per cell, only the cells inside the chosen places (all cells when none is chosen)."""
    found = footfall(server, account, by="cell", filters=Filters(start=filters.start, end=filters.end))
    if not (filters.place_ids or filters.categories):
        return found
    chosen = registry.places(server.lake, place_ids=filters.place_ids, categories=filters.categories, columns=("geometry",))
    return Released(_cells_inside(found.table, shapely.union_all(registry.shapes(chosen))), found.source)


def _focus(view, lake, filters: Filters) -> None:
    """Centre the map on the chosen places."""
    chosen = registry.places(lake, place_ids=filters.place_ids, categories=filters.categories, columns=("geometry",))
    if chosen.height:
        centre = shapely.centroid(shapely.union_all(registry.shapes(chosen)))
        view.centre = (centre.y, centre.x)
        view.zoom = 13


# --- a pilot's area -------------------------------------------------------------------------------------------------


def _area(server, account: Account):
    area = server.pilots.area(account.name, account.area) if account.area else None
    if area is None:
        raise HTTPException(403, "a pilot reads the city's releases inside its own area, known once its first report is made: "
                                 "upload the boundary (PUT /api/pilot/files/boundary) and POST /api/pilot/report")
    return area


def _area_place_ids(server, account: Account) -> list[str]:
    shape = _area(server, account).shape
    found = registry.places(server.lake, columns=("place_id", "geometry"))
    inside = shapely.intersects(registry.shapes(found), shape)
    return found.filter(pl.Series(inside))["place_id"].to_list()


def _cells_inside(table: pa.Table, shape) -> pa.Table:
    cells = pl.from_arrow(table)
    if cells.is_empty():
        return table
    lat, lon = cells_to_latlng(cells["h3_cell"].to_numpy())
    return cells.filter(pl.Series(shapely.contains_xy(shape, lon, lat))).to_arrow()
