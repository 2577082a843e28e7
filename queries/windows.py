"""Windows of whole buckets a footfall over many days is cut into, so one process (or one Dask task) holds a bounded
number of pings, whatever the lake's size: spans of whole UTC days, and a day denser than the share cut into equal parts
of whole buckets.

Buckets divide a day and are aligned to the epoch, so a bucket never crosses midnight UTC or the edge of a part made of
whole buckets: each window's groups are whole, the windows' answers are concatenated, never merged, and the answer is
the one-window answer exactly.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from citylake.lake import Lake
from citylake.queries.filters import Filters

DAY_US = 86_400 * 10**6
UTC = dt.timezone.utc


def days_of(lake: Lake, start: dt.datetime | None, end: dt.datetime | None) -> dict[dt.date, int]:
    """Pings per UTC day in the window [``start``, ``end``), from the lake's log (no scan); a day's whole count."""
    per_day = {dt.date.fromisoformat(day): rows for day, rows in lake.rows_per_partition("pings", "date").items()}
    return {d: per_day[d] for d in sorted(per_day)
            if (start is None or d >= start.date()) and (end is None or d < end.date() or (d == end.date() and end.time() != dt.time()))}


def pings_per_day(lake: Lake, filters: Filters) -> dict[dt.date, int]:
    """Pings per UTC date holding pings within the filters' window (from the Delta log; a date's whole count)."""
    return days_of(lake, filters.start and filters.start.astimezone(UTC), filters.end and filters.end.astimezone(UTC))


def narrowed(filters: Filters, start: dt.datetime, end: dt.datetime, /) -> Filters | None:
    """``filters`` with their window narrowed to [``start``, ``end``); None where the two do not meet (a part of a day
    before the filters' start, say)."""
    first, last = max(filters.start or start, start), min(filters.end or end, end)
    return dataclasses.replace(filters, start=first, end=last) if first < last else None


def day_windows(per_day: dict[dt.date, int], bucket_us: int, /, *, share: int,
                most: int | None = None) -> list[tuple[dt.datetime, dt.datetime]]:
    """[start, end) windows in UTC covering the days of ``per_day``: each span of ``day_spans`` (days of up to ``share``
    pings together), and a day of more than ``most`` (default ``share``) pings cut into equal parts of whole buckets
    (``day_parts``), so a window holds at most about ``most`` pings unless a single bucket holds more."""
    windows = []
    for first, last in day_spans(per_day, share=share):
        start = dt.datetime.combine(first, dt.time(), UTC)
        end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), UTC)
        parts = day_parts(per_day[first], bucket_us, share=most or share) if first == last else 1
        step = (end - start) / parts
        windows += [(start + step * n, start + step * (n + 1)) for n in range(parts)]
    return windows


def day_parts(pings: int, bucket_us: int, /, *, share: int) -> int:
    """Into how many equal parts to cut a day of ``pings``: the fewest (of those whose length is whole buckets) that hold
    at most ``share`` each; the most there are when none does."""
    fits = [parts for parts in range(1, DAY_US // bucket_us + 1) if (DAY_US // parts) % bucket_us == 0 and DAY_US % parts == 0]
    return next((parts for parts in fits if pings / parts <= share), fits[-1])


def day_spans(per_day: dict[dt.date, int], /, *, share: int) -> list[tuple[dt.date, dt.date]]:
    """Days in order, grouped into (first, last) spans: as many days as keep a span's pings under ``share``; a day is
    never split here (a day of more than ``share`` pings is a span of its own, which ``day_windows`` cuts)."""
    spans: list[tuple[dt.date, dt.date]] = []
    held = 0
    for day, rows in per_day.items():
        if spans and held + rows <= share:
            spans[-1], held = (spans[-1][0], day), held + rows
        else:
            spans.append((day, day))
            held = rows
    return spans
