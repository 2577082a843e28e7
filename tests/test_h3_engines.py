"""The H3 functions in DuckDB SQL and as Polars expressions agree with the h3 library."""

from __future__ import annotations

import datetime as dt

import duckdb
import h3
import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

import citylake.h3_index as H
from citylake.h3_index import polars_expr as X
from citylake.h3_index.sql import register_h3


@pytest.fixture(scope="module")
def con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    register_h3(con)
    return con


class DuckDBEngine:
    name = "duckdb"

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def run(self, frame: pl.DataFrame, sql_expr: str, polars_expr: pl.Expr) -> list:
        self.con.register("t", frame.to_arrow())
        try:
            return [row[0] for row in self.con.execute(f"SELECT {sql_expr} FROM t").fetchall()]
        finally:
            self.con.unregister("t")


class PolarsEngine:
    name = "polars"

    def run(self, frame: pl.DataFrame, sql_expr: str, polars_expr: pl.Expr) -> list:
        return frame.lazy().select(polars_expr).collect().to_series().to_list()


@pytest.fixture(params=["duckdb", "polars"])
def engine(request, con):
    return DuckDBEngine(con) if request.param == "duckdb" else PolarsEngine()


def random_points(n: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    lat = np.r_[rng.uniform(-90, 90, n), [90.0, -90.0, 0.0, 45.0]]
    lon = np.r_[rng.uniform(-180, 180, n), [180.0, -180.0, 0.0, 179.99999999]]
    return pl.DataFrame({"lat": lat, "lon": lon})


@pytest.mark.parametrize("res", [0, 5, 9, 11, 15])
def test_latlng_to_cell(engine, res):
    frame = random_points(2_000, res)
    got = engine.run(frame, f"h3_latlng_to_cell(lat, lon, {res})", X.latlng_to_cell("lat", "lon", res))
    want = [h3.str_to_int(h3.latlng_to_cell(a, b, res)) for a, b in frame.iter_rows()]
    assert got == want


def cells_frame(res: int, seed: int = 1) -> pl.DataFrame:
    frame = random_points(500, seed)
    return pl.DataFrame({"cell": H.latlng_to_cells(frame["lat"], frame["lon"], res)})


@pytest.mark.parametrize("res, parent", [(11, 5), (9, 9), (15, 0), (5, 4)])
def test_cell_to_parent(engine, res, parent):
    frame = cells_frame(res)
    got = engine.run(frame, f"h3_cell_to_parent(cell, {parent})", X.cell_to_parent("cell", parent))
    assert got == [h3.str_to_int(h3.cell_to_parent(h3.int_to_str(c), parent)) for c in frame["cell"]]


def test_cell_to_string_and_back(engine):
    frame = cells_frame(9)
    text = engine.run(frame, "h3_cell_to_string(cell)", X.cell_to_string("cell"))
    assert text == [h3.int_to_str(c) for c in frame["cell"]]
    back = engine.run(pl.DataFrame({"s": text}), "h3_string_to_cell(s)", X.string_to_cell("s"))
    assert back == frame["cell"].to_list()


@pytest.mark.parametrize("k", [0, 1, 3])
def test_grid_disk(engine, k):
    frame = cells_frame(8)
    got = engine.run(frame, f"h3_grid_disk(cell, {k})", X.grid_disk("cell", k))
    want = [sorted(h3.str_to_int(c) for c in h3.grid_disk(h3.int_to_str(cell), k)) for cell in frame["cell"]]
    assert [sorted(d) for d in got] == want


def test_cell_to_boundary_wkt(engine):
    frame = cells_frame(10)
    got = engine.run(frame, "h3_cell_to_boundary_wkt(cell)", X.cell_to_boundary_wkt("cell"))
    assert got == H.cells_to_boundary_wkt(frame["cell"].to_numpy())
    for wkt, cell in zip(got[:50], frame["cell"]):
        # a closed ring with one vertex per h3 boundary vertex
        assert wkt.count(",") == len(h3.cell_to_boundary(h3.int_to_str(cell)))


def test_resolution(engine):
    frame = pl.DataFrame({"cell": [h3.str_to_int(h3.latlng_to_cell(10, 10, r)) for r in range(16)]})
    got = engine.run(frame, "h3_get_resolution(cell)", X.cell_resolution("cell"))
    assert got == list(range(16))


@given(st.lists(st.datetimes(dt.datetime(1990, 1, 1), dt.datetime(2100, 1, 1)), min_size=1, max_size=30),
       st.sampled_from(list(H.BUCKETS_US)))
def test_time_buckets_agree_across_numpy_duckdb_polars(con, stamps, freq):
    frame = pl.DataFrame({"ts": stamps}, schema={"ts": pl.Datetime("us", "UTC")})
    via_numpy = H.time_bucket(frame["ts"].dt.replace_time_zone(None).to_numpy(), freq)
    via_polars = frame.select(X.time_bucket("ts", freq)).to_series().dt.replace_time_zone(None).to_list()
    via_duckdb = DuckDBEngine(con).run(frame, f"time_bucket_of(ts, '{freq}')", None)
    assert [t.replace(tzinfo=None) for t in via_duckdb] == via_polars == via_numpy.astype(dt.datetime).tolist()
    width = dt.timedelta(microseconds=H.BUCKETS_US[freq])
    for start, ts in zip(via_polars, stamps):
        assert start <= ts < start + width


def test_sql_nulls_stay_null(con):
    row = con.execute(
        "SELECT h3_latlng_to_cell(NULL, 1.0, 9), h3_cell_to_parent(NULL, 5), h3_cell_to_string(NULL), "
        "h3_grid_disk(NULL, 1), h3_latlng_to_cell(lat, 1.0, 9) FROM (VALUES (1.0), (NULL)) v(lat) ORDER BY lat NULLS LAST"
    ).fetchall()
    assert row[0][:4] == (None, None, None, None) and row[0][4] == h3.str_to_int(h3.latlng_to_cell(1, 1, 9))
    assert row[1][4] is None


def test_sql_null_cells_do_not_disturb_their_neighbours(con):
    """A NULL among cells must not push the chunk through float64 (which rounds 64-bit cells)."""
    cells = [h3.str_to_int(h3.latlng_to_cell(31 + i / 1000, 121 + i / 1000, 11)) for i in range(3000)]
    values = pa.table({"cell": pa.array([None if i % 7 == 0 else c for i, c in enumerate(cells)], pa.int64())})
    con.register("cells_with_nulls", values)
    got = [r[0] for r in con.execute("SELECT h3_cell_to_parent(cell, 7) FROM cells_with_nulls").fetchall()]
    con.unregister("cells_with_nulls")
    want = [None if i % 7 == 0 else h3.str_to_int(h3.cell_to_parent(h3.int_to_str(c), 7)) for i, c in enumerate(cells)]
    assert got == want


@pytest.mark.parametrize("query, message", [
    ("SELECT h3_latlng_to_cell(91.0, 0.0, 9)", "lat 91.0"),
    ("SELECT h3_latlng_to_cell(1.0, 1.0, 16)", "resolution 16"),
    ("SELECT h3_cell_to_parent(123, 1)", "not a valid H3 cell"),
    ("SELECT h3_string_to_cell('nope')", "'nope'"),
    ("SELECT time_bucket_of(TIMESTAMP '2026-01-01', '2h')", "use one of 5min"),
])
def test_sql_errors_name_the_value(con, query, message):
    with pytest.raises(duckdb.Error, match=message):
        con.execute(query).fetchall()


def test_polars_refuses_bad_resolution_when_building_the_expression():
    with pytest.raises(H.BadResolution):
        X.latlng_to_cell("lat", "lon", 16)
    with pytest.raises(H.BadFrequency):
        X.time_bucket("ts", "2h")
