"""Row validation as Polars expressions: typed values out, and for each bad row the first reason.

A check is (bad: bool expression, reason: text expression naming the value, kind: a short
label the summary counts by). ``split`` keeps rows with no failing check and returns the
others with their reason, kind and raw text for quarantine.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from citylake.ingestion.errors import BadOption, MissingColumns, UnreadableInput


class Check(NamedTuple):
    bad: pl.Expr
    reason: pl.Expr
    kind: str


FAILED = "_failed"  # index of the first failing check
POSITION = "_position"
# Numbers below this are epoch seconds, below the next epoch milliseconds, else microseconds:
# 1e11 s is the year 5138, 1e14 ms the year 5138 too; real feeds stay far below both.
EPOCH_SECONDS_BELOW, EPOCH_MILLIS_BELOW = 1e11, 1e14
FUTURE_TOLERANCE = dt.timedelta(minutes=10)  # clocks drift; more than this is a bad clock or a bad row
# Before this, a timestamp is a placeholder (0001-01-01, 1900, the epoch, -1) rather than an observation: setting
# ingest.earliest. A lake whose rows spanned two thousand years would make every hourly series two thousand years long.
EARLIEST = dt.date(2000, 1, 1)
OFFSET_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M%:z", "%Y-%m-%d %H:%M%:z")
NAIVE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M:%S")


@dataclass(frozen=True)
class TimeWindow:
    """The times a row may carry: from the lake's earliest date to a little past now."""
    earliest: dt.datetime
    latest: dt.datetime


def time_window(earliest: dt.date = EARLIEST, now: dt.datetime | None = None) -> TimeWindow:
    """Timestamps before ``earliest`` are placeholders; after now (give or take clock drift) a bad clock or a bad row."""
    start = dt.datetime.combine(earliest, dt.time(), dt.timezone.utc)
    return TimeWindow(start, (now or dt.datetime.now(dt.timezone.utc)) + FUTURE_TOLERANCE)


def parse_mapping(text: str | None, known: tuple[str, ...]) -> dict[str, str]:
    """``"device_id=uid,ts=time"`` → ``{"device_id": "uid", "ts": "time"}`` (lake column = source column)."""
    mapping: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        target, sep, source = part.partition("=")
        if not sep or not source.strip():
            raise BadOption("--map", text, "write target=source pairs separated by commas, e.g. device_id=uid,ts=time")
        if target.strip() not in known:
            raise BadOption("--map", text, f"{target.strip()!r} is not a column of this table; targets are {', '.join(known)}")
        mapping[target.strip()] = source.strip()
    return mapping


RENAME = "rename columns with --map target=source"


def check_columns(found: list[str], mapping: Mapping[str, str], source: str, required: tuple[str, ...], *, fix: str = RENAME,
                  optional: tuple[str, ...] = ()) -> None:
    """Refuse a file whose columns (``found``, as the file names them) lack a required one once ``mapping`` renames them
    (the error names what is missing, what is there and ``fix``), or name a column it reads twice. Ingestion checks the
    header before anything is written."""
    reverse = {src: target for target, src in mapping.items()}
    named = [reverse.get(c, c) for c in found]
    twice = sorted({c for c in named if named.count(c) > 1 and c in (*required, *optional)})
    if twice:
        raise UnreadableInput(source, f"column(s) {', '.join(twice)} appear more than once; keep one of each (or rename with --map)")
    missing = [c for c in required if c not in set(named)]
    if not missing:
        return
    hint = ""
    if len(found) == 1 and any(d in found[0] for d in ",;\t|"):
        hint = "the header is one column: is the delimiter right? pass --delimiter"
    elif not found:
        hint = "no column names could be read from it (JSON Lines: no object among its first lines)"
    raise MissingColumns(source, missing, found, hint, fix)


def rename(rows: pa.Table, mapping: Mapping[str, str], source: str, required: tuple[str, ...], optional: tuple[str, ...], *,
           fix: str = RENAME) -> pa.Table:
    """Rename source columns to lake columns and check the required ones are there."""
    check_columns(rows.column_names, mapping, source, required, fix=fix, optional=optional)
    reverse = {src: target for target, src in mapping.items()}
    rows = rows.rename_columns([reverse.get(c, c) for c in rows.column_names])
    return rows.select([c for c in (*required, *optional) if c in rows.column_names])


def check_timezone(tz: str) -> str:
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise BadOption("--tz", tz, "not a time zone; use an IANA name such as Europe/Helsinki or Asia/Shanghai") from None
    return tz


def text(column: str) -> pl.Expr:
    """The column as stripped text (numbers and timestamps from Parquet too)."""
    return pl.col(column).cast(pl.String).str.strip_chars()


Schema = Mapping[str, pl.DataType] | None  # the input's column types: a typed (Parquet) column skips the text round trip


