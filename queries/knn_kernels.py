"""Compiled inner loops of the k-nearest search (numba): each fine query cell walks its disk's targets to find
its shortlist, and each query walks its cell's shortlist keeping its k best in place, instead of materialising
padded cells × candidates and queries × candidates matrices of chords and partial-sorting them.

Compiled on first use and cached beside this file (``cache=True``); ``nogil`` so ``queries.knn`` runs blocks
of cells on threads. Distances are chords between unit vectors, summed in the same order as NumPy would.
Lists are flat with offsets (CSR): list ``i`` is ``values[offsets[i]:offsets[i + 1]]``.

numba caches the compiled code beside this file and pickles this module's import name into it; the cache is
rebuilt when this file changes, so the name (citylake.queries.knn_kernels) is written here to make a rename touch the file.
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(nogil=True, cache=True, inline="always")
def _chord(tx: np.ndarray, ty: np.ndarray, tz: np.ndarray, t: int, x: float, y: float, z: float) -> float:
    dx, dy, dz = tx[t] - x, ty[t] - y, tz[t] - z
    return math.sqrt(dx * dx + dy * dy + dz * dz)


@numba.njit(nogil=True, cache=True)
def shortlists(cx: np.ndarray, cy: np.ndarray, cz: np.ndarray, rho: np.ndarray, disk_of: np.ndarray, run_offsets: np.ndarray,
               run_start: np.ndarray, run_length: np.ndarray, tx: np.ndarray, ty: np.ndarray, tz: np.ndarray,
               k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each fine cell (centre ``c``, circumradius ``rho`` as chords) whose grid disk is ``disk_of[f]``, a disk being
    runs of consecutive target positions: the k-th smallest upper bound ``u`` (k-th chord from the centre + rho; inf
    with fewer than k targets), and the targets whose lower bound (chord − rho) is within ``u``, as (offsets, targets)."""
    cells = cx.size
    upper = np.full(cells, np.inf)
    width = np.zeros(cells + 1, np.int64)
    best = np.empty(k)
    for f in range(cells):
        best[:] = np.inf
        d_runs = disk_of[f]
        for r in range(run_offsets[d_runs], run_offsets[d_runs + 1]):
            for t in range(run_start[r], run_start[r] + run_length[r]):
                d = _chord(tx, ty, tz, t, cx[f], cy[f], cz[f])
                if d < best[k - 1]:
                    m = k - 1
                    while m > 0 and d < best[m - 1]:
                        best[m] = best[m - 1]
                        m -= 1
                    best[m] = d
        upper[f] = best[k - 1] + rho[f]
        for r in range(run_offsets[d_runs], run_offsets[d_runs + 1]):
            for t in range(run_start[r], run_start[r] + run_length[r]):
                width[f + 1] += _chord(tx, ty, tz, t, cx[f], cy[f], cz[f]) - rho[f] <= upper[f]
    offsets = np.cumsum(width)
    kept = np.empty(offsets[-1], np.int64)
    for f in range(cells):
        at = offsets[f]
        d_runs = disk_of[f]
        for r in range(run_offsets[d_runs], run_offsets[d_runs + 1]):
            for t in range(run_start[r], run_start[r] + run_length[r]):
                if _chord(tx, ty, tz, t, cx[f], cy[f], cz[f]) - rho[f] <= upper[f]:
                    kept[at] = t
                    at += 1
    return offsets, kept, upper


@numba.njit(nogil=True, cache=True)
def settle(lat: np.ndarray, lon: np.ndarray, queries: np.ndarray, lists: np.ndarray, offsets: np.ndarray, kept: np.ndarray,
           tx: np.ndarray, ty: np.ndarray, tz: np.ndarray, target: np.ndarray, chord: np.ndarray) -> None:
    """For query ``queries[i]`` (degrees ``lat``/``lon``), its k nearest among shortlist ``lists[i]`` (target positions
    into ``tx``/``ty``/``tz``), nearest first, equal chords by target position; written to row ``queries[i]`` of
    ``target`` and ``chord`` (k columns; -1 and inf where the shortlist is shorter than k)."""
    k = target.shape[1]
    for i in range(queries.size):
        q, row = queries[i], lists[i]
        lat_r, lon_r = math.radians(lat[q]), math.radians(lon[q])
        cos_lat = math.cos(lat_r)
        x, y, z = cos_lat * math.cos(lon_r), cos_lat * math.sin(lon_r), math.sin(lat_r)
        for m in range(k):
            target[q, m], chord[q, m] = -1, np.inf
        for j in range(offsets[row], offsets[row + 1]):
            t = kept[j]
            d = _chord(tx, ty, tz, t, x, y, z)
            if d > chord[q, k - 1] or (d == chord[q, k - 1] and t >= target[q, k - 1] >= 0):
                continue
            m = k - 1
            while m > 0 and (d < chord[q, m - 1] or (d == chord[q, m - 1] and t < target[q, m - 1])):
                target[q, m], chord[q, m] = target[q, m - 1], chord[q, m - 1]
                m -= 1
            target[q, m], chord[q, m] = t, d


@numba.njit(nogil=True, cache=True)
def neighbour_rows(target: np.ndarray, chord: np.ndarray, by_cell: np.ndarray, order: np.ndarray, radius_m: float, start: int,
                   stop: int, query_col: np.ndarray, target_col: np.ndarray, rank_col: np.ndarray, metres_col: np.ndarray) -> None:
    """Rows ``start:stop`` of the flat (query, target, rank, distance_m) columns, k per query in the caller's query
    order: row ``i`` of ``target``/``chord`` belongs to query ``by_cell[i]``; targets map back through ``order``;
    chords become metres. The columns come from NumPy, whose large arrays sit on huge pages: these writes jump."""
    k = target.shape[1]
    for i in range(start, stop):
        q = by_cell[i]
        for m in range(k):
            at = q * k + m
            query_col[at], target_col[at], rank_col[at] = q, order[target[i, m]], m + 1
            metres_col[at] = 2 * radius_m * math.asin(min(max(chord[i, m] / 2, 0.0), 1.0))
