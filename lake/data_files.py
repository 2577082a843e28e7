"""Data files written apart from their commit: many processes (Dask workers) each write a table's Parquet files, and
one client names them all in a single Delta commit (``Lake.commit_files``). Until that commit no reader sees them; a
run that dies before it leaves files no version names, which ``Lake.vacuum`` removes.

Each file carries the statistics Delta readers skip files by (row count, NULLs, min and max), computed here from the
rows; times are widened to whole milliseconds (the log's precision), so a bound never excludes a row the file holds.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import time
import uuid
from typing import TYPE_CHECKING

import deltalake
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from citylake.lake.lake import Lake

UTC = dt.timezone.utc


def write_data_files(lake: Lake, name: str, rows: pl.DataFrame, /, *, tag: str) -> list[deltalake.transaction.AddAction]:
    """Write ``rows`` (conformed, sorted, with the table's partition columns) as one Parquet file per partition of
    ``name``; the Delta add actions that would put them in the table. ``tag`` names the run in the files' names."""
    spec = lake.spec(name)
    schema = lake.table(name).schema().to_arrow()
    data_schema = pa.schema([pa.field(f.name, f.type, f.nullable) for f in pa.schema(schema) if f.name not in spec.partition_by])
    private = spec.zone == "steward"
    adds = []
    for part in rows.partition_by(list(spec.partition_by), maintain_order=True, include_key=False, as_dict=True).items():
        values, frame = part
        partition = {column: _partition_text(value) for column, value in zip(spec.partition_by, values)}
        relative = "/".join(f"{c}={v}" for c, v in partition.items()) + f"/part-{tag}-{uuid.uuid4().hex}.parquet"
        body = parquet_bytes(frame.to_arrow().select(data_schema.names).cast(data_schema), spec.compression)
        lake.location.write_bytes(f"{lake.relative(name)}/{relative}", body, private=private)
        adds.append(deltalake.transaction.AddAction(relative, len(body), partition, int(time.time() * 1000), True,
                                                    json.dumps(file_stats(frame))))
    return adds


def _partition_text(value: object) -> str:
    return value.isoformat() if isinstance(value, dt.date) else str(value)


def parquet_bytes(table: pa.Table, compression: str) -> bytes:
    """``table`` as the bytes of a Parquet file (``compression`` as the table specs name it, e.g. UNCOMPRESSED, lz4)."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression=compression.lower() if compression != "UNCOMPRESSED" else "none")
    return sink.getvalue()


def file_stats(frame: pl.DataFrame) -> dict:
    """A file's Delta statistics: numRecords, and nullCount, minValues, maxValues of its columns (none for a column
    with NaN, which a bound cannot describe)."""
    stats: dict = {"numRecords": frame.height, "minValues": {}, "maxValues": {}, "nullCount": {}}
    for column in frame.columns:
        values = frame[column]
        stats["nullCount"][column] = values.null_count()
        present = values.drop_nulls()
        if not present.len() or (present.dtype.is_float() and present.is_nan().any()):
            continue
        low, high = present.min(), present.max()
        if isinstance(low, dt.datetime):
            low, high = _millis(low, up=False), _millis(high, up=True)
        elif isinstance(low, dt.date):
            low, high = low.isoformat(), high.isoformat()
        elif not isinstance(low, (int, float, str, bool)):
            continue
        stats["minValues"][column], stats["maxValues"][column] = low, high
    return stats


def _millis(moment: dt.datetime, *, up: bool) -> str:
    """A time as the log writes it, in whole milliseconds (rounded up for a maximum, down for a minimum)."""
    epoch_us = (moment.astimezone(UTC) - dt.datetime(1970, 1, 1, tzinfo=UTC)) // dt.timedelta(microseconds=1)
    millis = -(-epoch_us // 1000) if up else epoch_us // 1000
    return (dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(milliseconds=millis)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
