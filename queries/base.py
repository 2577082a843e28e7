"""One query interface, one implementation per engine, the same answers.

Every result about people passes ``private_result`` before it leaves: a group with fewer than
``k`` distinct devices is withheld and counted in ``QueryResult.suppressed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import polars as pl
import pyarrow as pa

from citylake.privacy import DEFAULT_K
from citylake.queries.filters import Filters

__all__ = ["DEFAULT_ENGINE", "DEFAULT_K", "Engine", "FootfallBy", "QueryResult", "group_columns", "private_result", "tidy"]

# The engine a call gets when it names none (the CLI's --engine default too): Polars, since it is the faster on every
# shape measured — footfall 7.7x (blobs), 4.5x (a month over 1 km² zones), 5x (real OSM outlines), stays 2.5x, busy-hour
# conditions 5.7x (bench: footfall, footfall_zones, month_of_pings, queries_scaling). Both give the same answers (tests).
DEFAULT_ENGINE = "polars"
FootfallBy = Literal["place", "category", "cell"]
FOOTFALL_SCHEMA = {"pings": pl.Int64, "devices": pl.Int64}


@dataclass(frozen=True)
class QueryResult:
    table: pa.Table
    suppressed: int  # groups withheld for having fewer than k distinct devices
    k: int
    engine: str

    def summary(self) -> str:
        # how many groups were withheld is not said: "0 withheld" against "1 withheld" tells whether anyone was there
        return f"{self.table.num_rows:,} rows; groups withheld (fewer than {self.k} devices) — {self.engine}"


class Engine(Protocol):
    name: str

    def footfalls(self, *, views: list[tuple[FootfallBy, int, str]], filters: Filters) -> list[pl.DataFrame]:
        """Pings and distinct devices per group and time bucket, before k-anonymity: one frame for each (by, res, freq)
        of ``views``, all over the same pings (an engine may read them once)."""
        ...

    def pings(self, *, filters: Filters) -> pl.DataFrame:
        """device_id, ts, lat, lon of the pings the filters select (the steward's raw rows)."""
        ...

    def presence(self, *, filters: Filters) -> pl.DataFrame:
        """device_id, place_id, bucket: each hour a device had a ping inside a selected polygonal place, once (what a
        release bounds and counts)."""
        ...

    def readings(self, *, sensor_ids: list[str], freq: str, filters: Filters) -> pl.DataFrame:
        """sensor_id, metric, bucket, readings, mean, min, max of these sensors' readings per time bucket."""
        ...

    def stays(self, *, filters: Filters, max_gap_s: int, min_dwell_s: int) -> pl.DataFrame:
        """device_id, place_id, start, end, pings of every stay (see ``queries.stays``)."""
        ...


def group_columns(by: FootfallBy) -> list[str]:
    return {"place": ["place_id", "name", "category"], "category": ["category"], "cell": ["h3_cell"]}[by]


def private_result(frame: pl.DataFrame, *, k: int, engine: str) -> QueryResult:
    """The only way a result about people leaves: groups with fewer than ``k`` distinct devices withheld and counted."""
    kept = frame.filter(pl.col("devices") >= k)
    return QueryResult(kept.to_arrow(), frame.height - kept.height, k, engine)


def tidy(frame: pl.DataFrame, by: FootfallBy) -> pl.DataFrame:
    """Same column order, types and row order from every engine."""
    keys = group_columns(by)
    frame = frame.with_columns(pl.col("bucket").dt.cast_time_unit("us").dt.convert_time_zone("UTC"), pl.col("pings").cast(pl.Int64),
                               pl.col("devices").cast(pl.Int64))
    return frame.select([*keys, "bucket", "pings", "devices"]).sort([*keys, "bucket"])
