"""A table as the response a client asked for: JSON (default), CSV, Parquet or Arrow IPC (``?format=`` or the Accept
header)."""

from __future__ import annotations

import datetime as dt
import io
import json
from decimal import Decimal

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from starlette.responses import Response

MEDIA = {"json": "application/json", "csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet",
         "arrow": "application/vnd.apache.arrow.stream"}
ACCEPTED = {"text/csv": "csv", "application/vnd.apache.parquet": "parquet", "application/vnd.apache.arrow.stream": "arrow"}


class BadFormat(ValueError):
    pass


def chosen_format(asked: str | None, accept: str | None) -> str:
    if asked:
        if asked not in MEDIA:
            raise BadFormat(f"format {asked!r} is not offered; use one of {', '.join(MEDIA)}")
        return asked
    for media, name in ACCEPTED.items():
        if accept and media in accept:
            return name
    return "json"


def table_response(table: pa.Table, fmt: str, /, *, note: str | None = None) -> Response:
    headers = {"X-Citylake-Rows": str(table.num_rows)}
    if note:
        headers["X-Citylake-Note"] = note.encode("ascii", "replace").decode()
    if fmt == "json":
        body = {"columns": table.column_names, "rows": [_plain(row) for row in table.to_pylist()], "note": note}
        return Response(json.dumps(body, default=_json_value), media_type=MEDIA["json"], headers=headers)
    sink = io.BytesIO()
    if fmt == "csv":
        pa_csv.write_csv(table, sink)
    elif fmt == "parquet":
        pq.write_table(table, sink)
    else:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    return Response(sink.getvalue(), media_type=MEDIA[fmt], headers=headers)


def _plain(row: dict) -> dict:
    return {name: _json_value(value) if isinstance(value, dt.date | dt.datetime | bytes | Decimal) else value
            for name, value in row.items()}


def _json_value(value):
    if isinstance(value, Decimal):  # DuckDB's sums of integers are HUGEINT/DECIMAL: JSON numbers all the same
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)