def _typed(column: str, schema: Schema) -> bool:
    return schema is not None and column in schema and schema[column] != pl.String


def is_missing(column: str, schema: Schema = None) -> pl.Expr:
    if _typed(column, schema):
        return pl.col(column).is_null()
    raw = pl.col(column).cast(pl.String)
    return raw.is_null() | (raw == "")


def number(column: str, schema: Schema = None) -> pl.Expr:
    """The column as a float, NULL where it is not a number."""
    if _typed(column, schema) and (schema[column] == pl.Float64 or schema[column].is_integer()):
        return pl.col(column).cast(pl.Float64)  # (a float32 goes through its text, so 0.1f reads as 0.1, as a CSV would)
    return pl.col(column).cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)


def typed_numbers(columns: list[str], schema: Schema = None) -> list[pl.Expr]:
    """``_<column>`` as floats, computed once for the checks and the output to share."""
    return [number(c, schema).alias(f"_{c}") for c in columns]


def timestamps(values: pl.Series, tz: str) -> pl.Series:
    """UTC timestamps from ISO text with an offset or Z, naive local text (in ``tz``), or epoch numbers.

    Formats are tried in turn, each only on the rows the earlier ones could not read, so a
    file in one format pays for one parse.
    """
    dtype = values.dtype
    if isinstance(dtype, pl.Datetime):
        col = values.cast(pl.Datetime("us", dtype.time_zone))
        return col.dt.convert_time_zone("UTC") if dtype.time_zone else col.dt.replace_time_zone(tz).dt.convert_time_zone("UTC")
    if dtype.is_numeric():
        return pl.select(_from_epoch(pl.lit(values.cast(pl.Float64)))).to_series()
    fast = _iso_fast_path(values, tz)
    if fast is not None:
        return fast
    raw = values.cast(pl.String).str.strip_chars().str.replace("Z", "+00:00", literal=True).str.replace("z", "+00:00", literal=True)
    out = pl.Series(values.name, [None] * len(raw), dtype=pl.Datetime("us", "UTC"))
    attempts = [(f, lambda p: p.dt.convert_time_zone("UTC")) for f in OFFSET_FORMATS]
    attempts += [(f, lambda p: p.dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null").dt.convert_time_zone("UTC"))
                 for f in NAIVE_FORMATS]
    todo = raw.is_not_null()
    for fmt, to_utc in attempts:
        rows = todo.arg_true()
        if rows.len() == 0:
            return out
        parsed = to_utc(raw.gather(rows).str.to_datetime(fmt, strict=False, time_unit="us"))
        hit = parsed.is_not_null()
        out = out.scatter(rows.filter(hit), parsed.filter(hit))
        todo = todo & out.is_null()
    rows = todo.arg_true()
    if rows.len():
        epoch = pl.select(_from_epoch(pl.lit(raw.gather(rows).cast(pl.Float64, strict=False)))).to_series()
        hit = epoch.is_not_null()
        out = out.scatter(rows.filter(hit), epoch.filter(hit))
    return out


def _iso_fast_path(values: pl.Series, tz: str) -> pl.Series | None:
    """Arrow's ISO-8601 parser (20x faster) when it reads every value and no naive time needs ``tz``."""
    text = pc.utf8_trim_whitespace(values.cast(pl.String).to_arrow())
    try:
        parsed = pc.cast(text, pa.timestamp("us", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        try:  # empty fields are the commonest reason; they become NULL ("ts is missing") and the rest stays fast
            text = pc.if_else(pc.equal(text, ""), pa.scalar(None, text.type), text)
            parsed = pc.cast(text, pa.timestamp("us", tz="UTC"))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
    if tz != "UTC" and not pc.all(pc.match_substring_regex(text, r"([Zz]|[+-]\d\d:?\d\d)$")).as_py():
        return None  # a naive time must be read in tz: the slow path does that
    return pl.Series(values.name, parsed)


def _from_epoch(value: pl.Expr) -> pl.Expr:
    micros = (
        pl.when(value.abs() < EPOCH_SECONDS_BELOW).then(value * 1e6)
        .when(value.abs() < EPOCH_MILLIS_BELOW).then(value * 1e3)
        .otherwise(value)
    )
    return pl.from_epoch(micros.round(0).cast(pl.Int64, strict=False), time_unit="us").dt.replace_time_zone("UTC")


def is_blank(column: str) -> pl.Expr:
    """Missing, or nothing but whitespace: a text value such as an id or a kind that says nothing."""
    raw = pl.col(column).cast(pl.String)
    return raw.is_null() | (raw.str.strip_chars().str.len_bytes() == 0)


def required(columns: list[str]) -> list[Check]:
    """Text columns that must hold a value: one of only spaces is missing too (stripped, it would land as an empty id)."""
    return [Check(is_blank(c), pl.lit(f"{c} is missing"), f"{c} missing") for c in columns]


def numeric(column: str, *, optional: bool = False, schema: Schema = None) -> list[Check]:
    """``column`` (typed as ``_<column>`` by ``typed_numbers``) must be a finite number, or empty if optional."""
    value = pl.col(f"_{column}")
    present = ~is_missing(column, schema)
    return [
        Check(present & value.is_null(), pl.format(f"{column} {{}} is not a number", text(column)), f"{column} not a number"),
        Check(present & ~value.is_finite(), pl.format(f"{column} {{}} is not finite", text(column)), f"{column} not finite"),
    ] + ([] if optional else [Check(~present, pl.lit(f"{column} is missing"), f"{column} missing")])


def coordinates(lat: str = "lat", lon: str = "lon", *, schema: Schema = None) -> list[Check]:
    la, lo = pl.col(f"_{lat}"), pl.col(f"_{lon}")
    return [
        *numeric(lat, schema=schema), *numeric(lon, schema=schema),
        Check(la.abs() > 90, pl.format("lat {} is out of range ±90 (lat/lon swapped?)", text(lat)), "lat out of range"),
        Check(lo.abs() > 180, pl.format("lon {} is out of range ±180", text(lon)), "lon out of range"),
        Check((la == 0) & (lo == 0), pl.lit("position (0, 0) is a null-island placeholder, not a place"), "position (0, 0)"),
    ]


def timestamp_checks(column: str, parsed: str, *, window: TimeWindow, schema: Schema = None) -> list[Check]:
    """Checks of a timestamp column already parsed into the column ``parsed``."""
    parsed = pl.col(parsed)
    earliest = window.earliest.date().isoformat()
    return [
        Check(is_missing(column, schema), pl.lit(f"{column} is missing"), f"{column} missing"),
        Check(parsed.is_null(), pl.format(f"{column} {{}} is not a timestamp (ISO 8601 or epoch seconds/millis)", text(column)),
              f"{column} not a timestamp"),
        Check(parsed > pl.lit(window.latest).dt.cast_time_unit("us"), pl.format(f"{column} {{}} is in the future", text(column)),
              f"{column} in the future"),
        Check(parsed < pl.lit(window.earliest).dt.cast_time_unit("us"),
              pl.format(f"{column} {{}} is before the lake's earliest date {earliest} (a placeholder, not an observation; "
                        "setting ingest.earliest)", text(column)), f"{column} before {earliest}"),
    ]


def raw_text(columns: list[str | pl.Expr], delimiter: str = ",") -> pl.Expr:
    """A row's fields joined as its source line: columns by name, or expressions (such as a redacted field)."""
    fields = [c if isinstance(c, pl.Expr) else pl.col(c) for c in columns]
    return pl.concat_str([f.cast(pl.String).fill_null("") for f in fields], separator=delimiter)


def split(
    frame: pl.DataFrame, checks: list[Check], *, delimiter: str = ",", raw_columns: list[str | pl.Expr] | None = None,
    redact: list[pl.Expr] = (),
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(good rows, bad rows as position/raw/reason/kind). ``frame`` carries a POSITION column;
    a bad row's raw text joins ``raw_columns`` (default: all the input columns; computed for bad rows only). Checks are
    cheap comparisons; reason text is built only for the rows that fail, after ``redact`` (expressions replacing
    input columns) has been applied to them."""
    columns = raw_columns or [c for c in frame.columns if c != POSITION and not c.startswith("_")]
    failed = pl.when(checks[0].bad).then(pl.lit(0, pl.Int16))
    for i, check in enumerate(checks[1:], start=1):
        failed = failed.when(check.bad).then(pl.lit(i, pl.Int16))
    marked = frame.with_columns(failed.otherwise(pl.lit(None, pl.Int16)).alias(FAILED))
    good = marked.filter(pl.col(FAILED).is_null()).drop(FAILED)
    bad = marked.filter(pl.col(FAILED).is_not_null())
    if redact:
        bad = bad.with_columns(redact)
    reason, kind = pl.lit(None, pl.String), pl.lit(None, pl.String)
    for i, check in reversed(list(enumerate(checks))):
        reason = pl.when(pl.col(FAILED) == i).then(check.reason).otherwise(reason)
        kind = pl.when(pl.col(FAILED) == i).then(pl.lit(check.kind)).otherwise(kind)
    bad = bad.select(pl.col(POSITION).cast(pl.Int64), raw_text(columns, delimiter).alias("raw"), reason.alias("reason"), kind.alias("kind"))
    return good, bad


BAD_SCHEMA = {POSITION: pl.Int64, "raw": pl.String, "reason": pl.String, "kind": pl.String}


def unreadable(rejected: list[tuple[int, str, str, str]]) -> pl.DataFrame:
    """Rows the reader could not read, as a bad-rows frame."""
    return pl.DataFrame(rejected, schema=BAD_SCHEMA, orient="row")
