"""Row validation as Polars expressions: typed values out, and for each bad row the first reason.

A check is (bad: bool expression, reason: text expression naming the value, kind: a short
label the summary counts by). ``split`` keeps rows with no failing check and returns the
others with their reason, kind and raw text for quarantine.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import NamedTuple

import polars as pl

from ingestion.errors import BadOption



class Check(NamedTuple):
    bad: pl.Expr
    reason: pl.Expr
    kind: str


REASON, KIND = "_reason", "_kind"
POSITION = "_position"
# Numbers below this are epoch seconds, below the next epoch milliseconds, else microseconds:
# 1e11 s is the year 5138, 1e14 ms the year 5138 too; real feeds stay far below both.
EPOCH_SECONDS_BELOW, EPOCH_MILLIS_BELOW = 1e11, 1e14
OFFSET_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M%:z", "%Y-%m-%d %H:%M%:z")
NAIVE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M:%S")


def check_timezone(tz: str) -> str:
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise BadOption("--tz", tz, "not a time zone; use an IANA name such as Europe/Helsinki or Asia/Shanghai") from None
    return tz


def text(column: str) -> pl.Expr:
    """The column as stripped text (numbers and timestamps from Parquet too)."""
    return pl.col(column).cast(pl.String).str.strip_chars()


def is_missing(column: str) -> pl.Expr:
    return text(column).is_null() | (text(column) == "")


def number(column: str) -> pl.Expr:
    """The column as a float, NULL where it is not a number."""
    return pl.col(column).cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)


def timestamps(column: str, tz: str, dtype: pl.DataType) -> pl.Expr:
    """UTC timestamps from ISO text with an offset or Z, naive local text (in ``tz``), or epoch numbers."""
    if isinstance(dtype, pl.Datetime):
        col = pl.col(column).cast(pl.Datetime("us", dtype.time_zone))
        return col.dt.convert_time_zone("UTC") if dtype.time_zone else col.dt.replace_time_zone(tz).dt.convert_time_zone("UTC")
    if dtype.is_numeric():
        return _from_epoch(pl.col(column).cast(pl.Float64))
    raw = text(column).str.replace(r"[Zz]$", "+00:00")
    parse = lambda fmt: raw.str.to_datetime(fmt, strict=False, time_unit="us")  # noqa: E731
    with_offset = pl.coalesce([parse(f) for f in OFFSET_FORMATS]).dt.convert_time_zone("UTC")
    local = pl.coalesce([parse(f) for f in NAIVE_FORMATS])
    local = local.dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null").dt.convert_time_zone("UTC")
    return pl.coalesce([with_offset, local, _from_epoch(raw.cast(pl.Float64, strict=False))])


def _from_epoch(value: pl.Expr) -> pl.Expr:
    micros = (
        pl.when(value.abs() < EPOCH_SECONDS_BELOW).then(value * 1e6)
        .when(value.abs() < EPOCH_MILLIS_BELOW).then(value * 1e3)
        .otherwise(value)
    )
    return pl.from_epoch(micros.round(0).cast(pl.Int64, strict=False), time_unit="us").dt.replace_time_zone("UTC")


def required(columns: list[str]) -> list[Check]:
    return [Check(is_missing(c), pl.lit(f"{c} is missing"), f"{c} missing") for c in columns]


def numeric(column: str, *, optional: bool = False) -> list[Check]:
    """``column`` must parse as a finite number (or be empty, if optional)."""
    value = number(column)
    present = ~is_missing(column)
    return [
        Check(present & value.is_null(), pl.format(f"{column} {{}} is not a number", text(column)), f"{column} not a number"),
        Check(present & ~value.is_finite(), pl.format(f"{column} {{}} is not finite", text(column)), f"{column} not finite"),
    ] + ([] if optional else [Check(~present, pl.lit(f"{column} is missing"), f"{column} missing")])


def coordinates(lat: str = "lat", lon: str = "lon") -> list[Check]:
    la, lo = number(lat), number(lon)
    return [
        *numeric(lat), *numeric(lon),
        Check(la.abs() > 90, pl.format("lat {} is out of range ±90 (lat/lon swapped?)", text(lat)), "lat out of range"),
        Check(lo.abs() > 180, pl.format("lon {} is out of range ±180", text(lon)), "lon out of range"),
        Check((la == 0) & (lo == 0), pl.lit("position (0, 0) is a null-island placeholder, not a place"), "position (0, 0)"),
    ]


def timestamp_checks(column: str, parsed: pl.Expr, *, latest: dt.datetime) -> list[Check]:
    return [
        Check(is_missing(column), pl.lit(f"{column} is missing"), f"{column} missing"),
        Check(parsed.is_null(), pl.format(f"{column} {{}} is not a timestamp (ISO 8601 or epoch seconds/millis)", text(column)),
              f"{column} not a timestamp"),
        Check(parsed > pl.lit(latest).dt.cast_time_unit("us"), pl.format(f"{column} {{}} is in the future", text(column)),
              f"{column} in the future"),
    ]


def first_failure(checks: list[Check]) -> list[pl.Expr]:
    """The reason and kind of the first failing check of each row (NULL when all pass)."""
    reason, kind = pl.when(checks[0].bad).then(checks[0].reason), pl.when(checks[0].bad).then(pl.lit(checks[0].kind))
    for check in checks[1:]:
        reason, kind = reason.when(check.bad).then(check.reason), kind.when(check.bad).then(pl.lit(check.kind))
    return [reason.otherwise(pl.lit(None, pl.String)).alias(REASON), kind.otherwise(pl.lit(None, pl.String)).alias(KIND)]


def raw_text(columns: list[str], delimiter: str = ",") -> pl.Expr:
    return pl.concat_str([pl.col(c).cast(pl.String).fill_null("") for c in columns], separator=delimiter)


def split(
    frame: pl.DataFrame, checks: list[Check], *, delimiter: str = ",", raw_columns: list[str] | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(good rows, bad rows as position/raw/reason/kind). ``frame`` carries a POSITION column;
    a bad row's raw text joins ``raw_columns`` (default: all the input columns)."""
    columns = raw_columns or [c for c in frame.columns if c != POSITION]
    marked = frame.with_columns(first_failure(checks))
    good = marked.filter(pl.col(REASON).is_null()).drop(REASON, KIND)
    bad = marked.filter(pl.col(REASON).is_not_null()).select(
        pl.col(POSITION).cast(pl.Int64), raw_text(columns, delimiter).alias("raw"), pl.col(REASON).alias("reason"),
        pl.col(KIND).alias("kind"),
    )
    return good, bad


BAD_SCHEMA = {POSITION: pl.Int64, "raw": pl.String, "reason": pl.String, "kind": pl.String}


def unreadable(rejected: list[tuple[int, str, str, str]]) -> pl.DataFrame:
    """Rows the reader could not read, as a bad-rows frame."""
    return pl.DataFrame(rejected, schema=BAD_SCHEMA, orient="row")
