"""A small sample city written straight into the lake, for the demo and smoke tests.

Deterministic per seed: a few parks (polygons with their H3 cover), sensors with a daily
cycle, and devices that split their day between a home and the parks, with GPS noise.
(The full city generator with districts, events and feed files comes with ingestion.)
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import shapely

from h3_index import latlng_to_cells, polygon_to_cells
from lake import Lake

CENTRE = (31.23, 121.47)  # lat, lon of the sample city's centre
SPAN_DEG = 0.08  # the city is about 18 km across
GPS_NOISE_DEG = 0.0002  # about 20 m, typical phone GPS error
UTC = dt.timezone.utc


def _parks(rng: np.random.Generator, count: int) -> list[tuple[str, shapely.Polygon]]:
    parks = []
    for i in range(count):
        lat = CENTRE[0] + rng.uniform(-SPAN_DEG, SPAN_DEG) / 2
        lon = CENTRE[1] + rng.uniform(-SPAN_DEG, SPAN_DEG) / 2
        angles = np.sort(rng.uniform(0, 2 * np.pi, 24))
        radius = rng.uniform(0.002, 0.006) * rng.uniform(0.7, 1.0, angles.size)
        ring = np.c_[lon + radius * np.cos(angles), lat + radius * np.sin(angles)]
        parks.append((f"sample:park-{i}", shapely.make_valid(shapely.Polygon(ring))))
    return parks


def write_sample(lake: Lake, /, *, devices: int = 2_000, days: int = 2, seed: int = 7, start: str = "2026-11-16") -> dict[str, int]:
    """Write places, place_cells, sensors, readings and pings of a sample city; return rows per table."""
    rng = np.random.default_rng(seed)
    t0 = dt.datetime.fromisoformat(start).replace(tzinfo=UTC)
    parks = _parks(rng, 12)
    _write_places(lake, parks, t0)
    counts = {"places": len(parks)}
    counts["sensors"], counts["readings"] = _write_sensors(lake, rng, t0, days)
    counts["pings"] = _write_pings(lake, rng, parks, t0, devices, days)
    return counts


def _write_places(lake: Lake, parks: list[tuple[str, shapely.Polygon]], t0: dt.datetime) -> None:
    shapes = [shape for _, shape in parks]
    bounds = shapely.bounds(shapes)
    centroids = shapely.centroid(shapes)
    lake.write("places", {
        "place_id": [pid for pid, _ in parks],
        "name": [f"Sample Park {i}" for i in range(len(parks))],
        "category": ["park"] * len(parks),
        "geometry": shapely.to_wkb(shapes).tolist(),
        "bbox": [dict(zip(("xmin", "ymin", "xmax", "ymax"), b)) for b in bounds.tolist()],
        "h3_cell": latlng_to_cells(shapely.get_y(centroids), shapely.get_x(centroids), lake.cell_res),
        "source": ["sample"] * len(parks),
        "attributes": [json.dumps({"capacity": 500})] * len(parks),
        "loaded_at": pa.array([t0] * len(parks), pa.timestamp("us", tz="UTC")),
    }, mode="overwrite")
    covers = [(pid, *polygon_to_cells(shape, lake.cell_res)) for pid, shape in parks]
    lake.write("place_cells", {
        "place_id": [pid for pid, cells, _ in covers for _ in range(cells.size)],
        "h3_cell": np.concatenate([cells for _, cells, _ in covers]),
        "interior": np.concatenate([inner for _, _, inner in covers]),
    }, mode="overwrite")


def _write_sensors(lake: Lake, rng: np.random.Generator, t0: dt.datetime, days: int) -> tuple[int, int]:
    n = 40
    lat = CENTRE[0] + rng.uniform(-SPAN_DEG, SPAN_DEG, n) / 2
    lon = CENTRE[1] + rng.uniform(-SPAN_DEG, SPAN_DEG, n) / 2
    kinds = rng.choice(["air_quality", "noise"], n)
    ids = [f"S{i:04d}" for i in range(n)]
    lake.write("sensors", {
        "sensor_id": ids, "kind": kinds, "unit": np.where(kinds == "noise", "dB", "ug/m3"),
        "lat": lat, "lon": lon, "h3_cell": latlng_to_cells(lat, lon, lake.cell_res),
        "loaded_at": pa.array([t0] * n, pa.timestamp("us", tz="UTC")),
    }, mode="overwrite")
    steps = days * 24 * 4  # one reading every 15 minutes
    minutes = np.arange(steps) * 15
    hour = (minutes / 60) % 24
    daily = 1 + 0.5 * np.sin((hour - 8) / 24 * 2 * np.pi)  # busier by day
    base = np.where(kinds == "noise", 55.0, 30.0)
    values = base[:, None] * daily[None, :] + rng.normal(0, 2, (n, steps))
    ts = np.datetime64(t0.replace(tzinfo=None), "us") + (minutes * 60 * 10**6).astype("timedelta64[us]")
    lake.write("readings", {
        "sensor_id": np.repeat(ids, steps), "ts": pa.array(np.tile(ts, n)).cast(pa.timestamp("us", tz="UTC")),
        "metric": np.repeat(np.where(kinds == "noise", "laeq", "pm25"), steps), "value": values.ravel(),
        "h3_cell": np.repeat(latlng_to_cells(lat, lon, lake.cell_res), steps),
    }, mode="overwrite")
    return n, n * steps


def _write_pings(lake: Lake, rng: np.random.Generator, parks: list, t0: dt.datetime, devices: int, days: int) -> int:
    per_device = days * 48  # a ping every 30 minutes on average
    home = np.c_[CENTRE[0] + rng.uniform(-SPAN_DEG, SPAN_DEG, devices) / 2, CENTRE[1] + rng.uniform(-SPAN_DEG, SPAN_DEG, devices) / 2]
    favourite = rng.integers(0, len(parks), devices)
    park_xy = np.array([[p.centroid.y, p.centroid.x] for _, p in parks])
    seconds = np.sort(rng.integers(0, days * 86400, (devices, per_device)), axis=1)
    hour = (seconds // 3600) % 24
    at_park = (hour >= 10) & (hour < 17) & (rng.random((devices, per_device)) < 0.6)
    where = np.where(at_park[..., None], park_xy[favourite][:, None, :], home[:, None, :])
    where = where + rng.normal(0, GPS_NOISE_DEG, where.shape)
    lat, lon = where[..., 0].ravel(), where[..., 1].ravel()
    ts = np.datetime64(t0.replace(tzinfo=None), "us") + (seconds.ravel() * 10**6).astype("timedelta64[us]")
    lake.write("pings", {
        "device_id": np.repeat(rng.integers(0, 2**62, devices), per_device),
        "ts": pa.array(ts).cast(pa.timestamp("us", tz="UTC")), "lat": lat, "lon": lon,
        "accuracy_m": rng.uniform(5, 30, lat.size).astype(np.float32),
        "h3_cell": latlng_to_cells(lat, lon, lake.cell_res),
    }, mode="overwrite")
    return lat.size
