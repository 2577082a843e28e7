"""Cover polygons with H3 cells, each flagged interior or boundary.

A point in an *interior* cell lies inside the polygon with no geometry test; only points
in *boundary* cells need an exact point-in-polygon test. That is what turns point-in-place
joins into equi-joins.

Shapely decides the flag, so the cover agrees with the exact test used on boundary cells:
one notion of "inside" everywhere (planar lon/lat, as GeoJSON and shapely mean it).
"""

from __future__ import annotations

import math

import h3
import numpy as np
import pyarrow as pa
import shapely
from h3ronpy import ContainmentMode, vector
from shapely.geometry.base import BaseGeometry

from citylake.h3_index.cells import cells_to_polygons, check_cell_count, check_resolution, grid_disk
from citylake.h3_index.distance import EARTH_RADIUS_M, haversine_m
from citylake.h3_index.errors import BadGeometry

# H3 cell edges are straight in the gnomonic projection, shapely's in lon/lat; at
# resolution 7 and finer they differ by under a millimetre. Interior cells must clear the
# polygon's edge by this margin (about 1 cm) so the difference can never misplace a point.
EDGE_MARGIN_DEG = 1e-7
# Edges straight in lon/lat are curves on the equal-area map the estimate measures in; points this far apart trace them
# closely enough for an estimate (a 1-degree step errs by well under 1% of the area).
ESTIMATE_STEP_DEG = 1.0


POLYGON_TYPES = (shapely.GeometryType.POLYGON, shapely.GeometryType.MULTIPOLYGON)


def is_polygonal(shapes: np.ndarray) -> np.ndarray:
    """Which of ``shapes`` are polygons or multipolygons (the shapes with an inside); missing shapes are not."""
    return np.isin(shapely.get_type_id(shapes), POLYGON_TYPES)


def polygon_to_cells(geom: BaseGeometry, res: int) -> tuple[np.ndarray, np.ndarray]:
    """Every cell at ``res`` that meets ``geom``, and whether it lies wholly inside.

    Returns ``(cells int64, interior bool)``. Boundary cells (interior False) may hold
    points on either side of the edge and need the exact test.
    """
    res = check_resolution(res)
    if not isinstance(geom, BaseGeometry) or geom.geom_type not in ("Polygon", "MultiPolygon"):
        raise BadGeometry(getattr(geom, "geom_type", type(geom).__name__))
    if geom.is_empty:
        return np.empty(0, np.int64), np.empty(0, bool)
    if not geom.is_valid:
        raise BadGeometry(geom.geom_type, "it is not valid (self-intersecting?); repair it with shapely.make_valid first")
    check_cell_count(estimate_cells(geom, res), f"a cover of this {geom.geom_type} at resolution {res}")
    cells = _candidate_cells(geom, res)
    shapes = cells_to_polygons(cells)
    inner = geom.buffer(-EDGE_MARGIN_DEG)
    shapely.prepare(inner)
    interior = shapely.contains(inner, shapes)
    cells, interior = _add_near_misses(geom, res, cells, interior)
    order = np.argsort(cells)
    return cells[order], interior[order]


def estimate_cells(geom: BaseGeometry, res: int) -> int:
    """About how many cells at ``res`` a cover of ``geom`` holds, found without covering it: its area over the average
    cell area, plus the cells along its outline that stick out (a third of the outline over the average edge length,
    measured on random shapes), or for lines their length over the edge length, and one per point. A world-sized polygon
    is refused on this number at once instead of being covered for minutes."""
    res = check_resolution(res)
    if geom is None or geom.is_empty:
        return 0
    kind = geom.geom_type
    if kind in ("Point", "MultiPoint"):
        return len(shapely.get_parts(geom))
    if kind == "GeometryCollection":
        return sum(estimate_cells(part, res) for part in shapely.get_parts(geom))
    edge = h3.average_hexagon_edge_length(res, unit="m")
    if kind in ("Polygon", "MultiPolygon"):
        outline = _length_m(shapely.get_parts(shapely.boundary(geom)))
        return math.ceil(area_m2(geom) / h3.average_hexagon_area(res, unit="m^2") + outline / (3 * edge))
    return math.ceil(_length_m(shapely.get_parts(geom)) / edge)


def area_m2(geom: BaseGeometry) -> float:
    """Area in square metres of a shape in lon/lat, on H3's sphere: measured on the cylindrical equal-area map
    (x = R·lon, y = R·sin lat), which keeps areas, so a polygon spanning the globe measures the globe."""
    def equal_area(xy: np.ndarray) -> np.ndarray:
        lon, lat = np.radians(xy[:, 0]), np.radians(np.clip(xy[:, 1], -90, 90))
        return np.column_stack([EARTH_RADIUS_M * lon, EARTH_RADIUS_M * np.sin(lat)])

    return float(shapely.area(shapely.transform(shapely.segmentize(geom, ESTIMATE_STEP_DEG), equal_area)))


def _length_m(lines: np.ndarray) -> float:
    """Great-circle length in metres of lines (each one's vertices joined in order)."""
    total = 0.0
    for line in lines:
        xy = shapely.get_coordinates(line)
        total += float(haversine_m(xy[:-1, 1], xy[:-1, 0], xy[1:, 1], xy[1:, 0]).sum()) if len(xy) > 1 else 0.0
    return total


def _candidate_cells(geom: BaseGeometry, res: int) -> np.ndarray:
    found = vector.geometry_to_cells(geom, res, containment_mode=ContainmentMode.IntersectsBoundary)
    return np.unique(pa.array(found).to_numpy(zero_copy_only=False).view(np.int64))


def _add_near_misses(
    geom: BaseGeometry, res: int, cells: np.ndarray, interior: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Add neighbours of boundary cells that touch the polygon within the edge margin.

    The library's own cover uses H3 geometry; this catches cells it left out that shapely's
    lon/lat edges still reach, so no point inside the polygon falls outside the cover.
    """
    boundary = cells[~interior]
    if boundary.size == 0:
        return cells, interior
    ring = np.unique(np.concatenate(grid_disk(boundary, 1)))
    extra = np.setdiff1d(ring, cells, assume_unique=True)
    if extra.size == 0:
        return cells, interior
    outer = geom.buffer(EDGE_MARGIN_DEG)
    shapely.prepare(outer)
    touching = extra[shapely.intersects(outer, cells_to_polygons(extra))]
    return np.concatenate([cells, touching]), np.concatenate([interior, np.zeros(touching.size, bool)])
