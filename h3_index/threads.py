"""How many threads a vectorised step may use: ``CITYLAKE_THREADS`` if set (a Dask worker of one core sets it
to 1, so its thread pools add no contention), else every core."""

from __future__ import annotations

import os

THREADS_ENV = "CITYLAKE_THREADS"


def threads() -> int:
    return max(1, int(os.environ.get(THREADS_ENV) or os.cpu_count() or 1))
