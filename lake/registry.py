"""The registries, read one way by every room: places (with their shapes), sensors, and the place a point belongs to.

Ingestion uses ``place_of`` to give each sensor its place; queries, analytics and viz read places and sensors
through ``places`` and ``sensors`` instead of scanning the tables themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
import shapely

from citylake.h3_index.distance import distances_to_shapes_m
from citylake.lake.engines import scan
from citylake.lake.lake import Lake

PLACE_COLUMNS = ("place_id", "name", "category", "geometry")
SENSOR_COLUMNS = ("sensor_id", "kind", "unit", "lat", "lon", "h3_cell", "place_id")
NEAREST_PLACE_M = 500.0  # a point farther than this from every place belongs to none
METRES_PER_DEGREE = 111_320.0  # of latitude; only to size the candidate search, distances are then exact


def places(lake: Lake, /, *, place_ids: Sequence[str] = (), categories: Sequence[str] = (),
           columns: Sequence[str] = PLACE_COLUMNS) -> pl.DataFrame:
    """Places, all or those with these ids and/or of these categories; ``geometry`` is WKB (see ``shapes``)."""
    rows = scan(lake, "places")
    if place_ids:
        rows = rows.filter(pl.col("place_id").is_in(list(place_ids)))
    if categories:
        rows = rows.filter(pl.col("category").is_in(list(categories)))
    return rows.select(*columns).collect()


def shapes(places: pl.DataFrame, /) -> np.ndarray:
    """The shapely geometries of a frame of places (from its WKB ``geometry``)."""
    return shapely.from_wkb(places["geometry"].to_numpy())


def sensors(lake: Lake, /, *, sensor_ids: Sequence[str] = (), columns: Sequence[str] = SENSOR_COLUMNS) -> pl.DataFrame:
    """Registered sensors, all or those with these ids."""
    rows = scan(lake, "sensors")
    if sensor_ids:
        rows = rows.filter(pl.col("sensor_id").is_in(list(sensor_ids)))
    return rows.select(*columns).collect()


def place_of(lake: Lake, lat: np.ndarray, lon: np.ndarray, /) -> list[str | None]:
    """For each point: the smallest place containing it, else the nearest place within ``NEAREST_PLACE_M`` metres
    (on the sphere, as ``queries.near`` measures), else None."""
    known = places(lake, columns=("place_id", "geometry"))
    if known.is_empty() or lat.size == 0:
        return [None] * lat.size
    ids, outlines = known["place_id"].to_list(), shapes(known)
    points, tree = shapely.points(lon, lat), shapely.STRtree(outlines)
    found: list[str | None] = [None] * lat.size
    point_idx, shape_idx = tree.query(points, predicate="within")
    areas = shapely.area(outlines)
    for p, s in sorted(zip(point_idx.tolist(), shape_idx.tolist()), key=lambda pair: (-areas[pair[1]], -pair[1])):
        found[p] = ids[s]  # smallest last, so it wins (of equals, the first)
    missing = np.array([i for i, place in enumerate(found) if place is None], dtype=np.int64)
    if missing.size:
        for p, place in _nearest_within(outlines, ids, tree, lat[missing], lon[missing]).items():
            found[int(missing[p])] = place
    return found


def _nearest_within(outlines: np.ndarray, ids: list[str], tree: shapely.STRtree, lat: np.ndarray, lon: np.ndarray) -> dict[int, str]:
    """Point number → id of the nearest outline within NEAREST_PLACE_M: candidates from a degree box wide enough at the
    points' highest latitude, then exact metres."""
    widest = NEAREST_PLACE_M / METRES_PER_DEGREE / max(np.cos(np.radians(np.abs(lat).max())), 0.01)
    point_idx, shape_idx = tree.query(shapely.points(lon, lat), predicate="dwithin", distance=widest)
    if point_idx.size == 0:
        return {}
    metres = distances_to_shapes_m(outlines, shape_idx, lat[point_idx], lon[point_idx])
    pairs = pl.DataFrame({"point": point_idx, "shape": shape_idx, "m": metres}).filter(pl.col("m") <= NEAREST_PLACE_M)
    nearest = pairs.sort("m", "shape").unique("point", keep="first")
    return {p: ids[s] for p, s in nearest.select("point", "shape").iter_rows()}
