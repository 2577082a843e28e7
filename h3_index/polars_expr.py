"""H3 functions as Polars expressions, for lazy frames over the lake.

Parent cells are pure bit arithmetic, done natively by Polars so they stream and
push down; the rest call the same numpy functions DuckDB's UDFs call.
"""

from __future__ import annotations

import polars as pl

from citylake.h3_index import cells as C
from citylake.h3_index.buckets import bucket_width_us

IntoExpr = str | pl.Expr


def _expr(value: IntoExpr) -> pl.Expr:
    return pl.col(value) if isinstance(value, str) else value


def latlng_to_cell(lat: IntoExpr, lon: IntoExpr, res: int) -> pl.Expr:
    """Cell (Int64) of each (lat, lon) in degrees at resolution ``res``."""
    res = C.check_resolution(res)

    def compute(points: pl.Series) -> pl.Series:
        frame = points.struct.unnest()
        return pl.Series(C.latlng_to_cells(frame[:, 0].to_numpy(), frame[:, 1].to_numpy(), res), dtype=pl.Int64)

    return pl.struct(_expr(lat).alias("lat"), _expr(lon).alias("lon")).map_batches(compute, return_dtype=pl.Int64)


def cell_to_parent(cell: IntoExpr, res: int) -> pl.Expr:
    """Ancestor at the coarser resolution ``res`` of each (valid) cell, by bit arithmetic."""
    res = C.check_resolution(res)
    unused = (1 << (C.DIGIT_BITS * (C.MAX_RES - res))) - 1
    keep = ~int(C.RES_MASK)
    return (_expr(cell) & pl.lit(keep, pl.Int64)) | pl.lit((res << C.RES_SHIFT) | unused, pl.Int64)


def cell_resolution(cell: IntoExpr) -> pl.Expr:
    """Resolution of each cell, read from its resolution bits."""
    return (_expr(cell) & pl.lit(int(C.RES_MASK), pl.Int64)).floordiv(1 << C.RES_SHIFT).cast(pl.Int8)


def cell_to_string(cell: IntoExpr) -> pl.Expr:
    """Hex string of each cell."""
    return _expr(cell).map_batches(
        lambda s: pl.Series(C.cells_to_strings(s.to_numpy()), dtype=pl.String), return_dtype=pl.String
    )


def string_to_cell(text: IntoExpr) -> pl.Expr:
    """Cell of each hex string."""
    return _expr(text).map_batches(
        lambda s: pl.Series(C.strings_to_cells(s.to_list()), dtype=pl.Int64), return_dtype=pl.Int64
    )


def grid_disk(cell: IntoExpr, k: int) -> pl.Expr:
    """Every cell within ``k`` steps of each cell, as a list."""

    def compute(s: pl.Series) -> pl.Series:
        return pl.Series([d.tolist() for d in C.grid_disk(s.to_numpy(), k)], dtype=pl.List(pl.Int64))

    return _expr(cell).map_batches(compute, return_dtype=pl.List(pl.Int64))


def cell_to_boundary_wkt(cell: IntoExpr) -> pl.Expr:
    """Boundary polygon of each cell as WKT."""
    return _expr(cell).map_batches(
        lambda s: pl.Series(C.cells_to_boundary_wkt(s.to_numpy()), dtype=pl.String), return_dtype=pl.String
    )


def time_bucket(ts: IntoExpr, freq: str) -> pl.Expr:
    """Start of the UTC bucket (``5min``, ``15min``, ``1h``, ``1d``) of each timestamp."""
    width = bucket_width_us(freq)
    return _expr(ts).dt.truncate(f"{width}us")


__all__ = [
    "cell_resolution", "cell_to_boundary_wkt", "cell_to_parent", "cell_to_string", "grid_disk",
    "latlng_to_cell", "string_to_cell", "time_bucket",
]
