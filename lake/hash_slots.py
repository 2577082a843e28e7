"""An open-addressing set of 64-bit hashes in a NumPy array (compiled with numba), for ``lake.run_keys``.

Slot 0 means free, so a hash of 0 is stored as 1; linear probing from a Fibonacci-hashed start (the top
log2(slots) bits of hash × 2^64/φ). The caller keeps at most half the slots used.

numba caches the compiled code beside this file and pickles this module's import name into it; the cache is
rebuilt when this file changes, so the name (citylake.lake.hash_slots) is written here to make a rename touch the file.
"""

from __future__ import annotations

import numba
import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / φ


@numba.njit(nogil=True, cache=True, inline="always")
def _shift(slots: int) -> np.uint64:
    bits = 0
    while (1 << bits) < slots:
        bits += 1
    return np.uint64(64 - bits)


@numba.njit(nogil=True, cache=True)
def insert(slots: np.ndarray, hashes: np.ndarray, seen: np.ndarray) -> int:
    """Insert each hash; ``seen[i]`` says whether it was there already. Returns how many were new."""
    mask, shift = np.uint64(slots.size - 1), _shift(slots.size)
    added = 0
    for i in range(hashes.size):
        h = hashes[i] if hashes[i] != 0 else np.uint64(1)
        at = (h * GOLDEN) >> shift
        while slots[at] != 0 and slots[at] != h:
            at = (at + np.uint64(1)) & mask
        seen[i] = slots[at] == h
        if not seen[i]:
            slots[at] = h
            added += 1
    return added


@numba.njit(nogil=True, cache=True)
def rehash(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """``old``'s hashes in the larger table ``new``."""
    mask, shift = np.uint64(new.size - 1), _shift(new.size)
    for h in old:
        if h != 0:
            at = (h * GOLDEN) >> shift
            while new[at] != 0:
                at = (at + np.uint64(1)) & mask
            new[at] = h
    return new
