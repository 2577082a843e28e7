"""Things near places: sensors and POIs within R metres of a place, the k nearest, and what nearby
sensors read while a place is busy.

Candidates come from an H3 grid disk around the place's cells (its ``place_cells`` cover, coarsened)
wide enough to hold everything within R; each candidate's exact distance on the sphere decides.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import shapely

from citylake.h3_index import cell_to_parent, latlng_to_cells
from citylake.h3_index.cells import cell_resolutions, grid_disk_flat
from citylake.h3_index.distance import disk_clearance_m, distances_to_shapes_m
from citylake.lake import Lake, registry, scan
from citylake.queries.base import DEFAULT_ENGINE
from citylake.queries.errors import BadFilter
from citylake.queries.filters import Filters
from citylake.queries.knn import nearest

THINGS = ("sensors", "pois")
NEAR_SCHEMA = {"place_id": pl.String, "thing_id": pl.String, "kind": pl.String, "distance_m": pl.Float64}
NO_FILTERS = Filters()
DISK_RADIUS = 2  # grid steps around the place's cells; the resolution is chosen so this reaches R


def things(lake: Lake, what: str, /) -> pl.DataFrame:
    """thing_id, kind, lat, lon of sensors (kind = sensor kind) or POIs (point places; kind = category)."""
    if what == "sensors":
        return registry.sensors(lake, columns=("sensor_id", "kind", "lat", "lon")).rename({"sensor_id": "thing_id"})
    if what == "pois":
        places = registry.places(lake, columns=("place_id", "category", "geometry"))
        shapes = registry.shapes(places)
        points = shapely.get_type_id(shapes) == shapely.GeometryType.POINT
        return pl.DataFrame({"thing_id": places["place_id"].filter(points), "kind": places["category"].filter(points),
                             "lat": shapely.get_y(shapes[points]), "lon": shapely.get_x(shapes[points])})
    raise BadFilter("things", what, f"use one of {', '.join(THINGS)}")


def near(lake: Lake, /, *, what: str = "sensors", radius_m: float = 300.0, filters: Filters = NO_FILTERS) -> pl.DataFrame:
    """Every sensor or POI within ``radius_m`` metres of each selected place (0 when inside it), nearest first."""
    if not 0 < radius_m <= 50_000:
        raise BadFilter("radius", radius_m, "give a radius between 1 m and 50 km")
    places = _places(lake, filters)
    found = within(lake, places, things(lake, what), radius_m)
    return found.sort("place_id", "distance_m", "thing_id")


def within(lake: Lake, places: pl.DataFrame, candidates: pl.DataFrame, radius_m: float) -> pl.DataFrame:
    """place_id, thing_id, kind, distance_m for every candidate within ``radius_m`` of each place."""
    if places.is_empty() or candidates.is_empty():
        return pl.DataFrame(schema=NEAR_SCHEMA)
    covers = (scan(lake, "place_cells").filter(pl.col("place_id").is_in(places["place_id"].to_list()))
              .select("place_id", "h3_cell").collect())
    res = search_resolution(covers["h3_cell"].to_numpy(), radius_m)
    coarse = covers.with_columns(pl.Series("cell", cell_to_parent(covers["h3_cell"].to_numpy(), res))).select("place_id", "cell").unique()
    disk, owner = grid_disk_flat(coarse["cell"].to_numpy(), DISK_RADIUS)
    reach = pl.DataFrame({"place_id": coarse["place_id"].gather(owner), "cell": disk}).unique()
    binned = candidates.with_columns(pl.Series("cell", latlng_to_cells(candidates["lat"].to_numpy(), candidates["lon"].to_numpy(), res)))
    pairs = reach.join(binned, on="cell").select("place_id", "thing_id", "kind", "lat", "lon").unique(["place_id", "thing_id"])
    owner = pairs.join(places.select("place_id").with_row_index("_shape"), on="place_id", how="left",
                       maintain_order="left")["_shape"].to_numpy()  # row i of pairs is point i
    distance = distances_to_shapes_m(shapely.from_wkb(places["geometry"].to_numpy()), owner, pairs["lat"].to_numpy(),
                                     pairs["lon"].to_numpy())
    return pairs.with_columns(pl.Series("distance_m", distance)).filter(pl.col("distance_m") <= radius_m).select(*NEAR_SCHEMA)


def search_resolution(cells: np.ndarray, radius_m: float) -> int:
    """The finest resolution at which a radius-2 disk around these cells reaches ``radius_m`` everywhere."""
    sample = np.unique(cells)[:: max(1, np.unique(cells).size // 64)]  # cell sizes change slowly: a sample tells
    finest = int(cell_resolutions(sample[:1])[0])
    for res in range(finest, -1, -1):
        if disk_clearance_m(np.unique(cell_to_parent(sample, res)), DISK_RADIUS).min() >= radius_m:
            return res
    raise BadFilter("radius", radius_m, "it is wider than any H3 disk reaches; use a radius under 50 km")


def nearest_things(lake: Lake, /, *, of: str = "places", what: str = "pois", k: int = 5, filters: Filters = NO_FILTERS) -> pl.DataFrame:
    """The ``k`` nearest sensors or POIs of each selected place (from its outline; 0 inside) or of each sensor.

    Places grow a search radius until each has k things within it, so distances from outlines stay exact;
    sensors are points and use the grid-disk search of ``queries.knn``. A thing is never its own neighbour.
    """
    if k < 1:
        raise BadFilter("k", k, "ask for at least one neighbour")
    targets = things(lake, what)
    if of == "sensors":
        sensors = things(lake, "sensors")
        if filters.place_ids:  # --sensor ids arrive as place ids
            sensors = sensors.filter(pl.col("thing_id").is_in(list(filters.place_ids)))
        found = _nearest_of_points(sensors, targets, k, of_same=(what == "sensors"))
        return found.rename({"place_id": "sensor_id"})
    if of != "places":
        raise BadFilter("of", of, "use places or sensors")
    places = _places(lake, filters)
    radius, found = 250.0, pl.DataFrame(schema=NEAR_SCHEMA)
    while True:
        found = within(lake, places, targets, radius).filter(pl.col("place_id") != pl.col("thing_id"))
        have = found.group_by("place_id").len()
        enough = have.filter(pl.col("len") >= min(k, targets.height - 1)).height == places.height
        if enough or radius >= 50_000:
            break
        radius = min(radius * 4, 50_000)
    ranked = found.sort("place_id", "distance_m", "thing_id").with_columns(pl.int_range(1, pl.len() + 1).over("place_id").alias("rank"))
    return ranked.filter(pl.col("rank") <= k).with_columns(pl.col("rank").cast(pl.Int32))


def _nearest_of_points(points: pl.DataFrame, targets: pl.DataFrame, k: int, *, of_same: bool) -> pl.DataFrame:
    extra = 1 if of_same else 0  # a sensor is its own nearest sensor: ask for one more and drop it
    found = nearest(points["lat"].to_numpy(), points["lon"].to_numpy(), targets["lat"].to_numpy(), targets["lon"].to_numpy(), k + extra)
    rows = found.with_columns(pl.Series("place_id", points["thing_id"].gather(found["query"])),
                              pl.Series("thing_id", targets["thing_id"].gather(found["target"])),
                              pl.Series("kind", targets["kind"].gather(found["target"])))
    rows = rows.filter(pl.col("place_id") != pl.col("thing_id"))
    ranked = rows.sort("place_id", "distance_m", "thing_id").with_columns(pl.int_range(1, pl.len() + 1).over("place_id").alias("rank"))
    return ranked.filter(pl.col("rank") <= k).select(*NEAR_SCHEMA, pl.col("rank").cast(pl.Int32))


def _places(lake: Lake, filters: Filters) -> pl.DataFrame:
    places = registry.places(lake, place_ids=filters.place_ids, categories=filters.categories)
    if places.is_empty():
        raise BadFilter("place", list(filters.place_ids) or list(filters.categories),
                        'no place matches; see `citylake sql "SELECT place_id, category FROM places"`')
    return places


def readings_near(
    lake: Lake, /, *, radius_m: float = 300.0, freq: str = "1h", filters: Filters = NO_FILTERS, engine_name: str = DEFAULT_ENGINE,
) -> pl.DataFrame:
    """Readings of the sensors within ``radius_m`` of each selected place, per place, metric and time bucket:
    readings, sensors, mean (over all readings), min and max. Not about people: no k-anonymity needed."""
    from citylake.queries import engine
    from citylake.queries.filters import check_freq

    nearby = near(lake, what="sensors", radius_m=radius_m, filters=filters)
    raw = engine(engine_name, lake).readings(sensor_ids=nearby["thing_id"].unique().to_list(), freq=check_freq(freq), filters=filters)
    raw = raw.with_columns(pl.col("bucket").dt.cast_time_unit("us").dt.convert_time_zone("UTC"), pl.col("readings").cast(pl.Int64))
    per_place = nearby.select("place_id", pl.col("thing_id").alias("sensor_id")).join(raw, on="sensor_id")
    return (per_place.group_by("place_id", "metric", "bucket")
            .agg(pl.col("readings").sum(), pl.col("sensor_id").n_unique().cast(pl.Int64).alias("sensors"),
                 ((pl.col("mean") * pl.col("readings")).sum() / pl.col("readings").sum()).round(6).alias("mean"),
                 pl.col("min").min(), pl.col("max").max())
            .sort("place_id", "metric", "bucket"))


def busy_hours(footfall_table: pl.DataFrame, /, *, share: float = 0.5, tz: str = "UTC") -> pl.DataFrame:
    """place_id, hour: the hours of day (on the clock of ``tz``) when a place's mean hourly devices reach ``share`` of its
    busiest hour. Takes a k-anonymous hourly footfall result or a release, so it reveals nothing they do not."""
    local_hour = pl.col("bucket").dt.convert_time_zone(tz).dt.hour().alias("hour")
    per_hour = (footfall_table.group_by("place_id", local_hour).agg(pl.col("devices").mean().alias("mean"))
                .with_columns(pl.col("mean").max().over("place_id").alias("peak")))
    busy = per_hour.filter(pl.col("mean") >= share * pl.col("peak"))
    return busy.select("place_id", pl.col("hour").cast(pl.Int8)).sort("place_id", "hour")
