"""Compiled loops (numba) that count pings and distinct devices per group, a group being a dense number: rows are
tallied per group, their devices scattered into one run per group (a counting sort), and each run's distinct devices
counted in a small hash table stamped with the run's group, so it is never cleared between runs.

Compiled on first use and cached beside this file; ``nogil`` so threads run them on disjoint rows or groups.
numba caches the compiled code beside this file and pickles this module's import name into it; the cache is rebuilt
when this file changes, so the name (citylake.queries.count_kernels) is written here to make a rename touch the file.
"""

from __future__ import annotations

import numba
import numpy as np

TABLE = 4096  # slots of the distinct-device table: 64 KiB of keys and stamps, held in a core's cache
HASH = -7046029254386353131  # 2**64 / golden ratio (odd, as int64): multiplying spreads device hashes over the slots
SHIFT = 40  # the slot comes from the product's high bits, the well-mixed ones


@numba.njit(nogil=True, cache=True)
def group_and_tally(number: np.ndarray, ts: np.ndarray, keep: np.ndarray, width: int, first: int, buckets: int,
                    group: np.ndarray, sizes: np.ndarray) -> None:
    """Each kept row's group — its number times ``buckets`` plus its bucket's place after bucket ``first`` — into
    ``group`` (-1 for a row not kept), and one more row counted in ``sizes`` per group."""
    for i in range(number.size):
        if keep[i]:
            g = number[i] * buckets + (ts[i] // width - first)  # integer // floors, before 1970 too
            group[i] = g
            sizes[g] += 1
        else:
            group[i] = -1


@numba.njit(nogil=True, cache=True)
def scatter(group: np.ndarray, device: np.ndarray, fill: np.ndarray, runs: np.ndarray) -> None:
    """Each kept row's device to the next free place of its group's run (``fill`` holds each group's next place)."""
    for i in range(group.size):
        g = group[i]
        if g >= 0:
            runs[fill[g]] = device[i]
            fill[g] += 1


@numba.njit(nogil=True, cache=True)
def distinct_per_run(offsets: np.ndarray, runs: np.ndarray, first: int, stop: int, devices: np.ndarray) -> None:
    """Distinct values in each run ``runs[offsets[g]:offsets[g + 1]]`` for groups ``first`` to ``stop - 1``."""
    stamp = np.full(TABLE, -1, np.int64)  # the group that last wrote each slot: a slot of another group is free
    seen = np.empty(TABLE, np.int64)
    mask = TABLE - 1
    for g in range(first, stop):
        start, end = offsets[g], offsets[g + 1]
        if end - start > TABLE // 2:  # a run too long for the table (kept half empty so probes stay short): sort it
            ordered = np.sort(runs[start:end])
            devices[g] = 1 + np.count_nonzero(ordered[1:] != ordered[:-1])
            continue
        count = 0
        for j in range(start, end):
            value = runs[j]
            slot = ((value * HASH) >> SHIFT) & mask
            while stamp[slot] == g and seen[slot] != value:
                slot = (slot + 1) & mask
            if stamp[slot] != g:
                stamp[slot], seen[slot] = g, value
                count += 1
        devices[g] = count
