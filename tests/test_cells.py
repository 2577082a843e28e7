"""h3_index.cells against the h3 library as oracle."""

from __future__ import annotations

import math

import h3
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import citylake.h3_index as H
from citylake.h3_index import cells as C

lats = st.floats(-90, 90, allow_nan=False)
lons = st.floats(-180, 180, allow_nan=False)
resolutions = st.integers(0, 15)
# Places where grid maths is hardest: the poles, the antimeridian, the equator and prime meridian.
edge_lats = st.sampled_from([90.0, -90.0, 89.999999, -89.999999, 0.0, 1e-12, -1e-12])
edge_lons = st.sampled_from([180.0, -180.0, 179.9999999, -179.9999999, 0.0, 1e-12, -1e-12])


def oracle_cell(lat: float, lon: float, res: int) -> int:
    return h3.str_to_int(h3.latlng_to_cell(lat, lon, res))


@given(st.lists(st.tuples(lats, lons), min_size=1, max_size=50), resolutions)
def test_latlng_to_cells_matches_h3(points, res):
    lat, lon = zip(*points)
    got = H.latlng_to_cells(lat, lon, res)
    assert got.dtype == np.int64
    assert got.tolist() == [oracle_cell(a, b, res) for a, b in points]


@given(st.one_of(edge_lats, lats), st.one_of(edge_lons, lons), resolutions)
def test_poles_and_antimeridian_match_h3(lat, lon, res):
    assert H.latlng_to_cells([lat], [lon], res)[0] == oracle_cell(lat, lon, res)


def test_parallel_chunks_give_the_serial_answer():
    rng = np.random.default_rng(3)
    n = C.PARALLEL_CHUNK * 2 + 17
    lat, lon = rng.uniform(-80, 80, n), rng.uniform(-180, 180, n)
    got = H.latlng_to_cells(lat, lon, 9)
    assert np.array_equal(got, C._latlng_to_cells(lat, lon, 9))
    sample = rng.integers(0, n, 500)
    assert got[sample].tolist() == [oracle_cell(lat[i], lon[i], 9) for i in sample]


@given(lats, lons, st.integers(1, 15), st.data())
def test_parent_matches_h3(lat, lon, res, data):
    parent_res = data.draw(st.integers(0, res))
    cell = oracle_cell(lat, lon, res)
    assert H.cell_to_parent([cell], parent_res)[0] == h3.str_to_int(h3.cell_to_parent(h3.int_to_str(cell), parent_res))


@given(lats, lons, st.integers(0, 12), st.integers(0, 2))
def test_children_match_h3(lat, lon, res, step):
    cell = h3.latlng_to_cell(lat, lon, res)
    got = H.cell_to_children(h3.str_to_int(cell), res + step)
    assert sorted(got.tolist()) == sorted(h3.str_to_int(c) for c in h3.cell_to_children(cell, res + step))


@given(lats, lons, st.integers(0, 15), st.integers(0, 3))
def test_grid_disk_matches_h3(lat, lon, res, k):
    cell = h3.latlng_to_cell(lat, lon, res)
    (got,) = H.grid_disk([h3.str_to_int(cell)], k)
    assert sorted(got.tolist()) == sorted(h3.str_to_int(c) for c in h3.grid_disk(cell, k))


def test_grid_disk_around_a_pentagon():
    pentagon = h3.get_pentagons(5)[0]
    (got,) = H.grid_disk([h3.str_to_int(pentagon)], 1)
    assert got.size == 6  # a pentagon has five neighbours
    assert sorted(got.tolist()) == sorted(h3.str_to_int(c) for c in h3.grid_disk(pentagon, 1))


@given(st.lists(st.tuples(lats, lons, resolutions), min_size=1, max_size=20))
def test_strings_round_trip(points):
    cells = [oracle_cell(*p) for p in points]
    text = H.cells_to_strings(cells)
    assert text == [h3.int_to_str(c) for c in cells]
    assert H.strings_to_cells(text).tolist() == cells


@given(lats, lons, resolutions)
def test_centre_matches_h3(lat, lon, res):
    cell = oracle_cell(lat, lon, res)
    got_lat, got_lon = H.cells_to_latlng([cell])
    want = h3.cell_to_latlng(h3.int_to_str(cell))
    assert _metres_apart((got_lat[0], got_lon[0]), want) < 0.01


