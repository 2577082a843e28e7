"""Compiled point-in-polygon (numba): crossings of a ray to the east with each polygon's edges, found through bands
of the polygon's height so a point meets only the few edges near its latitude.

Exact where it answers. Whether an edge crosses the ray to the east of the point is the sign of one orientation
determinant; that sign is trusted only when the determinant clears Shewchuk's forward error bound for the computed
expression (``ORIENT_ERROR``), which makes it the sign of the exact determinant. A point whose sign is in doubt —
on an edge or at a vertex, or within rounding of one — is answered ``UNSURE`` and left to GEOS, which decides those
exactly too. The ray rule (an edge counts when exactly one end lies above the point, as in GEOS's ray-crossing
counter) and the parity over every ring of every part are GEOS's own, so where this answers it is GEOS's answer.

Compiled on first use and cached beside this file; ``nogil`` so blocks of points run on threads (the tables are only read).
Lists are flat with offsets (CSR): list ``i`` is ``values[offsets[i]:offsets[i + 1]]``.

numba caches the compiled code beside this file and pickles this module's import name into it; the cache is
rebuilt when this file changes, so the name (citylake.queries.inside_kernels) is written here to make a rename touch the file.
"""

from __future__ import annotations

import math

import numba
import numpy as np

OUTSIDE, INSIDE, UNSURE = 0, 1, 2
EPSILON = 2.0**-53  # half a unit in the last place of a double
ORIENT_ERROR = (3.0 + 16.0 * EPSILON) * EPSILON  # Shewchuk's ccwerrboundA: |error| <= this * (|left| + |right|)


@numba.njit(nogil=True, cache=True)
def band_lists(shape_of_edge: np.ndarray, ey1: np.ndarray, ey2: np.ndarray, shape_ymin: np.ndarray, band_height: np.ndarray,
               band_start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The edges meeting each band (a band is a slice of one shape's height; shape ``s`` has bands
    ``band_start[s]`` to ``band_start[s + 1]``), as (offsets, edges)."""
    bands = band_start[-1]
    counts = np.zeros(bands + 1, np.int64)
    for e in range(shape_of_edge.size):
        first, last = _band_span(shape_of_edge[e], ey1[e], ey2[e], shape_ymin, band_height, band_start)
        for b in range(first, last + 1):
            counts[b + 1] += 1
    offsets = np.cumsum(counts)
    filled = offsets[:-1].copy()
    edges = np.empty(offsets[-1], np.int64)
    for e in range(shape_of_edge.size):
        first, last = _band_span(shape_of_edge[e], ey1[e], ey2[e], shape_ymin, band_height, band_start)
        for b in range(first, last + 1):
            edges[filled[b]] = e
            filled[b] += 1
    return offsets, edges


@numba.njit(nogil=True, cache=True, inline="always")
def _band_of(s: int, y: float, shape_ymin: np.ndarray, band_height: np.ndarray, band_start: np.ndarray) -> int:
    bands = band_start[s + 1] - band_start[s]
    b = int(math.floor((y - shape_ymin[s]) / band_height[s]))
    return band_start[s] + min(max(b, 0), bands - 1)


@numba.njit(nogil=True, cache=True, inline="always")
def _band_span(s: int, y1: float, y2: float, shape_ymin: np.ndarray, band_height: np.ndarray,
               band_start: np.ndarray) -> tuple[int, int]:
    # Rounded subtraction, division and floor never decrease as y grows, so every y between the edge's ends falls
    # in a band between the bands of its ends: a point meets every edge at its latitude in its own band.
    return (_band_of(s, min(y1, y2), shape_ymin, band_height, band_start),
            _band_of(s, max(y1, y2), shape_ymin, band_height, band_start))


@numba.njit(nogil=True, cache=True)
def locate(known: np.ndarray, shape: np.ndarray, px: np.ndarray, py: np.ndarray, shape_xmin: np.ndarray, shape_xmax: np.ndarray,
           shape_ymin: np.ndarray, shape_ymax: np.ndarray, band_height: np.ndarray, band_start: np.ndarray,
           band_offsets: np.ndarray, band_segments: np.ndarray) -> np.ndarray:
    """For each point ``(px[i], py[i])``: OUTSIDE, INSIDE or UNSURE of polygon ``shape[i]``; INSIDE without a test where
    ``known[i]`` (a ping in an interior cell). ``band_segments`` holds each band's edges as rows of (x1, y1, x2, y2),
    a band's rows together, so a point reads one run of memory."""
    answer = np.empty(px.size, np.int8)
    for i in range(px.size):
        s, x, y = shape[i], px[i], py[i]
        if known[i]:
            answer[i] = INSIDE
            continue
        if y < shape_ymin[s] or y > shape_ymax[s] or x < shape_xmin[s] or x > shape_xmax[s]:  # outside its box
            answer[i] = OUTSIDE
            continue
        b = _band_of(s, y, shape_ymin, band_height, band_start)
        crossings, unsure = 0, False
        for j in range(band_offsets[b], band_offsets[b + 1]):  # without branches: a band's edges are few and unpredictable
            x1, y1, x2, y2 = band_segments[j, 0], band_segments[j, 1], band_segments[j, 2], band_segments[j, 3]
            straddles = (y1 > y) != (y2 > y)  # one end above the point, one not: the edge meets the point's latitude
            east = x < min(x1, x2)  # wholly east of the point
            beside = (min(x1, x2) <= x) & (x <= max(x1, x2)) & (min(y1, y2) <= y) & (y <= max(y1, y2))
            left, right = (x1 - x) * (y2 - y), (y1 - y) * (x2 - x)
            det = left - right  # > 0 when the point is left of the edge run from end 1 to end 2
            unsure |= beside & (abs(det) <= ORIENT_ERROR * (abs(left) + abs(right)))  # on the edge, or too close to tell
            crossings += straddles & (east | (beside & ((det > 0) == (y2 > y1))))  # the edge meets the ray east of the point
        answer[i] = UNSURE if unsure else (INSIDE if crossings % 2 else OUTSIDE)
    return answer
