"""Exact k-nearest-neighbour search on the sphere with an H3 grid-disk expansion.

Targets are binned by H3 cell at a resolution chosen from their density. Each query point looks
at the targets in its cell's grid disk of radius d; its k best are final once the k-th lies within
the disk's clearance (``h3_index.distance.disk_clearance_m``), because anything nearer must lie in
the disk. Queries that are not final look again with radius 2, then with ever coarser cells; any
left after resolution 0 are compared with every target. Queries sharing a fine cell share one shortlist, queries are
kept in cell order so each cell's are consecutive in memory, and distances are chords between unit vectors; the inner
loops (shortlists, each query's k best, the output rows) are compiled (``queries.knn_kernels``).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from citylake.h3_index import latlng_to_cells
from citylake.h3_index.cells import cell_resolutions, cells_to_latlng, grid_disk_flat, parent_bits
from citylake.h3_index.distance import CELL_SIZE_MARGIN, EARTH_RADIUS_M, cell_radii_m, disk_clearance_m, m_to_chord, unit_vectors
from citylake.h3_index.threads import thread_map, thread_spans, threads
from citylake.queries.errors import BadFilter

CHUNK_CELLS = 50_000  # fine query cells per block at most: bounds the block's shortlists (cells × candidates × 8 bytes)
QUERY_CELL_STEPS = 2  # queries are grouped by cells this many resolutions finer than the targets'
NEIGHBOURS_SCHEMA = {"query": pl.Int64, "target": pl.Int64, "rank": pl.Int32, "distance_m": pl.Float64}
NUMPY_TYPES = {"query": np.int64, "target": np.int64, "rank": np.int32, "distance_m": np.float64}


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
    pending = np.arange(query_lat.size)  # positions in the queries' cell order
    for level, radius in _worth_trying(_passes(res), targets, queries, pending, k, found):
        if not pending.size:
            break
        done = _search(targets, queries, pending, k, level, radius, found)
        pending = pending[~done]
    if pending.size:
        _brute_force(targets, queries, pending, found)
    return found.frame(queries.by_cell, targets.order)


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

    def disks(self, query_cells: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Each query cell's grid disk as runs of sorted target positions (targets binned at the query cells'
        resolution): run offsets per query cell, each run's start and length, and how many targets each disk holds."""
        cells, starts, counts = self.level(int(cell_resolutions(query_cells[:1])[0]))
        disk, owner = grid_disk_flat(query_cells, radius)
        at = np.clip(np.searchsorted(cells, disk), 0, cells.size - 1)
        hit = cells[at] == disk
        at, owner = at[hit], owner[hit]
        run_offsets = np.r_[0, np.cumsum(np.bincount(owner, minlength=query_cells.size))]
        held = np.bincount(owner, weights=counts[at], minlength=query_cells.size).astype(np.int64)
        return run_offsets, starts[at].astype(np.int64), counts[at].astype(np.int64), held


class _Queries:
    """Query points in the order of their cell at a finer resolution than the targets' (``QUERY_CELL_STEPS`` finer),
    so a cell's queries are consecutive in memory; ``by_cell`` maps that order back to the caller's rows."""

    def __init__(self, lat: np.ndarray, lon: np.ndarray, res: int) -> None:
        cells = latlng_to_cells(lat, lon, res)
        self.by_cell = pl.Series(cells).arg_sort().to_numpy()  # parallel; the order within a cell does not matter
        self.cells, self.lat, self.lon = cells[self.by_cell], lat[self.by_cell], lon[self.by_cell]


class _Found:
    """The k nearest of each query as they are found (queries in cell order): sorted target positions and chords."""

    def __init__(self, queries: int, k: int) -> None:
        self.target = np.full((queries, k), -1, np.int64)
        self.chord = np.full((queries, k), np.inf)

    def frame(self, by_cell: np.ndarray, order: np.ndarray) -> pl.DataFrame:
        """One row per query and rank, in the caller's query order, targets as the caller's rows, distances in metres."""
        queries, k = self.target.shape
        columns = [np.empty(queries * k, NUMPY_TYPES[name]) for name in NEIGHBOURS_SCHEMA]

        def rows(span: tuple[int, int]) -> None:
            _kernels().neighbour_rows(self.target, self.chord, by_cell, order, EARTH_RADIUS_M, *span, *columns)

        thread_map(rows, thread_spans(queries))
        return pl.DataFrame(dict(zip(NEIGHBOURS_SCHEMA, columns)), schema=NEIGHBOURS_SCHEMA)


def _search(targets: _Targets, queries: _Queries, pending: np.ndarray, k: int, level: int, radius: int, found: _Found) -> np.ndarray:
    """One pass at one disk radius over the pending queries (grouped by fine cell): records the final ones, says which."""
    bounds = np.flatnonzero(np.r_[True, queries.cells[pending[1:]] != queries.cells[pending[:-1]]])
    step = max(1, min(CHUNK_CELLS, -(-bounds.size // (4 * threads()))))  # a few blocks per thread, so none waits on the last
    blocks = [(bounds[i], bounds[i + step] if i + step < bounds.size else pending.size, bounds[i : i + step])
              for i in range(0, bounds.size, step)]

    def one(block: tuple[int, int, np.ndarray]) -> np.ndarray:
        lo, hi, starts = block
        block_queries = pending[lo:hi]
        offsets, kept, final = _shortlist(targets, queries.cells[pending[starts]], k, level, radius)
        which = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, hi]))
        done = final[which]
        _kernels().settle(queries.lat, queries.lon, block_queries[done], which[done], offsets, kept, *targets.xyz,
                          found.target, found.chord)
        return done

    return np.concatenate(thread_map(one, blocks))


def _shortlist(targets: _Targets, fine_cells: np.ndarray, k: int, level: int, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each fine query cell: the targets that can be among the k nearest of any point in it (offsets and
    target positions), and whether that list is final at this radius.

    With the cell's centre c and circumradius ρ (as chords, which obey the triangle inequality), a target t is
    within [|ct| − ρ, |ct| + ρ] of every point of the cell. The k-th smallest upper bound u caps every point's
    k-th neighbour, so targets whose lower bound exceeds u can go; and if u is within the disk's clearance,
    nothing outside the disk can come nearer.
    """
    coarse, which = np.unique(parent_bits(fine_cells, level), return_inverse=True)
    run_offsets, run_start, run_length, held = targets.disks(coarse, radius)
    clearance = m_to_chord(disk_clearance_m(coarse, radius))[which]
    centre = unit_vectors(*cells_to_latlng(fine_cells))
    rho = m_to_chord(cell_radii_m(fine_cells)[1] * (1 + CELL_SIZE_MARGIN))
    offsets, kept, upper = _kernels().shortlists(*(np.ascontiguousarray(axis) for axis in centre.T), rho, which.astype(np.int64),
                                                 run_offsets, run_start, run_length, *targets.xyz, k)
    final = (upper <= clearance) | (held[which] >= targets.size)
    return offsets, kept, final


def _brute_force(targets: _Targets, queries: _Queries, pending: np.ndarray, found: _Found) -> None:
    """Queries far from every target: compare with all of them (one shortlist of every target)."""
    _kernels().settle(queries.lat, queries.lon, pending, np.zeros(pending.size, np.int64), np.array([0, targets.size]),
                      np.arange(targets.size), *targets.xyz, found.target, found.chord)


def _kernels():
    """The compiled loops, imported on first search (numba takes most of a second to load; other queries need not)."""
    from citylake.queries import knn_kernels

    return knn_kernels
