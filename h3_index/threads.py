"""How many threads a vectorised step may use: ``CITYLAKE_THREADS`` if set (a Dask worker of one core sets it
to 1, so its thread pools add no contention), else every core."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

THREADS_ENV = "CITYLAKE_THREADS"
T, R = TypeVar("T"), TypeVar("R")


def threads() -> int:
    return max(1, int(os.environ.get(THREADS_ENV) or os.cpu_count() or 1))


def thread_spans(items: int) -> list[tuple[int, int]]:
    """``range(items)`` cut into one (start, stop) span per thread, in order (empty spans dropped)."""
    edges = np.linspace(0, items, threads() + 1).astype(np.int64).tolist()
    return [(start, stop) for start, stop in zip(edges[:-1], edges[1:]) if stop > start]


def thread_map(work: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``work`` over ``items`` on ``threads()`` threads (in order), or in this thread when there is one thread or
    one item. For work that releases the GIL: NumPy, shapely, h3ronpy, numba ``nogil`` kernels."""
    if threads() == 1 or len(items) <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(threads()) as pool:
        return list(pool.map(work, items))
