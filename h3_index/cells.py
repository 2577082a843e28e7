"""Vectorised H3 cell functions over numpy arrays.

Cells are carried as ``int64``: Delta Lake has no unsigned integers, and every valid
H3 index fits because its top bit is reserved and always 0. The h3 libraries speak
``uint64``; the conversion happens here, once.

Point -> cell runs on h3ronpy (Rust over Arrow). It was measured against polars-h3
and an h3-py loop on 10M points (see ``bench/results.json``); h3ronpy releases the
GIL, so chunks run on every core through a thread pool.
"""

from __future__ import annotations

from collections.abc import Iterable

import h3
import h3ronpy
import numpy as np
import pyarrow as pa
import shapely
from h3ronpy import vector

from citylake.h3_index.errors import BadCell, BadCoordinate, BadResolution, TooManyCells
from citylake.h3_index.threads import thread_map

MIN_RES, MAX_RES = 0, 15
# Bit layout of an H3 cell index (h3geo.org/docs/library/index/cell):
RES_SHIFT = 52  # the 4 resolution bits sit at 52..55
RES_MASK = np.int64(0xF) << RES_SHIFT  # clears the resolution field
DIGIT_BITS = 3  # each of the 15 child digits takes 3 bits; unused digits are all ones (7)
# Below this many points the thread pool costs more than it saves.
PARALLEL_CHUNK = 200_000


def check_resolution(res: object) -> int:
    """Return ``res`` as an int, or raise BadResolution naming it."""
    if isinstance(res, (bool, np.bool_)) or not isinstance(res, (int, np.integer)):
        raise BadResolution(res)
    if not MIN_RES <= int(res) <= MAX_RES:
        raise BadResolution(res)
    return int(res)


def _as_float_array(values: Iterable[float] | np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(values, dtype=np.float64))


def check_coordinates(lat: np.ndarray, lon: np.ndarray) -> None:
    """Raise BadCoordinate for the first latitude or longitude out of range or not finite."""
    if lat.shape != lon.shape:
        raise ValueError(f"lat has {lat.size} values but lon has {lon.size}; pass arrays of equal length")
    for column, values, limit in (("lat", lat, 90.0), ("lon", lon, 180.0)):
        bad = ~(np.abs(values) <= limit)  # NaN compares False, so it is caught too
        if bad.any():
            row = int(np.argmax(bad))
            raise BadCoordinate(column=column, row=row, value=float(values[row]), allowed=f"within ±{limit:g}")


