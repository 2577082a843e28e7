"""Time buckets and the (coarse cell, date) partition key: the time half of the coding system.

Buckets are floors aligned to the Unix epoch in UTC, the same rule as Polars'
``dt.truncate`` and DuckDB's ``time_bucket`` for sub-day widths, so all engines agree.
"""

from __future__ import annotations

import numpy as np

from citylake.h3_index.cells import cell_to_parent
from citylake.h3_index.errors import BadFrequency

# Width of each named bucket in microseconds, the lake's timestamp unit.
BUCKETS_US: dict[str, int] = {
    "5min": 5 * 60 * 10**6,
    "15min": 15 * 60 * 10**6,
    "1h": 3600 * 10**6,
    "1d": 86400 * 10**6,
}


def bucket_width_us(freq: str) -> int:
    """Microseconds in the named bucket, or BadFrequency listing the names."""
    try:
        return BUCKETS_US[freq]
    except (KeyError, TypeError):
        raise BadFrequency(freq, list(BUCKETS_US)) from None


def time_bucket(ts: np.ndarray, freq: str) -> np.ndarray:
    """Start of the bucket holding each UTC timestamp (``datetime64[us]``)."""
    width = bucket_width_us(freq)
    us = np.asarray(ts, dtype="datetime64[us]").astype(np.int64)
    return (us - np.mod(us, width)).astype("datetime64[us]")


def partition_keys(cells: np.ndarray, ts: np.ndarray, coarse_res: int) -> tuple[np.ndarray, np.ndarray]:
    """The lake partition of each row: its cell's ancestor at ``coarse_res`` and its UTC date."""
    dates = np.asarray(ts, dtype="datetime64[us]").astype("datetime64[D]")
    return cell_to_parent(cells, coarse_res), dates
