"""Pings and distinct devices per (place number, time bucket), counted by compiled loops (``queries.count_kernels``)
over a dense grid of groups — every number times every bucket between the first and the last — instead of a hash
group-by: four times faster than Polars' on 10M pings, with the same answer (a test holds them equal). A grid much
larger than the rows (fine buckets over a long window) is not built: the caller groups with Polars instead.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import polars as pl

from citylake.h3_index.buckets import bucket_width_us
from citylake.h3_index.threads import thread_map, thread_spans, threads

MIN_GRID = 2**22  # groups a grid may always have (32 MiB of counts), however few the rows
MAX_GRID = 2**31 - 1  # groups are numbered in int32


class Rows(NamedTuple):
    """One stretch of rows: each row's number, time (µs since 1970), device, and whether it counts."""

    number: np.ndarray
    ts: np.ndarray
    device: np.ndarray
    keep: np.ndarray


def dense_counts(frame: pl.DataFrame, keep: np.ndarray, *, number: str, numbers: int, freq: str) -> pl.DataFrame | None:
    """Pings and distinct devices per (``number``, bucket of ``freq``) over the rows of ``frame`` (``number``, ts,
    device_id) where ``keep``, sorted by both: the columns ``number``, bucket, pings, devices, as ``counts_per``
    gives them. None when the grid of ``numbers`` × buckets would be far larger than the rows."""
    width = bucket_width_us(freq)
    kept = int(np.count_nonzero(keep))
    if not kept:
        return None
    ts = frame["ts"].dt.epoch("us")
    first, last = ts.min() // width, ts.max() // width
    buckets = last - first + 1
    if numbers * buckets > min(max(kept, MIN_GRID), MAX_GRID):
        return None
    from citylake.queries import count_kernels as kernels  # numba loads in most of a second: only when used

    parts = _parts(frame[number], ts, frame["device_id"], keep)
    groups = [np.empty(part.number.size, np.int32) for part in parts]
    spans = thread_spans(len(parts))

    def tally(span: tuple[int, int]) -> np.ndarray:
        sizes = np.zeros(numbers * buckets, np.int64)
        for at in range(*span):
            kernels.group_and_tally(*parts[at][:2], parts[at].keep, width, first, buckets, groups[at], sizes)
        return sizes

    sizes = thread_map(tally, spans)  # one tally per thread, over its own stretches
    pings = np.sum(sizes, axis=0)
    offsets = np.zeros(pings.size + 1, np.int64)
    np.cumsum(pings, out=offsets[1:])
    fills = np.cumsum([offsets[:-1], *sizes[:-1]], axis=0)  # a thread's rows go after the earlier threads' in a run
    runs = np.empty(kept, np.int64)
    thread_map(lambda t: [kernels.scatter(groups[at], parts[at].device, fills[t], runs) for at in range(*spans[t])],
               range(len(spans)))
    devices = np.zeros(pings.size, np.int64)
    thread_map(lambda span: kernels.distinct_per_run(offsets, runs, *span, devices), thread_spans(pings.size))
    found = np.flatnonzero(pings)
    bucket = ((found % buckets + first) * width).astype("datetime64[us]")
    return pl.DataFrame({number: (found // buckets).astype(np.uint32), "bucket": bucket,
                         "pings": pings[found].astype(np.uint32), "devices": devices[found].astype(np.uint32)},
                        ).with_columns(pl.col("bucket").dt.replace_time_zone("UTC"))


def aligned_chunks(columns: list[pl.Series], /) -> list[tuple[np.ndarray, ...]]:
    """The columns' chunks as NumPy arrays, chunk by chunk (read where they lie; rechunked first when the columns'
    chunks differ)."""
    if len({tuple(column.chunk_lengths()) for column in columns}) > 1:
        columns = [column.rechunk() for column in columns]
    return [tuple(chunk.to_numpy() for chunk in chunks) for chunks in zip(*(column.get_chunks() for column in columns))]


def _parts(number: pl.Series, ts: pl.Series, device: pl.Series, keep: np.ndarray) -> list[Rows]:
    """The rows in stretches read where they lie (a Polars column's chunks), cut so every thread has some."""
    chunks = aligned_chunks([number, ts, device])
    ends = np.cumsum([0] + [chunk[0].size for chunk in chunks])
    parts = [Rows(*chunk, keep[start:end]) for chunk, start, end in zip(chunks, ends[:-1], ends[1:])]
    if len(parts) >= threads():
        return parts
    return [Rows(*(column[start:stop] for column in part)) for part in parts for start, stop in thread_spans(part.number.size)]
