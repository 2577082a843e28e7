"""Metric distances on the sphere, and how far an H3 grid disk is guaranteed to reach.

Distances are great-circle metres on the sphere H3 itself uses (mean Earth radius). Nearest
neighbour searches compare *chords* between unit vectors instead: the chord grows with the
great-circle distance, costs a few multiplications instead of trigonometry, and keeps full
precision at centimetre scale (unlike ``1 - dot``).
"""

from __future__ import annotations

import numpy as np
import shapely

from citylake.h3_index.cells import cells_to_latlng, cells_to_polygons, check_cells
from citylake.h3_index.errors import BadCoordinate

EARTH_RADIUS_M = 6_371_007.180918475  # H3's authalic Earth radius, so cell sizes and distances agree


def haversine_m(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    """Great-circle distance in metres between paired points (degrees)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def unit_vectors(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """(n, 3) unit vectors of points given in degrees."""
    lat, lon = np.radians(np.asarray(lat, np.float64)), np.radians(np.asarray(lon, np.float64))
    if lat.shape != lon.shape:
        raise BadCoordinate(f"{lat.size} latitudes but {lon.size} longitudes", "pass one latitude per longitude")
    cos_lat = np.cos(lat)
    return np.stack([cos_lat * np.cos(lon), cos_lat * np.sin(lon), np.sin(lat)], axis=1)


def chord_to_m(chord: np.ndarray | float) -> np.ndarray:
    """Great-circle metres for a chord between unit vectors."""
    return 2 * EARTH_RADIUS_M * np.arcsin(np.clip(np.asarray(chord) / 2, 0.0, 1.0))


def m_to_chord(metres: np.ndarray | float) -> np.ndarray:
    return 2 * np.sin(np.minimum(np.asarray(metres, np.float64), np.pi * EARTH_RADIUS_M) / (2 * EARTH_RADIUS_M))


# Margin on measured cell sizes: neighbouring H3 cells differ in size by far less than this.
CELL_SIZE_MARGIN = 0.05


def disk_clearance_m(cells: np.ndarray, d: int) -> np.ndarray:
    """For each cell, a lower bound on the distance from any point in it to any point outside its grid
    disk of radius ``d``: every object closer than this lies in a cell of the disk.

    In a hexagonal grid with inradius r and circumradius R, the cells beyond the disk have centres at
    least sqrt(3)·(d+1)·r from the middle cell's centre; each point is within R of its own cell's centre,
    hence sqrt(3)·(d+1)·r − 2R. r and R are measured on each cell, with a margin for the slow change
    of H3 cell sizes across the disk.
    """
    inradius, circumradius = cell_radii_m(cells)
    if d < 1:
        return np.zeros(inradius.size)
    bound = np.sqrt(3) * (d + 1) * inradius * (1 - CELL_SIZE_MARGIN) - 2 * circumradius * (1 + CELL_SIZE_MARGIN)
    return np.maximum(bound, 0.0)


def cell_radii_m(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(inradius, circumradius) in metres of each cell.

    The inradius is taken at the edge midpoints, which is exact for regular hexagons and within a
    fraction of a percent for H3's; ``CELL_SIZE_MARGIN`` covers the rest.
    """
    cells = check_cells(cells)
    lat, lon = cells_to_latlng(cells)
    coords, owner = shapely.get_coordinates(cells_to_polygons(cells), return_index=True)
    closing = np.r_[owner[1:] != owner[:-1], True]  # each ring repeats its first vertex last
    vertices, owner = coords[~closing], owner[~closing]
    nxt = np.r_[np.arange(1, owner.size), 0]
    first = np.r_[0, np.flatnonzero(owner[1:] != owner[:-1]) + 1]
    nxt[np.r_[first[1:] - 1, owner.size - 1]] = first  # each ring's last vertex pairs with its first
    mids = (vertices + vertices[nxt]) / 2
    to_vertex = haversine_m(lat[owner], lon[owner], vertices[:, 1], vertices[:, 0])
    to_edge = haversine_m(lat[owner], lon[owner], mids[:, 1], mids[:, 0])
    circumradius = np.zeros(cells.size)
    inradius = np.full(cells.size, np.inf)
    np.maximum.at(circumradius, owner, to_vertex)
    np.minimum.at(inradius, owner, to_edge)
    return inradius, circumradius


def distances_to_shapes_m(shapes: np.ndarray, owner: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Metres from point ``i`` to ``shapes[owner[i]]`` (lon/lat; 0 inside a polygon), on the sphere.

    Each shape and its points are projected to a spherical azimuthal equidistant plane centred on the shape (H3's
    radius): exact for distances from the centre and within a few millionths elsewhere at city scale (tens of km).
    One vectorised pass for every shape and point, not a projection object per shape.
    """
    centres = shapely.centroid(shapes)
    clat, clon = np.nan_to_num(shapely.get_y(centres)), np.nan_to_num(shapely.get_x(centres))  # an empty shape has none
    _, vertex_owner = shapely.get_coordinates(shapes, return_index=True)
    local = shapely.transform(shapes, lambda xy: np.column_stack(
        _aeqd_m(clat[vertex_owner], clon[vertex_owner], xy[:, 1], xy[:, 0])))
    x, y = _aeqd_m(clat[owner], clon[owner], np.asarray(lat, np.float64), np.asarray(lon, np.float64))
    return shapely.distance(local[owner], shapely.points(x, y))


def _aeqd_m(lat0: np.ndarray, lon0: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spherical azimuthal equidistant (x, y) in metres of points about centres (all in degrees)."""
    p0, p, dl = np.radians(lat0), np.radians(lat), np.radians(lon - lon0)
    sin_p0, cos_p0, sin_p, cos_p, cos_dl = np.sin(p0), np.cos(p0), np.sin(p), np.cos(p), np.cos(dl)
    east = cos_p * np.sin(dl)
    north = cos_p0 * sin_p - sin_p0 * cos_p * cos_dl
    sin_c = np.hypot(east, north)
    c = np.arctan2(sin_c, sin_p0 * sin_p + cos_p0 * cos_p * cos_dl)  # the arc to the centre
    scale = EARTH_RADIUS_M * np.divide(c, sin_c, out=np.ones_like(c), where=sin_c > 0)  # metres of arc per unit of sine
    return scale * east, scale * north