def latlng_to_cells(lat: Iterable[float] | np.ndarray, lon: Iterable[float] | np.ndarray, res: int) -> np.ndarray:
    """Cells (int64) containing each (lat, lon) point in degrees, at resolution ``res``."""
    res = check_resolution(res)
    lat, lon = _as_float_array(lat), _as_float_array(lon)
    check_coordinates(lat, lon)
    if lat.size <= PARALLEL_CHUNK:
        return _latlng_to_cells(lat, lon, res)
    chunks = max(2, lat.size // PARALLEL_CHUNK)
    parts = list(zip(np.array_split(lat, chunks), np.array_split(lon, chunks)))
    return np.concatenate(thread_map(lambda part: _latlng_to_cells(*part, res), parts))


def _latlng_to_cells(lat: np.ndarray, lon: np.ndarray, res: int) -> np.ndarray:
    cells = pa.array(vector.coordinates_to_cells(lat, lon, res))
    return cells.to_numpy(zero_copy_only=False).view(np.int64)


def _as_cell_array(cells: Iterable[int] | np.ndarray) -> np.ndarray:
    arr = np.asarray(cells)
    if arr.dtype == np.uint64:
        return arr.view(np.int64)
    return arr.astype(np.int64, copy=False)


def check_cells(cells: Iterable[int] | np.ndarray) -> np.ndarray:
    """Return cells as int64, or raise BadCell for the first one that is not a valid H3 cell."""
    arr = _as_cell_array(cells)
    valid = pa.array(h3ronpy.cells_valid(pa.array(arr.view(np.uint64)), booleanarray=True)).to_numpy(
        zero_copy_only=False
    )
    if not valid.all():
        row = int(np.argmin(valid))
        raise BadCell(int(arr[row]), row=row)
    return arr


def cell_resolutions(cells: Iterable[int] | np.ndarray) -> np.ndarray:
    """The resolution of each cell (read from its resolution bits)."""
    return ((check_cells(cells) & RES_MASK) >> RES_SHIFT).astype(np.int8)


def cell_to_parent(cells: Iterable[int] | np.ndarray, res: int) -> np.ndarray:
    """The ancestor of each cell at the coarser resolution ``res`` (pure bit arithmetic)."""
    res = check_resolution(res)
    arr = check_cells(cells)
    finest = ((arr & RES_MASK) >> RES_SHIFT).min(initial=MAX_RES)
    if arr.size and res > finest:
        raise BadResolution(res, why=f"a parent must be coarser than its child, and a cell here is at resolution {finest}")
    return parent_bits(arr, res)


def parent_bits(cells: np.ndarray, res: int) -> np.ndarray:
    """Bit arithmetic of cell_to_parent without validation (callers have validated)."""
    unused_digits = np.int64((1 << (DIGIT_BITS * (MAX_RES - res))) - 1)  # digits below res become 7
    return (cells & ~RES_MASK) | (np.int64(res) << RES_SHIFT) | unused_digits


def cell_to_children(cell: int, res: int) -> np.ndarray:
    """All descendants of one cell at the finer resolution ``res`` (at most MAX_CELLS_OUT)."""
    res = check_resolution(res)
    (cell,) = check_cells([cell])
    own = int(cell_resolutions([cell])[0])
    if res < own:
        raise BadResolution(res, why=f"children must be finer than their parent, which is at resolution {own}")
    check_cell_count(children_count(own, res), f"the children of a resolution-{own} cell at resolution {res}")
    children = h3ronpy.change_resolution(pa.array(np.array([cell]).view(np.uint64)), res)
    return pa.array(children).to_numpy(zero_copy_only=False).view(np.int64)


# What one call may make: enough for every cell of a city at a fine resolution, far below what would exhaust memory
# (a resolution-0 cell's children at resolution 15 are 4.7e12 cells; a disk of radius 100,000 has 3e10).
MAX_CELLS_OUT = 10_000_000


def children_count(own: int, res: int) -> int:
    """How many children at ``res`` a cell at ``own`` has (at most: pentagons have fewer)."""
    return 7 ** max(res - own, 0)


def disk_size(k: int) -> int:
    """How many cells a grid disk of radius ``k`` holds (at most: one around a pentagon holds fewer)."""
    return 3 * k * (k + 1) + 1


def check_cell_count(asked: int, what: str) -> None:
    if asked > MAX_CELLS_OUT:
        raise TooManyCells(asked, MAX_CELLS_OUT, what)


def grid_disk(cells: Iterable[int] | np.ndarray, k: int) -> list[np.ndarray]:
    """For each cell, every cell within ``k`` grid steps (the k-ring disk, itself included)."""
    flat, owner = grid_disk_flat(cells, k)
    return np.split(flat, np.flatnonzero(np.diff(owner)) + 1) if flat.size else []


def grid_disk_flat(cells: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every cell's grid disk of radius ``k`` as one flat array, with the position of the cell it belongs to."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"grid distance k={k!r} is not valid; pass a whole number >= 0")
    arr = check_cells(cells)
    check_cell_count(arr.size * disk_size(int(k)), f"grid disks of radius {k} around {arr.size:,} cells")
    disks = pa.array(h3ronpy.grid_disk(pa.array(arr.view(np.uint64)), int(k)))
    offsets = disks.offsets.to_numpy()
    flat = disks.values.to_numpy(zero_copy_only=False).view(np.int64)
    return flat, np.repeat(np.arange(arr.size), np.diff(offsets))


def cells_to_strings(cells: Iterable[int] | np.ndarray) -> list[str]:
    """Hex strings of cells, as the h3 libraries and kepler.gl write them."""
    arr = check_cells(cells)
    return pa.array(h3ronpy.cells_to_string(pa.array(arr.view(np.uint64)))).to_pylist()


def strings_to_cells(strings: Iterable[str]) -> np.ndarray:
    """Cells from hex strings; raises BadCell naming the first string that is not a cell."""
    values = list(strings)
    for row, text in enumerate(values):
        if not isinstance(text, str) or not h3.is_valid_cell(text):
            raise BadCell(text, row=row)
    parsed = h3ronpy.cells_parse(pa.array(values, type=pa.string()))
    return pa.array(parsed).to_numpy(zero_copy_only=False).view(np.int64)


def cells_to_latlng(cells: Iterable[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre (lat, lon) of each cell in degrees."""
    arr = check_cells(cells)
    batch = pa.record_batch(vector.cells_to_coordinates(pa.array(arr.view(np.uint64))))
    return batch.column("lat").to_numpy(), batch.column("lng").to_numpy()


def cells_to_polygons(cells: Iterable[int] | np.ndarray) -> np.ndarray:
    """Boundary of each cell as a shapely Polygon (lon/lat, EPSG:4326)."""
    arr = check_cells(cells)
    wkb = pa.array(vector.cells_to_wkb_polygons(pa.array(arr.view(np.uint64))))
    return shapely.from_wkb(wkb.to_numpy(zero_copy_only=False))


def cells_to_boundary_wkt(cells: Iterable[int] | np.ndarray) -> list[str]:
    """Boundary of each cell as WKT text (lon lat order)."""
    return shapely.to_wkt(cells_to_polygons(cells), rounding_precision=-1).tolist()
