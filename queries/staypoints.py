"""Stay points: where a device stopped, wherever that is (not only inside known places).

The classic rule (Li et al., 2008): starting from an anchor ping, the device stays while its
pings remain within ``radius_m`` of the anchor; if that lasts at least ``min_dwell_s``, the run
is a stay point (its centre is the mean of its pings) and the next anchor is the first ping
outside; otherwise the next ping becomes the anchor. Distances are great-circle metres.

The rule is sequential per device, so it runs over each device's time-ordered pings with a
vectorised forward search per anchor; either engine supplies the pings.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from h3_index import latlng_to_cells
from h3_index.distance import haversine_m

STAY_POINT_SCHEMA = {"device_id": pl.Int64, "start": pl.Datetime("us", "UTC"), "end": pl.Datetime("us", "UTC"),
                     "duration_s": pl.Float64, "pings": pl.Int64, "lat": pl.Float64, "lon": pl.Float64}
SEARCH_STEP = 32  # pings compared at once when looking for the first one outside the radius


def stay_points(pings: pl.DataFrame, /, *, radius_m: float, min_dwell_s: float) -> pl.DataFrame:
    """Stay points of every device in ``pings`` (device_id, ts, lat, lon)."""
    ordered = pings.sort("device_id", "ts", "lat", "lon")
    device = ordered["device_id"].to_numpy()
    ts = ordered["ts"].dt.epoch("us").to_numpy()
    lat, lon = ordered["lat"].to_numpy(), ordered["lon"].to_numpy()
    bounds = np.flatnonzero(np.r_[True, device[1:] != device[:-1], True])
    found: list[tuple[int, int]] = []
    for first, end in zip(bounds[:-1], bounds[1:]):
        found += _device_stays(ts, lat, lon, int(first), int(end), radius_m, min_dwell_s * 10**6)
    if not found:
        return pl.DataFrame(schema=STAY_POINT_SCHEMA)
    starts, stops = (np.array(x, np.int64) for x in zip(*found))
    sizes = stops - starts
    owner = np.repeat(np.arange(starts.size), sizes)
    members = np.concatenate([np.arange(a, b) for a, b in zip(starts, stops)])
    return pl.DataFrame({
        "device_id": device[starts], "start": ts[starts], "end": ts[stops - 1],
        "duration_s": (ts[stops - 1] - ts[starts]) / 1e6, "pings": sizes,
        "lat": np.bincount(owner, lat[members]) / sizes, "lon": np.bincount(owner, lon[members]) / sizes,
    }).with_columns(pl.col("start", "end").cast(pl.Datetime("us")).dt.replace_time_zone("UTC")).cast(STAY_POINT_SCHEMA)


def _device_stays(ts: np.ndarray, lat: np.ndarray, lon: np.ndarray, first: int, end: int, radius_m: float,
                  min_dwell_us: float) -> list[tuple[int, int]]:
    """[start, stop) ping ranges of one device's stay points."""
    stays = []
    i = first
    while i < end - 1:
        j = _first_outside(lat, lon, i, end, radius_m)
        if ts[j - 1] - ts[i] >= min_dwell_us:
            stays.append((i, j))
            i = j
        else:
            i += 1
    return stays


def _first_outside(lat: np.ndarray, lon: np.ndarray, anchor: int, end: int, radius_m: float) -> int:
    """Index of the first ping after ``anchor`` farther than ``radius_m`` from it (``end`` if none)."""
    start = anchor + 1
    while start < end:
        stop = min(end, start + SEARCH_STEP)
        far = np.flatnonzero(haversine_m(lat[anchor], lon[anchor], lat[start:stop], lon[start:stop]) > radius_m)
        if far.size:
            return start + int(far[0])
        start = stop
    return end


def with_cells(points: pl.DataFrame, res: int) -> pl.DataFrame:
    """Stay points with the H3 cell of their centre at ``res``."""
    cells = latlng_to_cells(points["lat"].to_numpy(), points["lon"].to_numpy(), res) if points.height else np.empty(0, np.int64)
    return points.with_columns(pl.Series("h3_cell", cells, pl.Int64))
