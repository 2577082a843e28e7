"""Figure point_to_cell: citylake's h3_index vs an h3-py loop (baseline), h3ronpy in one call, polars-h3."""

from __future__ import annotations

import numpy as np

from bench.harness import timed
from bench.synthetic import city_points
from citylake.h3_index import latlng_to_cells


def bench_point_to_cell(n: int, res: int = 11) -> dict:
    import h3
    import h3ronpy.vector
    import polars as pl
    import polars_h3

    lat, lon = city_points(n)
    out: dict = {"points": n, "resolution": res}
    loop_n = min(n, 2_000_000)

    def h3py_loop():
        return [h3.latlng_to_cell(a, b, res) for a, b in zip(lat[:loop_n].tolist(), lon[:loop_n].tolist())]

    seconds, _ = timed(h3py_loop)
    out["h3py_loop_s"] = seconds * n / loop_n
    out["h3py_loop_note"] = f"timed on {loop_n:,} points and scaled to {n:,} (a pure-Python loop is linear)"
    out["citylake_s"], ours = timed(lambda: latlng_to_cells(lat, lon, res), repeat=3)
    out["h3ronpy_single_call_s"], _ = timed(lambda: h3ronpy.vector.coordinates_to_cells(lat, lon, res), repeat=3)
    frame = pl.DataFrame({"lat": lat, "lon": lon})
    out["polars_h3_s"], theirs = timed(lambda: frame.select(polars_h3.latlng_to_cell("lat", "lon", res)), repeat=3)
    assert np.array_equal(ours, theirs.to_series().to_numpy().view(np.int64)), "polars-h3 and citylake disagree"
    for key in ("citylake_s", "h3ronpy_single_call_s", "polars_h3_s", "h3py_loop_s"):
        out[key[:-2] + "_mpoints_per_s"] = round(n / out[key] / 1e6, 2)
    out["speedup_vs_h3py_loop"] = round(out["h3py_loop_s"] / out["citylake_s"], 1)
    out["speedup_vs_polars_h3"] = round(out["polars_h3_s"] / out["citylake_s"], 2)
    return out
