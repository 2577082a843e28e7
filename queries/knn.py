"""Exact k-nearest-neighbour search on the sphere with an H3 grid-disk expansion.

Targets are binned by H3 cell at a resolution chosen from their density. Each query point looks
at the targets in its cell's grid disk of radius d; its k best are final once the k-th lies within
the disk's clearance (``h3_index.distance.disk_clearance_m``), because anything nearer must lie in
the disk. Queries that are not final look again with radius 2, then with ever coarser cells; any
left after resolution 0 are compared with every target. Queries sharing a cell share their candidate list, and distances
are chords between unit vectors, so the work is gathers, multiplications and a partial sort.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl

from h3_index import latlng_to_cells
from h3_index.cells import cell_resolutions, cells_to_latlng, grid_disk_flat, parent_bits
from h3_index.distance import CELL_SIZE_MARGIN, cell_radii_m, chord_to_m, disk_clearance_m, m_to_chord, unit_vectors
from queries.errors import BadFilter

CHUNK_CELLS = 50_000  # fine query cells per block: bounds memory at block × candidates × 24 bytes
QUERY_CELL_STEPS = 2  # queries are grouped by cells this many resolutions finer than the targets'
THREADS = max(1, min(4, os.cpu_count() or 1))
NEIGHBOURS_SCHEMA = {"query": pl.Int64, "target": pl.Int64, "rank": pl.Int32, "distance_m": pl.Float64}


def nearest(
    query_lat: np.ndarray, query_lon: np.ndarray, target_lat: np.ndarray, target_lon: np.ndarray, k: int, *,
    res: int | None = None,
) -> pl.DataFrame:
    """The ``k`` nearest targets of every query point: ``query``, ``target`` (row positions), ``rank`` (1 = nearest)
    and ``distance_m`` (great-circle metres). Exact: the same as comparing every pair."""
    if k < 1:
        raise BadFilter("k", k, "ask for at least one neighbour")
    query_lat, query_lon = np.asarray(query_lat, np.float64), np.asarray(query_lon, np.float64)
    target_lat, target_lon = np.asarray(target_lat, np.float64), np.asarray(target_lon, np.float64)
    if query_lat.size == 0 or target_lat.size == 0:
        return pl.DataFrame(schema=NEIGHBOURS_SCHEMA)
    k = min(k, target_lat.size)
    res = resolution_for(target_lat, target_lon, k) if res is None else res
    targets = _Targets(target_lat, target_lon, res)
    queries = _Queries(query_lat, query_lon, min(15, res + QUERY_CELL_STEPS))
    found = _Found(query_lat.size, k)
    pending = queries.by_cell  # query positions, grouped by their fine cell
    for level, radius in _worth_trying(_passes(res), targets, queries, pending, k, found):
        if not pending.size:
            break
        done = _search(targets, queries, pending, k, level, radius, found)
        pending = pending[~done]
    if pending.size:
        _brute_force(targets, queries.xyz, pending, k, found)
    return found.frame(targets.order)


def resolution_for(lat: np.ndarray, lon: np.ndarray, k: int) -> int:
    """The finest resolution at which occupied cells hold about ``k`` / 2 targets on average (at least two),
    so a radius-1 disk (7 cells) usually holds the k nearest."""
    cells = latlng_to_cells(lat, lon, 15)
    want = max(2.0, k / 2)
    for res in range(15, -1, -1):
        if lat.size / np.unique(parent_bits(cells, res)).size >= want:
            return res
    return 0


SAMPLE_EVERY = 100  # queries sampled to see whether the first pass is worth running on all of them
WORTH_IT = 0.5  # run the first pass on all queries only if it settles at least this share of the sample


def _worth_trying(passes: list[tuple[int, int]], targets: _Targets, queries: _Queries, pending: np.ndarray, k: int,
                  found: _Found) -> list[tuple[int, int]]:
    """Skip the radius-1 pass when a sample shows it would settle few queries (sparse targets): it would cost a
    shortlist per cell and settle little. The answer is the same either way; only the work differs."""
    if pending.size < 100 * SAMPLE_EVERY:
        return passes
    sample = pending[::SAMPLE_EVERY]  # still grouped by cell
    settled = _search(targets, queries, sample, k, *passes[0], found).mean()
    return passes if settled >= WORTH_IT else passes[1:]


def _passes(res: int) -> list[tuple[int, int]]:
    """(resolution, disk radius) of each pass: the targets' own cells at radius 1 and 2, then ever coarser cells
    at radius 2 (each about 2.6 times wider), so queries far from every target are found in a few passes."""
    return [(res, 1), (res, 2), *((level, 2) for level in range(res - 1, -1, -1))]


class _Targets:
    """Targets sorted by cell, with the start and length of each cell's run."""

    def __init__(self, lat: np.ndarray, lon: np.ndarray, res: int) -> None:
        cells = latlng_to_cells(lat, lon, res)
        self.res = res
        self.order = np.argsort(cells, kind="stable")
        self.xyz = tuple(np.ascontiguousarray(column) for column in unit_vectors(lat, lon)[self.order].T)  # x, y, z columns
        self.sorted_cells = cells[self.order]  # parents of sorted cells are sorted too: each level is runs of this order
        self.levels: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    @property
    def size(self) -> int:
        return self.order.size

    def level(self, res: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Distinct cells at ``res`` (coarser or equal to the targets' own), and the start and length of each one's run."""
        if res not in self.levels:
            self.levels[res] = np.unique(parent_bits(self.sorted_cells, res), return_index=True, return_counts=True)
        return self.levels[res]

    def candidates(self, query_cells: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
        """For each query cell, the sorted positions of targets in its grid disk, as a padded matrix (-1 = none),
        and how many each has. Targets are binned at the query cells' resolution."""
        cells, starts, counts = self.level(int(cell_resolutions(query_cells[:1])[0]))
        disk, owner = grid_disk_flat(query_cells, radius)
        at = np.clip(np.searchsorted(cells, disk), 0, cells.size - 1)
        hit = cells[at] == disk
        at, owner = at[hit], owner[hit]
        counts = counts[at]
        per_query_cell = np.bincount(owner, weights=counts, minlength=query_cells.size).astype(np.int64)
        matrix = np.full((query_cells.size, max(1, int(per_query_cell.max(initial=0)))), -1, np.int64)
        rows = np.repeat(owner, counts)
        run_offset = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
        column = np.arange(rows.size) - (np.cumsum(per_query_cell) - per_query_cell)[rows]
        matrix[rows, column] = np.repeat(starts[at], counts) + run_offset
        return matrix, per_query_cell


class _Queries:
    """Query points with their cell at a finer resolution than the targets' (``QUERY_CELL_STEPS`` finer)."""

    def __init__(self, lat: np.ndarray, lon: np.ndarray, res: int) -> None:
        self.xyz = unit_vectors(lat, lon)
        self.cells = latlng_to_cells(lat, lon, res)
        self.by_cell = np.argsort(self.cells, kind="stable")


class _Found:
    """The k nearest of each query as they are found: sorted target positions and chords, one row per query."""

    def __init__(self, queries: int, k: int) -> None:
        self.target = np.full((queries, k), -1, np.int64)
        self.chord = np.full((queries, k), np.inf)

    def put(self, queries: np.ndarray, best: np.ndarray, best_chord: np.ndarray) -> None:
        self.target[queries], self.chord[queries] = best, best_chord

    def frame(self, order: np.ndarray) -> pl.DataFrame:
        queries, k = self.target.shape
        return pl.DataFrame({"query": np.repeat(np.arange(queries, dtype=np.int64), k), "target": order[self.target.reshape(-1)],
                             "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), queries),
                             "distance_m": chord_to_m(self.chord.reshape(-1))}, schema=NEIGHBOURS_SCHEMA)


def _search(targets: _Targets, queries: _Queries, pending: np.ndarray, k: int, level: int, radius: int, found: _Found) -> np.ndarray:
    """One pass at one disk radius over the pending queries (grouped by fine cell): records the final ones, says which."""
    bounds = np.flatnonzero(np.r_[True, queries.cells[pending[1:]] != queries.cells[pending[:-1]]])
    blocks = [(bounds[i], bounds[i + CHUNK_CELLS] if i + CHUNK_CELLS < bounds.size else pending.size, bounds[i : i + CHUNK_CELLS])
              for i in range(0, bounds.size, CHUNK_CELLS)]

    def one(block: tuple[int, int, np.ndarray]) -> np.ndarray:
        lo, hi, starts = block
        block_queries = pending[lo:hi]
        shortlist, width, final = _shortlist(targets, queries.cells[pending[starts]], k, level, radius)
        which = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, hi]))
        done = final[which]
        chosen, cell_rows = block_queries[done], which[done]
        # rows padded to the next multiple of 4 (powers of two beyond 32): a few wide cells do not widen every row
        need = np.maximum(width[cell_rows], k)
        span = np.where(need <= 32, -(-need // 4) * 4, 1 << np.ceil(np.log2(need)).astype(np.int64))
        for w in np.unique(span):
            pick = span == w
            candidate = shortlist[cell_rows[pick], :w]
            best, best_chord = _k_smallest(candidate, _chords(queries.xyz[chosen[pick]], targets.xyz, candidate), k)
            found.put(chosen[pick], best, best_chord)
        return done

    if THREADS == 1 or len(blocks) == 1:
        parts = list(map(one, blocks))
    else:
        with ThreadPoolExecutor(THREADS) as pool:
            parts = list(pool.map(one, blocks))
    return np.concatenate(parts)


def _shortlist(targets: _Targets, fine_cells: np.ndarray, k: int, level: int, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each fine query cell: the targets that can be among the k nearest of any point in it (padded matrix),
    how many there are, and whether that list is final at this radius.

    With the cell's centre c and circumradius ρ (as chords, which obey the triangle inequality), a target t is
    within [|ct| − ρ, |ct| + ρ] of every point of the cell. The k-th smallest upper bound u caps every point's
    k-th neighbour, so targets whose lower bound exceeds u can go; and if u is within the disk's clearance,
    nothing outside the disk can come nearer.
    """
    coarse, which = np.unique(parent_bits(fine_cells, level), return_inverse=True)
    matrix, available = targets.candidates(coarse, radius)
    clearance = m_to_chord(disk_clearance_m(coarse, radius))[which]
    lat, lon = cells_to_latlng(fine_cells)
    rho = m_to_chord(cell_radii_m(fine_cells)[1] * (1 + CELL_SIZE_MARGIN))
    candidate = matrix[which]
    chord = _chords(unit_vectors(lat, lon), targets.xyz, candidate)
    kk = min(k, chord.shape[1])
    upper = np.partition(chord, kk - 1, axis=1)[:, kk - 1] + rho if kk == k else np.full(fine_cells.size, np.inf)
    keep = chord - rho[:, None] <= upper[:, None]
    final = (upper <= clearance) | (available[which] >= targets.size)
    width = keep.sum(axis=1)
    order = np.argsort(~keep, axis=1, kind="stable")[:, : max(k, int(width.max(initial=0)))]
    shortlist = np.where(np.take_along_axis(keep, order, 1), np.take_along_axis(candidate, order, 1), -1)
    return shortlist, width, final


def _chords(query_xyz: np.ndarray, target_xyz: tuple[np.ndarray, ...], candidate: np.ndarray) -> np.ndarray:
    """Chord length between each query and each of its candidates (inf where there is none)."""
    chord2 = np.zeros(candidate.shape)
    for axis in range(3):  # one contiguous column at a time: cheaper gathers than whole rows
        diff = target_xyz[axis][candidate]
        diff -= query_xyz[:, axis : axis + 1]
        chord2 += diff * diff
    chord2[candidate < 0] = np.inf
    return np.sqrt(chord2)


def _k_smallest(candidate: np.ndarray, chord: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest candidates of each row, nearest first (equal distances in a fixed order)."""
    if chord.shape[1] < k:  # fewer candidates than k: pad, these rows are not final anyway
        pad = k - chord.shape[1]
        candidate = np.pad(candidate, ((0, 0), (0, pad)), constant_values=-1)
        chord = np.pad(chord, ((0, 0), (0, pad)), constant_values=np.inf)
    if chord.shape[1] > k:
        part = np.argpartition(chord, k - 1, axis=1)[:, :k]
        candidate, chord = np.take_along_axis(candidate, part, 1), np.take_along_axis(chord, part, 1)
    order = np.lexsort((candidate, chord), axis=1)
    return np.take_along_axis(candidate, order, 1), np.take_along_axis(chord, order, 1)


def _brute_force(targets: _Targets, query_xyz: np.ndarray, pending: np.ndarray, k: int, found: _Found) -> None:
    """Queries far from every target: compare with all of them, a block at a time."""
    every = np.arange(targets.size)
    block = max(1, 20_000_000 // max(1, targets.size))
    for i in range(0, pending.size, block):
        queries = pending[i : i + block]
        candidate = np.broadcast_to(every, (queries.size, targets.size))
        best, best_chord = _k_smallest(candidate, _chords(query_xyz[queries], targets.xyz, candidate), k)
        found.put(queries, best, best_chord)

