"""Location-service feed: device pings from CSV or Parquet into ``pings``.

Device ids are replaced by keyed-hash pseudonyms before anything is written; timestamps
with offsets, ``Z``, naive local times (``tz``) or epoch seconds/millis become UTC; bad rows
are quarantined with their line and reason. Files stream in chunks of ``batch_rows``.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterator, Mapping
from pathlib import Path

import polars as pl
import pyarrow as pa

from citylake.h3_index import latlng_to_cells
from citylake.ingestion import validate as V
from citylake.ingestion.batch import (
    DEFAULT_BUFFER_MB,
    STAGED_ABOVE_ROWS,
    BatchWriter,
    Chunk,
    IngestReport,
    fingerprint_soon,
    run,
    validated,
)
from citylake.ingestion.textfile import DEFAULT_BATCH_ROWS, RawChunk, chunks, columns, parquet_rows
from citylake.ingestion.validate import parse_mapping
from citylake.lake import Lake
from citylake.privacy.pseudonyms import pseudonym, pseudonymise

REQUIRED = ("device_id", "ts", "lat", "lon")
OPTIONAL = ("accuracy_m",)


def read_pings(
    path: str | Path, /, *, key: bytes, cell_res: int = 11, mapping: Mapping[str, str] | None = None, tz: str = "UTC",
    delimiter: str | None = None, batch_rows: int = DEFAULT_BATCH_ROWS, now: dt.datetime | None = None,
    earliest: dt.date = V.EARLIEST,
) -> tuple[pa.Table, pl.DataFrame]:
    """All valid pings of a file as a table ready for the lake, and the rejected rows."""
    parts = list(_pings_chunks(Path(path), key=key, cell_res=cell_res, mapping=mapping or {}, tz=tz,
                               delimiter=delimiter, batch_rows=batch_rows, window=V.time_window(earliest, now)))
    good = pa.concat_tables([p.good for p in parts]) if parts else pa.table({})
    bad = pl.concat([p.bad for p in parts]) if parts else pl.DataFrame()
    return good, bad


def ingest_pings(
    lake: Lake, path: str | Path, /, *, key: bytes, mapping: Mapping[str, str] | None = None, tz: str = "UTC",
    delimiter: str | None = None, batch_rows: int = DEFAULT_BATCH_ROWS, progress: bool = False, now: dt.datetime | None = None,
    earliest: dt.date = V.EARLIEST, buffer_mb: int = DEFAULT_BUFFER_MB, compact: bool = True,
) -> IngestReport:
    """Ingest a pings file into the lake: exactly once, bad rows quarantined (times before ``earliest`` too); the run's
    files are merged per partition at its end unless ``compact=False`` (the bench measures both). A Parquet file of more
    than ``STAGED_ABOVE_ROWS`` rows is staged and settled in this process instead (``ingestion.fanout``): one commit, and
    memory that does not grow with the file."""
    path = Path(path)
    V.check_timezone(tz)
    if (parquet_rows(path) or 0) > STAGED_ABOVE_ROWS:
        from citylake.ingestion.fanout import PINGS, ingest_in_process  # fanout checks rows with this module's functions

        return ingest_in_process(lake, path, PINGS, progress=progress, key=key, mapping=mapping, tz=tz, batch_rows=batch_rows,
                                 now=now, earliest=earliest)
    writer = BatchWriter(lake, "pings", str(path), fingerprint_soon(path), one_run=True, buffer_mb=buffer_mb)
    parts = _pings_chunks(path, key=key, cell_res=lake.cell_res, mapping=mapping or {}, tz=tz,
                          delimiter=delimiter, batch_rows=batch_rows, window=V.time_window(earliest, now))
    return run(writer, parts, total_bytes=path.stat().st_size, progress=progress, compact=compact)


def _pings_chunks(
    path: Path, *, key: bytes, cell_res: int, mapping: Mapping[str, str], tz: str, delimiter: str | None,
    batch_rows: int, window: V.TimeWindow,
) -> Iterator[Chunk]:
    """The file's validated chunks; a header without the required columns is refused now, before any chunk is read."""
    V.check_columns(columns(path, delimiter=delimiter), mapping, str(path), REQUIRED, optional=OPTIONAL)
    return validated(chunks(path, batch_rows=batch_rows, delimiter=delimiter),
                     lambda raw: validate_pings(raw, str(path), key=key, cell_res=cell_res, mapping=mapping, tz=tz, window=window))


