"""Stay points: where a device stopped, wherever that is (not only inside known places).

The classic rule (Li et al., 2008): starting from an anchor ping, the device stays while its
pings remain within ``radius_m`` of the anchor; if that lasts at least ``min_dwell_s``, the run
is a stay point (its centre is the mean of its pings) and the next anchor is the first ping
outside; otherwise the next ping becomes the anchor. Distances are great-circle metres.

The rule is sequential per device: a compiled walk over each device's time-ordered pings
(``queries.staypoint_kernels``), devices in blocks on threads; either engine supplies the pings.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from citylake.h3_index import latlng_to_cells
from citylake.h3_index.threads import thread_map, thread_spans

STAY_POINT_SCHEMA = {"device_id": pl.Int64, "start": pl.Datetime("us", "UTC"), "end": pl.Datetime("us", "UTC"),
                     "duration_s": pl.Float64, "pings": pl.Int64, "lat": pl.Float64, "lon": pl.Float64}


def stay_points(pings: pl.DataFrame, /, *, radius_m: float, min_dwell_s: float) -> pl.DataFrame:
    """Stay points of every device in ``pings`` (device_id, ts, lat, lon)."""
    ordered = pings.sort("device_id", "ts", "lat", "lon")
    device = ordered["device_id"].to_numpy()
    ts = ordered["ts"].dt.epoch("us").to_numpy()
    lat, lon = ordered["lat"].to_numpy(), ordered["lon"].to_numpy()
    bounds = np.flatnonzero(np.r_[True, device[1:] != device[:-1], True])
    starts, stops = _stay_ranges(bounds, ts, lat, lon, radius_m, min_dwell_s * 10**6)
    if not starts.size:
        return pl.DataFrame(schema=STAY_POINT_SCHEMA)
    sizes = stops - starts
    owner = np.repeat(np.arange(starts.size), sizes)
    members = starts[owner] + np.arange(owner.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)  # each stay's pings in turn
    return pl.DataFrame({
        "device_id": device[starts], "start": ts[starts], "end": ts[stops - 1],
        "duration_s": (ts[stops - 1] - ts[starts]) / 1e6, "pings": sizes,
        "lat": np.bincount(owner, lat[members]) / sizes, "lon": np.bincount(owner, lon[members]) / sizes,
    }).with_columns(pl.col("start", "end").cast(pl.Datetime("us")).dt.replace_time_zone("UTC")).cast(STAY_POINT_SCHEMA)


def _stay_ranges(bounds: np.ndarray, ts: np.ndarray, lat: np.ndarray, lon: np.ndarray, radius_m: float,
                 min_dwell_us: float) -> tuple[np.ndarray, np.ndarray]:
    """[start, stop) ping ranges of every device's stay points, in device order; blocks of devices on threads."""
    from citylake.queries.staypoint_kernels import stay_ranges  # numba loads on the first stay-point search, not before

    blocks = [bounds[first:last + 1] for first, last in thread_spans(bounds.size - 1)]  # devices first .. last - 1
    found = thread_map(lambda block: stay_ranges(block, ts, lat, lon, float(radius_m), float(min_dwell_us)), blocks)
    if not found:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])


def with_cells(points: pl.DataFrame, res: int) -> pl.DataFrame:
    """Stay points with the H3 cell of their centre at ``res``."""
    cells = latlng_to_cells(points["lat"].to_numpy(), points["lon"].to_numpy(), res) if points.height else np.empty(0, np.int64)
    return points.with_columns(pl.Series("h3_cell", cells, pl.Int64))
