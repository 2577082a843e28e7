"""Exact point-in-polygon for many points, each against its own polygon (a ping in a boundary cell against the
place whose cell it is): a compiled ray-crossing test over bands of each polygon's edges (``queries.inside_kernels``)
that hands the few points it cannot settle in doubles — on an edge or within rounding of one — to GEOS.

The answer is GEOS's ``contains`` (a point on the boundary is not inside), point for point; a property test holds
it to shapely on random, on-edge and on-vertex points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import shapely

from citylake.h3_index.polygons import is_polygonal
from citylake.h3_index.threads import thread_map, thread_spans, threads

BAND_EDGES = 2  # edges per band on average: a point meets a handful of edges whatever its polygon's size
COMPILED_FROM = 200_000  # points; fewer go straight to GEOS (loading the compiled test costs more than it saves)


@dataclass(frozen=True)
class PolygonBands:
    """The edges of polygons by number, listed per horizontal band of each polygon's height."""

    shapes: np.ndarray  # shapely geometries by number (only polygonal ones have edges)
    xmin: np.ndarray
    xmax: np.ndarray
    ymin: np.ndarray
    ymax: np.ndarray
    band_height: np.ndarray
    band_start: np.ndarray  # polygon s has bands band_start[s] .. band_start[s + 1] - 1
    band_offsets: np.ndarray
    band_segments: np.ndarray  # rows of (x1, y1, x2, y2): band b's edges are rows band_offsets[b] .. band_offsets[b + 1] - 1

    @classmethod
    def of(cls, shapes: np.ndarray) -> PolygonBands:
        """Bands of ``shapes``' polygons and multipolygons, holes included; other geometries (points, lines) have no
        inside and get no edges."""
        kernels = _kernels()
        parts, shape_of_part = shapely.get_parts(np.where(is_polygonal(shapes), shapes, None), return_index=True)
        rings, part_of_ring = shapely.get_rings(parts, return_index=True)
        points, ring_of_point = shapely.get_coordinates(rings, return_index=True)
        first = np.flatnonzero(ring_of_point[1:] == ring_of_point[:-1])  # rings are closed: point i to i + 1 is an edge
        edges = tuple(np.ascontiguousarray(points[at, axis]) for at, axis in ((first, 0), (first, 1), (first + 1, 0), (first + 1, 1)))
        shape_of_edge = shape_of_part[part_of_ring[ring_of_point[first]]]
        bands = np.maximum(1, np.bincount(shape_of_edge, minlength=len(shapes)) // BAND_EDGES)
        bounds = shapely.bounds(shapes)
        xmin, ymin, xmax, ymax = (bounds[:, axis].copy() for axis in range(4))
        height = (ymax - ymin) / bands
        band_height = np.where(height > 0, height, 1.0)  # a shape of no height (or none) has one band
        band_start = np.concatenate([[0], np.cumsum(bands)]).astype(np.int64)
        offsets, band_edges = kernels.band_lists(shape_of_edge, edges[1], edges[3], ymin, band_height, band_start)
        segments = np.ascontiguousarray(np.column_stack(edges)[band_edges])  # an edge copied into each band it meets
        return cls(shapes, xmin, xmax, ymin, ymax, band_height, band_start, offsets, segments)

    def contains(self, points: list[Points]) -> np.ndarray:
        """Whether each point lies inside its polygon (GEOS's ``contains``: not on its boundary), runs in order."""
        kernels = _kernels()
        runs = points if len(points) >= threads() else [piece for run in points for piece in _split(run)]
        answers = thread_map(lambda run: kernels.locate(run.known, run.shape, run.lon, run.lat, self.xmin, self.xmax, self.ymin,
                                                        self.ymax, self.band_height, self.band_start, self.band_offsets,
                                                        self.band_segments), runs)
        for run, answer in zip(runs, answers):
            unsure = np.flatnonzero(answer == kernels.UNSURE)  # few: on an edge, or within rounding of one
            answer[unsure] = np.where(shapely.contains_xy(self.shapes[run.shape[unsure]], run.lon[unsure], run.lat[unsure]),
                                      kernels.INSIDE, kernels.OUTSIDE)
        return np.concatenate(answers) == kernels.INSIDE if answers else np.zeros(0, bool)


class Points(NamedTuple):
    """A run of points, each with the number of the polygon to test it against; ``known`` ones are inside untested."""

    shape: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    known: np.ndarray


def contains_each(shapes: np.ndarray, points: list[Points]) -> np.ndarray:
    """Whether each point lies inside its polygon ``shapes[shape]`` (inside untested where ``known``), the runs in
    order: GEOS for a few points to test, the compiled test for many. Runs let columns of many chunks (a Polars
    frame's) be read where they lie, without copying them into one."""
    if sum(run.known.size - np.count_nonzero(run.known) for run in points) >= COMPILED_FROM:
        return PolygonBands.of(shapes).contains(points)
    shape, lon, lat, known = (np.concatenate(column) for column in zip(*points)) if points else (np.zeros(0),) * 4
    inside = known.astype(bool, copy=True)
    test = np.flatnonzero(~inside)
    inside[test] = _geos_contains(shapes, shape[test], lon[test], lat[test])
    return inside


def _split(run: Points) -> list[Points]:
    return [Points(*(column[start:stop] for column in run)) for start, stop in thread_spans(run.shape.size)]


def _geos_contains(shapes: np.ndarray, shape: np.ndarray, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    inside = np.zeros(shape.size, bool)
    shapely.prepare(shapes[np.unique(shape)])  # the polygons tested here, once each (GEOS's indexed locator)

    def test(rows: np.ndarray) -> None:
        inside[rows] = shapely.contains_xy(shapes[shape[rows]], lon[rows], lat[rows])

    # Threads share no polygon: GEOS builds a prepared polygon's index on first use, unguarded, so two threads
    # testing one polygon can corrupt memory. Polygons are dealt to threads by number.
    thread_map(test, [np.flatnonzero(shape % threads() == part) for part in range(threads())])
    return inside


def _kernels():
    """The compiled loops, imported on first use (numba takes most of a second to load)."""
    from citylake.queries import inside_kernels

    return inside_kernels