def validate_pings(
    raw: RawChunk, source: str, *, key: bytes, cell_res: int, mapping: Mapping[str, str], tz: str, window: V.TimeWindow
) -> Chunk:
    """Check pings and pseudonymise their device ids (a file's chunk, or an MQTT micro-batch): quarantined text carries
    the pseudonym, never the raw id; a rejected line that is no CSV (``raw.delimiter`` None) is withheld whole."""
    rows = V.rename(raw.rows, mapping, source, REQUIRED, OPTIONAL)
    frame = pl.from_arrow(rows)
    schema, has_accuracy = frame.schema, "accuracy_m" in frame.columns
    frame = frame.with_columns(
        pl.Series(V.POSITION, raw.positions), V.timestamps(frame["ts"], tz).alias("_ts"),
        *V.typed_numbers(["lat", "lon", *(["accuracy_m"] if has_accuracy else [])], schema),
    )
    checks = [*V.required(["device_id"]), *V.timestamp_checks("ts", "_ts", window=window, schema=schema),
              *V.coordinates(schema=schema)]
    if has_accuracy:
        checks += [*V.numeric("accuracy_m", optional=True, schema=schema),
                   V.Check(pl.col("_accuracy_m") < 0, pl.format("accuracy_m {} is negative", V.text("accuracy_m")), "accuracy_m negative")]
    # Quarantined text must not carry the raw device id either: its field becomes the pseudonym, and a field that is not a
    # valid value of its column (where a shifted or swapped row would put the id) is withheld, in the raw text and the reason
    # (worked out for the rejected rows only).
    frame = frame.with_columns(pseudonymise(frame["device_id"].cast(pl.String).fill_null(""), key).alias("_pseudonym"))
    good, bad = V.split(frame, checks, raw_columns=[device_ref_expr(), *[c for c in rows.column_names if c != "device_id"]],
                        redact=_withheld_unless_valid(frame, has_accuracy))
    good = good.select(
        pl.col("_pseudonym").alias("device_id"), pl.col("_ts").dt.truncate("1s").alias("ts"),
        pl.col("_lat").round(PLACES).alias("lat"), pl.col("_lon").round(PLACES).alias("lon"),
        (pl.col("_accuracy_m") if has_accuracy else pl.lit(None, pl.Float64)).cast(pl.Float32).alias("accuracy_m"),
    )
    good = good.with_columns(pl.Series("h3_cell", latlng_to_cells(good["lat"].to_numpy(), good["lon"].to_numpy(), cell_res)))
    if raw.rejected:
        # the id's field in the line as the file has it (rows, renamed and selected, are in the table's order)
        source_column = mapping.get("device_id", "device_id")
        device_field = raw.rows.column_names.index(source_column) if source_column in raw.rows.column_names else 0
        unreadable = [(pos, redact_line(text, device_field, raw.delimiter, key, expected=raw.rows.num_columns), why, kind)
                      for pos, text, why, kind in raw.rejected]
        bad = pl.concat([V.unreadable(unreadable), bad])
    return Chunk(good.to_arrow(), bad, raw.rows_in, raw.bytes_done)


WITHHELD = "[line withheld: its device id could not be separated from the rest]"
NOT_A_VALUE = "[withheld: not a valid value here]"
PLACES = 5  # stored coordinates keep 5 decimals (~1 m), timestamps whole seconds: finer tells nothing a city needs


def device_ref_expr() -> pl.Expr:
    """What quarantine shows in place of a raw device id: ``pseudonym:<the device_id stored in pings>``."""
    return pl.when(V.is_missing("device_id")).then(pl.lit("")).otherwise(pl.format("pseudonym:{}", pl.col("_pseudonym")))


def _withheld_unless_valid(frame: pl.DataFrame, has_accuracy: bool) -> list[pl.Expr]:
    """The raw text of ts, lat, lon (and accuracy_m) where it reads as a value of its column's kind, else NOT_A_VALUE."""
    coordinate_like = lambda parsed: parsed.abs() <= 360  # noqa: E731 - a swapped lat/lon stays readable; an id-sized number does not
    valid = {"ts": pl.col("_ts").is_not_null(), "lat": coordinate_like(pl.col("_lat")), "lon": coordinate_like(pl.col("_lon")),
             "accuracy_m": pl.col("_accuracy_m").abs() < 100_000 if has_accuracy else None}
    return [pl.when(V.is_missing(c) | condition).then(pl.col(c)).otherwise(pl.lit(NOT_A_VALUE)).alias(c)
            for c, condition in valid.items() if condition is not None and c in frame.columns]


def redact_line(text: str, field: int, delimiter: str | None, key: bytes, *, expected: int | None = None) -> str:
    """A rejected line with its device-id field replaced by the pseudonym; withheld whole when it cannot be split, or has
    another number of fields than the header (a shifted line's id is in another field), or is no CSV (``delimiter``
    None: a JSON Lines line that is no JSON object has no field to find the id in, and splitting it at commas would
    leave the id in place)."""
    if delimiter is None:
        return WITHHELD
    try:
        parts = next(csv.reader([text], delimiter=delimiter))
    except (csv.Error, StopIteration):
        return WITHHELD
    if field >= len(parts) or (expected is not None and len(parts) != expected):
        return WITHHELD
    parts[field] = f"pseudonym:{pseudonym(parts[field], key)}" if parts[field].strip() else ""
    return delimiter.join(parts)


__all__ = ["OPTIONAL", "REQUIRED", "ingest_pings", "parse_mapping", "read_pings", "validate_pings"]
