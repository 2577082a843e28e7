"""The compiled point-in-polygon test: shapely (GEOS ``contains``) is the oracle, point for point, on random points,
points on vertices and edges, points within rounding of an edge, holes and multipolygons."""

from __future__ import annotations

import numpy as np
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from citylake.queries import inside, inside_kernels
from tests.test_polygons import blob


def shapes_and_points(seed: int, shapes: list, n: int = 4_000) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Points each with a polygon number: a third anywhere in its polygon's box and a tenth beyond each side, a third on
    its vertices, a third on its edges (a point along an edge, rounded to doubles: on it, or within rounding of it)."""
    rng = np.random.default_rng(seed)
    shapes = np.array(shapes + [None], dtype=object)  # a number with no polygon is never asked about
    shape = rng.integers(0, len(shapes) - 1, n)
    box = shapely.bounds(shapes[shape])
    margin_x, margin_y = (box[:, 2] - box[:, 0]) / 10, (box[:, 3] - box[:, 1]) / 10  # some beyond the box, each side
    lon, lat = rng.uniform(box[:, 0] - margin_x, box[:, 2] + margin_x), rng.uniform(box[:, 1] - margin_y, box[:, 3] + margin_y)
    for i in range(n // 3, n):
        ring = shapely.get_coordinates(shapes[shape[i]])
        j = int(rng.integers(len(ring) - 1))
        t = 0.0 if i < 2 * n // 3 else float(rng.choice([0.5, 0.25, rng.random()]))
        lon[i], lat[i] = ring[j] + t * (ring[j + 1] - ring[j])
    return shapes, shape, lon, lat


def raw_answers(shapes: np.ndarray, shape: np.ndarray, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    bands = inside.PolygonBands.of(shapes)
    return inside_kernels.locate(np.zeros(shape.size, bool), shape, lon, lat, bands.xmin, bands.xmax, bands.ymin, bands.ymax,
                                 bands.band_height, bands.band_start, bands.band_offsets, bands.band_segments)


def check_against_geos(shapes: list, seed: int) -> np.ndarray:
    shapes, shape, lon, lat = shapes_and_points(seed, shapes)
    want = shapely.contains_xy(shapes[shape], lon, lat)
    assert (inside.PolygonBands.of(shapes).contains([inside.Points(shape, lon, lat, np.zeros(shape.size, bool))]) == want).all()
    answer = raw_answers(shapes, shape, lon, lat)
    sure = answer != inside_kernels.UNSURE
    assert ((answer == inside_kernels.INSIDE) == want)[sure].all(), "the compiled test answered a point wrongly"
    return answer


@settings(max_examples=60, deadline=None)
@given(st.floats(-170, 170), st.floats(-70, 70), st.floats(0.0005, 0.05), st.integers(3, 300), st.integers(0, 2**31))
def test_compiled_test_is_geos_on_random_polygons(lon, lat, radius, vertices, seed):
    answer = check_against_geos([blob(lon, lat, radius, vertices, seed), blob(lon + radius, lat, radius / 2, 7, seed + 1)], seed)
    anywhere = answer[: answer.size // 3]
    assert (anywhere != inside_kernels.UNSURE).mean() > 0.99, "the compiled test should settle points off the edges itself"
    vertices_asked = answer[answer.size // 3: 2 * answer.size // 3]
    assert (vertices_asked == inside_kernels.UNSURE).all(), "a point on a vertex is on the boundary: GEOS decides it"


def test_holes_multipolygons_and_axis_edges():
    square_with_hole = shapely.Polygon([(0, 0), (4, 0), (4, 4), (0, 4)], [[(1, 1), (2, 1), (2, 2), (1, 2)]])
    two_squares = shapely.MultiPolygon([shapely.box(10, 0, 11, 1), shapely.box(12, 0, 13, 1)])
    comb = shapely.Polygon([(0, 10), (9, 10), (9, 11)] + [(x, 11 + (x % 2)) for x in range(8, -1, -1)])
    check_against_geos([square_with_hole, two_squares, comb], seed=3)
    shapes = np.array([square_with_hole, two_squares], dtype=object)
    xs = np.array([0.5, 1.5, 3.0, 2.0, 4.0, 10.5, 11.5, 12.5, 1.0])  # inside, in the hole, inside, on the hole's edge,
    ys = np.array([0.5, 1.5, 3.0, 1.5, 2.0, 0.5, 0.5, 0.5, 1.0])  # on the outer edge, part 1, the gap, part 2, a hole vertex
    which = np.array([0, 0, 0, 0, 0, 1, 1, 1, 0])
    got = inside.PolygonBands.of(shapes).contains([inside.Points(which, xs, ys, np.zeros(which.size, bool))])
    assert got.tolist() == [True, False, True, False, False, True, False, True, False]


def test_many_points_take_the_compiled_path_and_agree(monkeypatch):
    shapes, shape, lon, lat = shapes_and_points(7, [blob(121.4 + i * 0.01, 31.2, 0.004, 40, i) for i in range(20)], n=30_000)
    want = shapely.contains_xy(shapes[shape], lon, lat)
    known = np.zeros(shape.size, bool)
    known[::5] = want[::5]  # as an interior cell would vouch for some: those stay inside untested
    runs = [inside.Points(shape[at], lon[at], lat[at], known[at]) for at in np.array_split(np.arange(shape.size), 7)]
    monkeypatch.setattr(inside, "COMPILED_FROM", 0)
    assert (inside.contains_each(shapes, runs) == want).all()
    monkeypatch.setattr(inside, "COMPILED_FROM", 10**9)
    assert (inside.contains_each(shapes, runs) == want).all()
