"""Cover polygons with H3 cells, each flagged interior or boundary.

A point in an *interior* cell lies inside the polygon with no geometry test; only points
in *boundary* cells need an exact point-in-polygon test. That is what turns point-in-place
joins into equi-joins.

Shapely decides the flag, so the cover agrees with the exact test used on boundary cells:
one notion of "inside" everywhere (planar lon/lat, as GeoJSON and shapely mean it).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import shapely
from h3ronpy import ContainmentMode, vector
from shapely.geometry.base import BaseGeometry

from citylake.h3_index.cells import cells_to_polygons, check_resolution, grid_disk
from citylake.h3_index.errors import BadGeometry

# H3 cell edges are straight in the gnomonic projection, shapely's in lon/lat; at
# resolution 7 and finer they differ by under a millimetre. Interior cells must clear the
# polygon's edge by this margin (about 1 cm) so the difference can never misplace a point.
EDGE_MARGIN_DEG = 1e-7


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
    cells = _candidate_cells(geom, res)
    shapes = cells_to_polygons(cells)
    inner = geom.buffer(-EDGE_MARGIN_DEG)
    shapely.prepare(inner)
    interior = shapely.contains(inner, shapes)
    cells, interior = _add_near_misses(geom, res, cells, interior)
    order = np.argsort(cells)
    return cells[order], interior[order]


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
