"""Space–time filters shared by every query, and how each engine applies them.

Times are UTC; hours of the day and weekdays are read on the city's clock (``tz``: the lake's time zone, which the
front door fills in). A time window also selects the ``date`` partitions it spans, so both engines skip every other
day's files.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import polars as pl

from citylake.h3_index import BUCKETS_US
from citylake.queries.errors import BadFilter

UTC = dt.timezone.utc


@dataclass(frozen=True)
class Filters:
    start: dt.datetime | None = None  # inclusive, UTC
    end: dt.datetime | None = None  # exclusive, UTC
    hours: tuple[int, ...] = ()  # hours of day (on the clock of ``tz``) to keep
    weekdays: tuple[int, ...] = ()  # 0 = Monday … 6 = Sunday (on the clock of ``tz``)
    bbox: tuple[float, float, float, float] | None = None  # xmin, ymin, xmax, ymax (lon/lat)
    place_ids: tuple[str, ...] = ()
    categories: tuple[str, ...] = field(default=())
    tz: str | None = None  # the time zone of hours and weekdays (IANA name); None: UTC
    devices: tuple[int, int] | None = None  # (r, of): only devices whose pseudonym modulo ``of`` is r (a cluster task's share)

    def __post_init__(self) -> None:
        if self.tz is not None:
            import zoneinfo

            try:
                zoneinfo.ZoneInfo(self.tz)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise BadFilter("tz", self.tz, "give an IANA time zone such as Asia/Shanghai or UTC") from None
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                object.__setattr__(self, name, value.replace(tzinfo=UTC))
        if self.start and self.end and self.end <= self.start:
            raise BadFilter("end", self.end, "must come after start")
        if any(not 0 <= h <= 23 for h in self.hours):
            raise BadFilter("hours", self.hours, "hours of day run from 0 to 23")
        if any(not 0 <= d <= 6 for d in self.weekdays):
            raise BadFilter("weekdays", self.weekdays, "weekdays run from 0 (Monday) to 6 (Sunday)")
        if self.bbox and not (self.bbox[0] < self.bbox[2] and self.bbox[1] < self.bbox[3]):
            raise BadFilter("bbox", self.bbox, "write it as xmin,ymin,xmax,ymax with min < max")
        if self.devices and not 0 <= self.devices[0] < self.devices[1]:
            raise BadFilter("devices", self.devices, "a share of devices is (r, of) with 0 <= r < of")

    # -- DuckDB ------------------------------------------------------------------------------
    def ping_sql(self, alias: str = "p") -> str:
        """WHERE conditions on pings (or readings) for DuckDB; ``TRUE`` when unfiltered."""
        a = alias
        parts = []
        if self.start:
            parts += [f"{a}.ts >= TIMESTAMPTZ '{self.start.isoformat()}'", f"{a}.date >= DATE '{self.start.date()}'"]
        if self.end:
            parts += [f"{a}.ts < TIMESTAMPTZ '{self.end.isoformat()}'", f"{a}.date <= DATE '{self.end.date()}'"]
        clock = f"timezone('{self.tz}', {a}.ts)" if self.tz else f"{a}.ts"
        if self.hours:
            parts.append(f"hour({clock}) IN ({', '.join(map(str, self.hours))})")
        if self.weekdays:  # isodow: Monday = 1
            parts.append(f"isodow({clock}) - 1 IN ({', '.join(map(str, self.weekdays))})")
        if self.bbox:
            x0, y0, x1, y1 = self.bbox
            parts.append(f"{a}.lon BETWEEN {x0!r} AND {x1!r} AND {a}.lat BETWEEN {y0!r} AND {y1!r}")
        if self.devices:  # floored, as Polars' %: DuckDB's takes the dividend's sign
            r, of = self.devices
            parts.append(f"(({a}.device_id % {int(of)}) + {int(of)}) % {int(of)} = {int(r)}")
        return " AND ".join(parts) or "TRUE"

    def place_sql(self, alias: str = "pl") -> str:
        parts = []
        if self.place_ids:
            parts.append(f"{alias}.place_id IN ({_quoted(self.place_ids)})")
        if self.categories:
            parts.append(f"{alias}.category IN ({_quoted(self.categories)})")
        return " AND ".join(parts) or "TRUE"

    # -- Polars ------------------------------------------------------------------------------
    def ping_expr(self) -> pl.Expr:
        expr = pl.lit(True)
        if self.start:
            expr &= (pl.col("ts") >= self.start) & (pl.col("date") >= self.start.date())
        if self.end:
            expr &= (pl.col("ts") < self.end) & (pl.col("date") <= self.end.date())
        if self.hours:
            expr &= self.clock("ts").dt.hour().is_in(list(self.hours))
        if self.weekdays:
            expr &= (self.clock("ts").dt.weekday() - 1).is_in(list(self.weekdays))
        if self.bbox:
            x0, y0, x1, y1 = self.bbox
            expr &= pl.col("lon").is_between(x0, x1) & pl.col("lat").is_between(y0, y1)
        if self.devices:
            expr &= pl.col("device_id") % self.devices[1] == self.devices[0]
        return expr

    def clock(self, column: str) -> pl.Expr:
        """``column`` (UTC) on the city's clock, for hours of the day and weekdays."""
        return pl.col(column).dt.convert_time_zone(self.tz) if self.tz else pl.col(column)

    def place_expr(self) -> pl.Expr:
        expr = pl.lit(True)
        if self.place_ids:
            expr &= pl.col("place_id").is_in(list(self.place_ids))
        if self.categories:
            expr &= pl.col("category").is_in(list(self.categories))
        return expr


def _quoted(values: tuple[str, ...]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def check_freq(freq: str) -> str:
    if freq not in BUCKETS_US:
        raise BadFilter("freq", freq, f"use one of {', '.join(BUCKETS_US)}")
    return freq


def parse_hours(text: str | None) -> tuple[int, ...]:
    """``"9-17"`` → 9…16 (end exclusive), ``"8,12,18"`` → those hours."""
    if not text:
        return ()
    try:
        if "-" in text:
            lo, hi = (int(x) for x in text.split("-", 1))
            return tuple(range(lo, hi))
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise BadFilter("hours", text, "write a range such as 9-17 or a list such as 8,12,18") from None


WEEKDAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}


def parse_weekdays(text: str | None) -> tuple[int, ...]:
    """``"sat,sun"`` or ``"weekend"`` / ``"weekdays"``."""
    if not text:
        return ()
    named = {"weekend": "sat,sun", "weekdays": "mon,tue,wed,thu,fri"}.get(text.lower(), text.lower())
    try:
        return tuple(WEEKDAYS[d.strip()[:3]] for d in named.split(","))
    except KeyError:
        raise BadFilter("weekdays", text, "use mon,tue,… or weekend / weekdays") from None
