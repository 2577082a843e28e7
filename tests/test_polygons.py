"""Polygon covers: shapely is the oracle for inside/outside, h3 for the cells themselves."""

from __future__ import annotations

import h3
import numpy as np
import pytest
import shapely
from hypothesis import example, given
from hypothesis import strategies as st

import citylake.h3_index as H


def blob(lon: float, lat: float, radius: float, vertices: int, seed: int) -> shapely.Polygon:
    """An irregular star-shaped polygon, like a real park outline."""
    rng = np.random.default_rng(seed)
    angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
    r = radius * rng.uniform(0.4, 1.0, vertices)
    return shapely.make_valid(shapely.Polygon(np.c_[lon + r * np.cos(angles), lat + r * np.sin(angles)]))


def points_in_bbox(geom, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xmin, ymin, xmax, ymax = geom.bounds
    return rng.uniform(ymin, ymax, n), rng.uniform(xmin, xmax, n)


def check_cover(geom, res: int, seed: int = 0) -> None:
    cells, interior = H.polygon_to_cells(geom, res)
    assert cells.size == np.unique(cells).size
    shapes = H.cells_to_polygons(cells)
    # interior cells lie wholly inside; every cell reaches the polygon
    assert shapely.within(shapes[interior], geom).all()
    assert shapely.intersects(shapes, geom.buffer(1e-6)).all()
    # every point inside the polygon falls in a covered cell; interior-cell points are all inside
    lat, lon = points_in_bbox(geom, 20_000, seed)
    inside = shapely.contains_xy(geom, lon, lat)
    point_cells = H.latlng_to_cells(lat, lon, res)
    covered = np.isin(point_cells, cells)
    assert covered[inside].all(), "a point inside the polygon fell outside its cover"
    in_interior = np.isin(point_cells, cells[interior])
    assert inside[in_interior].all(), "a point in an interior cell is outside the polygon"
    # h3's own centre-containment polyfill is a subset of the cover
    want = {h3.str_to_int(c) for c in h3.h3shape_to_cells(h3.geo_to_h3shape(geom), res)}
    assert want <= set(cells.tolist())


@given(
    st.floats(-170, 170), st.floats(-70, 70), st.floats(0.002, 0.05), st.integers(5, 60), st.integers(0, 2**31), st.integers(7, 11)
)
def test_random_polygons_are_covered_exactly(lon, lat, radius, vertices, seed, res):
    check_cover(blob(lon, lat, radius, vertices, seed), res, seed)


def test_polygon_with_a_hole():
    outer = blob(121.47, 31.23, 0.02, 40, 1)
    park = outer.difference(shapely.Point(121.47, 31.23).buffer(0.005))
    check_cover(park, 10)
    cells, interior = H.polygon_to_cells(park, 10)
    lake_cell = H.latlng_to_cells([31.23], [121.47], 10)[0]
    assert lake_cell not in cells[interior]


def test_multipolygon():
    parts = shapely.MultiPolygon([blob(121.40, 31.20, 0.01, 30, 2), blob(121.50, 31.25, 0.01, 30, 3)])
    check_cover(parts, 10)


def test_polygon_smaller_than_a_cell_gets_its_boundary_cell():
    tiny = shapely.Point(121.47, 31.23).buffer(1e-5)
    cells, interior = H.polygon_to_cells(tiny, 8)
    assert H.latlng_to_cells([31.23], [121.47], 8)[0] in cells
    assert not interior.any()


def test_empty_polygon_has_no_cells():
    cells, interior = H.polygon_to_cells(shapely.Polygon(), 9)
    assert cells.size == 0 and interior.size == 0


@pytest.mark.parametrize("geom", [shapely.Point(0, 0), shapely.LineString([(0, 0), (1, 1)]), "POLYGON ((0 0, 1 0, 1 1, 0 0))"])
def test_non_polygons_are_refused(geom):
    with pytest.raises(H.BadGeometry, match="Polygon or MultiPolygon"):
        H.polygon_to_cells(geom, 9)


def test_self_intersecting_polygon_is_refused_with_the_fix():
    bowtie = shapely.Polygon([(0, 0), (1, 1), (1, 0), (0, 1)])
    with pytest.raises(H.BadGeometry, match="make_valid"):
        H.polygon_to_cells(bowtie, 5)


# --- the size of a cover, known before covering ------------------------------------------------------------


@given(st.floats(-170, 170), st.floats(-70, 70), st.floats(0.005, 0.05), st.integers(5, 40), st.integers(0, 2**31),
       st.integers(8, 10))
@example(lon=-30.5, lat=0.005, radius=0.005, vertices=30, seed=8, res=8)
def test_estimate_is_close_to_the_cover_h3_makes(lon, lat, radius, vertices, seed, res):
    from citylake.h3_index.polygons import estimate_cells

    park = blob(lon, lat, radius, vertices, seed)
    centred = len(h3.h3shape_to_cells(h3.geo_to_h3shape(park), res))  # h3's own count: cells whose centre is inside
    cover = H.polygon_to_cells(park, res)[0].size  # those and the cells along the outline
    estimate = estimate_cells(park, res)
    # H3 cells differ in area from place to place (by up to about 2x over the globe), so an estimate from the average cell
    # is within a factor, never off by orders of magnitude; a small park that happens to sit inside one cell still gets
    # its outline's share (the example: 0.4 km² in one 0.74 km² cell, estimated at 4)
    assert 0.6 * centred <= estimate and 0.5 * cover - 2 <= estimate <= 1.5 * cover + 3, (centred, cover, estimate)


def test_area_is_the_spheres_for_the_whole_globe_and_geodesic_for_a_city_block():
    from pyproj import Geod

    from citylake.h3_index.distance import EARTH_RADIUS_M
    from citylake.h3_index.polygons import area_m2

    assert area_m2(shapely.box(-180, -90, 180, 90)) == pytest.approx(4 * np.pi * EARTH_RADIUS_M**2, rel=1e-9)
    block = blob(121.47, 31.23, 0.01, 30, 4)
    geodesic = abs(Geod(a=EARTH_RADIUS_M, b=EARTH_RADIUS_M).geometry_area_perimeter(block)[0])
    assert area_m2(block) == pytest.approx(geodesic, rel=1e-3)


def test_a_world_sized_polygon_is_refused_before_covering():
    import time

    started = time.perf_counter()
    with pytest.raises(H.TooManyCells, match="10,000,000"):
        H.polygon_to_cells(shapely.box(-179, -89, 179, 89), 11)
    assert time.perf_counter() - started < 5