@given(st.one_of(edge_lats, lats), st.one_of(edge_lons, lons), resolutions)
def test_boundary_vertices_match_h3(lat, lon, res):
    cell = oracle_cell(lat, lon, res)
    (polygon,) = H.cells_to_polygons([cell])
    got = np.asarray(polygon.exterior.coords)[:-1]  # lon, lat; drop the closing vertex
    want = h3.cell_to_boundary(h3.int_to_str(cell))  # (lat, lon) pairs
    assert len(got) == len(want)
    for g_lon, g_lat in got:
        # h3ronpy runs h3o, a Rust port of H3; at the poles its vertices drift from C H3's by ~1 cm.
        assert min(_metres_apart((g_lat, g_lon), w) for w in want) < 0.05


def test_boundary_wkt_is_a_closed_polygon():
    (wkt,) = H.cells_to_boundary_wkt([oracle_cell(31.2, 121.4, 9)])
    assert wkt.startswith("POLYGON ((") and wkt.count(",") == 6


def test_resolutions_read_from_bits():
    cells = [oracle_cell(10, 10, r) for r in range(16)]
    assert H.cell_resolutions(cells).tolist() == list(range(16))


def _metres_apart(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance: longitudes mean nothing at the poles, so compare positions, not numbers."""
    return h3.great_circle_distance(a, b, unit="m")


# --- invalid input: typed errors that name the value -------------------------------------


@pytest.mark.parametrize("lat, lon, column", [(91, 0, "lat"), (-90.5, 0, "lat"), (0, 180.5, "lon"), (math.nan, 0, "lat"),
                                              (0, math.inf, "lon"), (0, -math.inf, "lon")])
def test_bad_coordinates_name_the_value(lat, lon, column):
    with pytest.raises(H.BadCoordinate) as err:
        H.latlng_to_cells([1.0, lat], [1.0, lon], 9)
    assert err.value.column == column and err.value.row == 1
    assert column in str(err.value) and "EPSG:4326" in str(err.value)
    assert isinstance(err.value, ValueError)


@given(st.one_of(st.integers(max_value=-1), st.integers(min_value=16), st.floats(), st.booleans(), st.text(max_size=3)))
def test_bad_resolutions_are_refused(res):
    with pytest.raises(H.BadResolution, match="resolution"):
        H.latlng_to_cells([0.0], [0.0], res)


@given(st.integers(-(2**63), 2**63 - 1))
def test_random_integers_are_refused_unless_valid(value):
    if h3.is_valid_cell(h3.int_to_str(value & (2**64 - 1))):
        assert H.check_cells([value])[0] == value
    else:
        with pytest.raises(H.BadCell):
            H.cell_to_parent([value], 0)


@pytest.mark.parametrize("text", ["", "zz", "8928308280fffff0", "not a cell", "0"])
def test_bad_cell_strings_are_refused(text):
    with pytest.raises(H.BadCell, match="not a valid H3 cell"):
        H.strings_to_cells(["8928308280fffff", text])


def test_parent_must_be_coarser():
    with pytest.raises(H.BadResolution, match="coarser"):
        H.cell_to_parent([oracle_cell(0, 0, 5)], 6)


def test_children_must_be_finer():
    with pytest.raises(H.BadResolution, match="finer"):
        H.cell_to_children(oracle_cell(0, 0, 5), 4)


def test_negative_grid_distance_is_refused():
    with pytest.raises(ValueError, match="k=-1"):
        H.grid_disk([oracle_cell(0, 0, 5)], -1)


def test_a_call_makes_at_most_ten_million_cells():
    """Children and disks grow as 7^levels and k²: past the limit a call says so instead of exhausting memory."""
    cell = int(H.latlng_to_cells([31.2], [121.4], 2)[0])
    assert len(H.cell_to_children(cell, 10)) == 7 ** 8  # 5.8 million: within
    with pytest.raises(H.TooManyCells, match="coarser resolution"):
        H.cell_to_children(cell, 11)
    assert len(H.grid_disk([cell], 1000)[0]) <= 3_003_001
    with pytest.raises(H.TooManyCells, match="smaller k"):
        H.grid_disk([cell], 2_000)
