"""H3 functions registered into a DuckDB connection.

There is no H3 extension for DuckDB on PyPI, so the coding system's own numpy functions
are registered as vectorised (Arrow) UDFs: SQL and Python give the same answers because
they run the same code. NULL in gives NULL out; invalid values raise the typed error.
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb
import h3ronpy
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from citylake.h3_index import cells as C
from citylake.h3_index.buckets import BUCKETS_US

CELL = "BIGINT"


def _valid_rows(*columns: pa.Array) -> np.ndarray:
    mask = np.ones(len(columns[0]), dtype=bool)
    for column in columns:
        if column.null_count:
            mask &= ~np.asarray(column.is_null())
    return mask


def _numpy(column: pa.Array, rows: np.ndarray, dtype: str) -> np.ndarray:
    # Fill NULLs first: numpy has no integer NULL, and pyarrow would otherwise hand back
    # float64, rounding every 64-bit cell in the chunk. The filled rows are masked out anyway.
    if column.null_count:
        column = pc.fill_null(column, 0)
    values = column.to_numpy(zero_copy_only=False)
    return values[rows].astype(dtype, copy=False)


def _per_resolution(res: np.ndarray, compute: Callable[[np.ndarray, int], np.ndarray], n: int) -> np.ndarray:
    """Run ``compute(row_mask, res)`` once per distinct resolution (usually a constant)."""
    out = np.zeros(n, dtype=np.int64)
    for value in np.unique(res):
        at = res == value
        out[at] = compute(at, int(value))
    return out


def _scatter(result: np.ndarray | list, rows: np.ndarray, type_: pa.DataType) -> pa.Array:
    """Put per-valid-row results back in place, NULL where an input was NULL."""
    if rows.all():
        return pa.array(result, type=type_)
    full: list = [None] * rows.size
    for i, value in zip(np.flatnonzero(rows), result if isinstance(result, list) else result.tolist()):
        full[i] = value
    return pa.array(full, type=type_)


def _latlng_to_cell(lat: pa.Array, lon: pa.Array, res: pa.Array) -> pa.Array:
    rows = _valid_rows(lat, lon, res)
    la, lo, rs = _numpy(lat, rows, "float64"), _numpy(lon, rows, "float64"), _numpy(res, rows, "int64")
    out = _per_resolution(rs, lambda at, r: C.latlng_to_cells(la[at], lo[at], r), rs.size)
    return _scatter(out, rows, pa.int64())


def _cell_to_parent(cell: pa.Array, res: pa.Array) -> pa.Array:
    rows = _valid_rows(cell, res)
    cs, rs = _numpy(cell, rows, "int64"), _numpy(res, rows, "int64")
    out = _per_resolution(rs, lambda at, r: C.cell_to_parent(cs[at], r), rs.size)
    return _scatter(out, rows, pa.int64())


def _cell_function(compute: Callable[[np.ndarray], np.ndarray | list], type_: pa.DataType) -> Callable:
    def udf(cell: pa.Array) -> pa.Array:
        rows = _valid_rows(cell)
        return _scatter(compute(_numpy(cell, rows, "int64")), rows, type_)

    return udf


def _string_to_cell(text: pa.Array) -> pa.Array:
    rows = _valid_rows(text)
    values = [v for v, ok in zip(text.to_pylist(), rows) if ok]
    return _scatter(C.strings_to_cells(values), rows, pa.int64())


def _is_valid_cell(cell: pa.Array) -> pa.Array:
    rows = _valid_rows(cell)
    values = _numpy(cell, rows, "int64")
    ok = h3ronpy.cells_valid(pa.array(values.view(np.uint64)), booleanarray=True)
    return _scatter(pa.array(ok).to_numpy(zero_copy_only=False), rows, pa.bool_())


def _grid_disk(cell: pa.Array, k: pa.Array) -> pa.Array:
    rows = _valid_rows(cell, k)
    cs, ks = _numpy(cell, rows, "int64"), _numpy(k, rows, "int64")
    C.check_cell_count(sum(C.disk_size(max(int(v), 0)) for v in ks), f"h3_grid_disk over {cs.size:,} rows")  # the whole batch
    disks: list = [None] * cs.size
    for value in np.unique(ks):
        at = np.flatnonzero(ks == value)
        for i, disk in zip(at, C.grid_disk(cs[at], int(value))):
            disks[i] = disk.tolist()
    return _scatter(disks, rows, pa.list_(pa.int64()))


def _cell_to_children(cell: pa.Array, res: pa.Array) -> pa.Array:
    rows = _valid_rows(cell, res)
    cs, rs = _numpy(cell, rows, "int64"), _numpy(res, rows, "int64")
    owns = C.cell_resolutions(C.check_cells(cs)) if cs.size else cs
    C.check_cell_count(sum(C.children_count(int(o), int(r)) for o, r in zip(owns, rs)), f"h3_cell_to_children over {cs.size:,} rows")
    return _scatter([C.cell_to_children(c, int(r)).tolist() for c, r in zip(cs, rs)], rows, pa.list_(pa.int64()))


def _udfs() -> list[tuple[str, Callable, list[str], str]]:
    return [
        ("h3_latlng_to_cell", _latlng_to_cell, ["DOUBLE", "DOUBLE", "INTEGER"], CELL),
        ("h3_cell_to_parent", _cell_to_parent, [CELL, "INTEGER"], CELL),
        ("h3_cell_to_children", _cell_to_children, [CELL, "INTEGER"], f"{CELL}[]"),
        ("h3_grid_disk", _grid_disk, [CELL, "INTEGER"], f"{CELL}[]"),
        ("h3_cell_to_string", _cell_function(C.cells_to_strings, pa.string()), [CELL], "VARCHAR"),
        ("h3_string_to_cell", _string_to_cell, ["VARCHAR"], CELL),
        ("h3_get_resolution", _cell_function(C.cell_resolutions, pa.int32()), [CELL], "INTEGER"),
        ("h3_is_valid_cell", _is_valid_cell, [CELL], "BOOLEAN"),
        ("h3_cell_to_lat", _cell_function(lambda c: C.cells_to_latlng(c)[0], pa.float64()), [CELL], "DOUBLE"),
        ("h3_cell_to_lng", _cell_function(lambda c: C.cells_to_latlng(c)[1], pa.float64()), [CELL], "DOUBLE"),
        ("h3_cell_to_boundary_wkt", _cell_function(C.cells_to_boundary_wkt, pa.string()), [CELL], "VARCHAR"),
    ]


def _bucket_macro() -> str:
    cases = " ".join(f"WHEN '{name}' THEN {width}" for name, width in BUCKETS_US.items())
    names = ", ".join(BUCKETS_US)
    return (
        "CREATE OR REPLACE MACRO time_bucket_of(ts, freq) AS time_bucket(to_microseconds(CASE freq "
        f"{cases} ELSE error('time bucket ' || freq || ' is not known; use one of {names}') END), ts, "
        "TIMESTAMP '1970-01-01')"
    )


def register_h3(con: duckdb.DuckDBPyConnection, *, spatial: bool = False) -> None:
    """Register the ``h3_*`` functions and ``time_bucket_of(ts, freq)`` on ``con``.

    With ``spatial=True`` (the spatial extension is loaded) also ``h3_cell_to_boundary(cell)``
    returning a GEOMETRY.
    """
    registered = {row[0] for row in con.execute("SELECT DISTINCT function_name FROM duckdb_functions()").fetchall()}
    for name, fn, params, returns in _udfs():
        if name in registered:
            con.remove_function(name)
        con.create_function(name, fn, params, returns, type="arrow", null_handling="special", side_effects=False)
    con.execute(_bucket_macro())
    if spatial:
        con.execute("CREATE OR REPLACE MACRO h3_cell_to_boundary(cell) AS ST_GeomFromText(h3_cell_to_boundary_wkt(cell))")
