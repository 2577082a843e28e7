"""Synthetic city data that several figures measure on: random points, pings, park-like places and pings visiting them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from citylake.h3_index import latlng_to_cells

CITY = {"lat": (31.0, 31.5), "lon": (121.2, 121.8)}  # ~55 km square: a large city


def city_points(n: int, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(*CITY["lat"], n), rng.uniform(*CITY["lon"], n)


def make_pings(n: int, cell_res: int, seed: int = 7, days: int = 3) -> pa.Table:
    rng = np.random.default_rng(seed)
    lat, lon = city_points(n, seed)
    ts = np.datetime64("2026-11-01", "us") + rng.integers(0, days * 86400 * 10**6, n).astype("timedelta64[us]")
    return pa.table({
        "device_id": rng.integers(0, 2**62, n),
        "ts": pa.array(ts).cast(pa.timestamp("us", tz="UTC")),
        "lat": lat, "lon": lon,
        "accuracy_m": rng.uniform(3, 40, n).astype(np.float32),
        "h3_cell": latlng_to_cells(lat, lon, cell_res),
    })


def place_pings(n: int, shapes: list, cell_res: int, seed: int = 5, at_places: float = 0.7) -> pa.Table:
    """Pings of a city where people go from place to place: each device sends 50 pings over a day in 5 visits
    of 10 pings, 3 minutes apart; ``at_places`` of the visits are to a random place (anywhere in its bounding
    box grown by a fifth, so boundaries matter), the rest to random points in the city."""
    import shapely

    rng = np.random.default_rng(seed)
    ping = np.arange(n)
    device, visit, step = ping // 50, ping // 10, ping % 10
    visits = int(visit.max()) + 1
    bounds = shapely.bounds(np.asarray(shapes))[rng.integers(0, len(shapes), visits)]
    to_place = rng.random(visits) < at_places
    x0, y0, x1, y1 = (bounds[:, i] for i in range(4))
    gx, gy = (x1 - x0) * 0.1, (y1 - y0) * 0.1
    vlat, vlon = city_points(visits, seed + 1)
    lo_lat, hi_lat = np.where(to_place, y0 - gy, vlat - 5e-4), np.where(to_place, y1 + gy, vlat + 5e-4)
    lo_lon, hi_lon = np.where(to_place, x0 - gx, vlon - 5e-4), np.where(to_place, x1 + gx, vlon + 5e-4)
    lat = rng.uniform(lo_lat[visit], hi_lat[visit])
    lon = rng.uniform(lo_lon[visit], hi_lon[visit])
    day_start = np.datetime64("2026-11-01", "us") + (rng.integers(0, 3, int(device.max()) + 1) * 86400 * 10**6).astype("timedelta64[us]")
    offset = (6 * 3600 + (visit % 5) * 2.5 * 3600 + step * 180) * 10**6 + rng.integers(0, 60 * 10**6, n)
    ts = day_start[device] + offset.astype(np.int64).astype("timedelta64[us]")
    return pa.table({
        "device_id": device.astype(np.int64) * 7919 + 13,
        "ts": pa.array(ts).cast(pa.timestamp("us", tz="UTC")),
        "lat": lat, "lon": lon,
        "accuracy_m": rng.uniform(3, 40, n).astype(np.float32),
        "h3_cell": latlng_to_cells(lat, lon, cell_res),
    })


def city_polygons(count: int, seed: int = 3) -> list:
    """Park-like blobs of 20-60 vertices, 150-500 m across, anywhere in the city."""
    import shapely

    rng = np.random.default_rng(seed)
    shapes = []
    for _ in range(count):
        lat, lon = rng.uniform(*CITY["lat"]), rng.uniform(*CITY["lon"])
        n = int(rng.integers(20, 60))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        r = rng.uniform(0.0015, 0.0045) * rng.uniform(0.6, 1.0, n)
        shapes.append(shapely.make_valid(shapely.Polygon(np.c_[lon + r * np.cos(angles), lat + r * np.sin(angles)])))
    return shapes
