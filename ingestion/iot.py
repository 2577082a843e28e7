"""IoT feed: the sensor registry into ``sensors``, readings into ``readings``.

Readings come from files (CSV, JSON Lines, Parquet) or live from an MQTT broker (see
``ingestion.mqtt``). A reading of a sensor the registry does not know is quarantined, not
dropped: register the sensor and re-ingest the file.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
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
    fingerprint,
    fingerprint_soon,
    run,
    validated,
)
from citylake.ingestion.errors import UnreadableInput
from citylake.ingestion.textfile import DEFAULT_BATCH_ROWS, RawChunk, chunks, columns, parquet_rows
from citylake.lake import Lake, registry

SENSOR_REQUIRED = ("sensor_id", "kind", "lat", "lon")
SENSOR_OPTIONAL = ("unit", "place_id")
READING_REQUIRED = ("sensor_id", "ts", "metric", "value")
SENSOR_FIX = "name the registry's columns so in the file (ingest sensors takes no --map)"


# --- sensors ------------------------------------------------------------------------------------


def read_sensors(path: str | Path, /, *, lake: Lake | None = None, cell_res: int = 11) -> tuple[pa.Table, pl.DataFrame]:
    """Valid sensors of a registry file (CSV, Parquet, GeoJSON) and the rejected rows."""
    parts = list(_sensor_chunks(Path(path), lake=lake, cell_res=cell_res))
    return pa.concat_tables([p.good for p in parts]), pl.concat([p.bad for p in parts])


def ingest_sensors(lake: Lake, path: str | Path, /, *, progress: bool = False) -> IngestReport:
    """Add or update sensors (by sensor_id) from a registry file."""
    path = Path(path)
    parts = _sensor_chunks(path, lake=lake, cell_res=lake.cell_res)
    writer = BatchWriter(lake, "sensors", str(path), fingerprint(path), registry=True)
    return run(writer, parts, total_bytes=path.stat().st_size, progress=progress)


def _sensor_chunks(path: Path, *, lake: Lake | None, cell_res: int) -> Iterator[Chunk]:
    """The file's validated chunks; a header without the required columns is refused now, before any chunk is read."""
    if path.suffix.lower() in (".geojson", ".json"):
        raws = [_geojson_points(path)]
        V.check_columns(raws[0].rows.column_names, {}, str(path), SENSOR_REQUIRED, fix=SENSOR_FIX)
    else:
        V.check_columns(columns(path), {}, str(path), SENSOR_REQUIRED, fix=SENSOR_FIX)
        raws = chunks(path, batch_rows=DEFAULT_BATCH_ROWS)
    return (_validate_sensors(raw, str(path), lake=lake, cell_res=cell_res) for raw in raws)


def _geojson_points(path: Path) -> RawChunk:
    """A registry's rows from GeoJSON Point features; any other feature is set aside with the reason, at its position."""
    try:
        document = json.loads(path.read_bytes())
        features = document["features"]
    except (ValueError, KeyError, TypeError):
        raise UnreadableInput(str(path), "not a GeoJSON FeatureCollection") from None
    if not isinstance(features, list):
        raise UnreadableInput(str(path), "not a GeoJSON FeatureCollection (its features are not a list)")
    rows, rejected = [], []
    for i, feature in enumerate(features, start=1):
        row, why = _point_row(feature)
        if row is None:
            rejected.append((i, json.dumps(feature)[:10_000], why, "not a point"))
            continue
        rows.append({**row, "_position": i})
    names = sorted({k for r in rows for k in r} - {"_position"})
    table = pa.table({n: pa.array([r.get(n) for r in rows], pa.string()) for n in names})
    return RawChunk(table, np.array([r["_position"] for r in rows], dtype=np.int64), rejected, path.stat().st_size)


def _point_row(feature) -> tuple[dict | None, str]:
    """A Point feature's properties and lat, lon as text (as a CSV row reads), or None and why it is no such feature."""
    if not isinstance(feature, dict):
        return None, f"is {type(feature).__name__}, not a GeoJSON Feature object"
    geometry = feature.get("geometry")
    kind = geometry.get("type") if isinstance(geometry, dict) else None
    if kind != "Point":
        return None, f"geometry is {kind}, not a Point"
    coordinates = geometry.get("coordinates")
    if not isinstance(coordinates, list) or len(coordinates) < 2:
        return None, f"the Point's coordinates {json.dumps(coordinates)[:100]} are not [lon, lat]"
    properties = feature.get("properties") or {}
    if not isinstance(properties, dict):
        return None, "its properties are not a JSON object"
    row = {k: _as_text(v) for k, v in properties.items()} | {"lon": _as_text(coordinates[0]), "lat": _as_text(coordinates[1])}
    try:  # a lone surrogate (the escape \\ud800, or its bytes) reads as JSON but is no text: Arrow cannot hold it
        "".join(k + (v or "") for k, v in row.items()).encode("utf-8")
    except UnicodeEncodeError:
        return None, "holds a lone surrogate (\\uD800-\\uDFFF), which is not text"
    return row, ""


def _as_text(value) -> str | None:
    """A JSON value as a CSV field reads: strings as they are, other values as JSON text (nested ones too)."""
    return None if value is None else value if isinstance(value, str) else json.dumps(value)


def _validate_sensors(raw: RawChunk, source: str, *, lake: Lake | None, cell_res: int) -> Chunk:
    extra = [c for c in raw.rows.column_names if c not in (*SENSOR_REQUIRED, *SENSOR_OPTIONAL)]
    attributes = _attributes_json(raw.rows, extra)
    rows = V.rename(raw.rows, {}, source, SENSOR_REQUIRED, SENSOR_OPTIONAL, fix=SENSOR_FIX).append_column("attributes", attributes)
    frame = pl.from_arrow(rows).with_columns(pl.Series(V.POSITION, raw.positions), *V.typed_numbers(["lat", "lon"]))
    good, bad = V.split(frame, [*V.required(["sensor_id", "kind"]), *V.coordinates()])
    lat, lon = pl.col("_lat"), pl.col("_lon")
    good = good.select(
        V.text("sensor_id").alias("sensor_id"), V.text("kind").alias("kind"),
        (V.text("unit") if "unit" in good.columns else pl.lit(None, pl.String)).alias("unit"),
        lat.alias("lat"), lon.alias("lon"), pl.col("attributes"),
        (V.text("place_id") if "place_id" in good.columns else pl.lit(None, pl.String)).alias("place_id"),
    )
    cells = latlng_to_cells(good["lat"].to_numpy(), good["lon"].to_numpy(), cell_res)
    places = registry.place_of(lake, good["lat"].to_numpy(), good["lon"].to_numpy()) if lake is not None else [None] * good.height
    good = good.with_columns(
        pl.Series("h3_cell", cells),
        pl.coalesce(pl.col("place_id"), pl.Series("found", places, dtype=pl.String)).alias("place_id"),
        pl.lit(dt.datetime.now(dt.timezone.utc)).dt.cast_time_unit("us").alias("loaded_at"),
    )
    bad = pl.concat([V.unreadable(raw.rejected), bad]) if raw.rejected else bad
    return Chunk(good.to_arrow(), bad, raw.rows_in, raw.bytes_done)


def _attributes_json(rows: pa.Table, columns: list[str]) -> pa.Array:
    if not columns:
        return pa.nulls(rows.num_rows, pa.string())
    records = rows.select(columns).to_pylist()
    return pa.array([json.dumps({k: v for k, v in r.items() if v not in (None, "")}) for r in records], pa.string())


# --- readings -----------------------------------------------------------------------------------


def sensor_cells(lake: Lake) -> pl.DataFrame:
    """sensor_id → h3_cell of every registered sensor."""
    return registry.sensors(lake, columns=("sensor_id", "h3_cell"))


def ingest_readings(
    lake: Lake, path: str | Path, /, *, mapping: Mapping[str, str] | None = None, tz: str = "UTC", delimiter: str | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS, progress: bool = False, now: dt.datetime | None = None, earliest: dt.date = V.EARLIEST,
    buffer_mb: int = DEFAULT_BUFFER_MB, compact: bool = True,
) -> IngestReport:
    """Ingest a readings file (CSV, JSON Lines, Parquet): exactly once, bad rows quarantined (times before ``earliest`` too); the run's
    files are merged per partition at its end unless ``compact=False``. A Parquet file of more than ``STAGED_ABOVE_ROWS``
    rows is staged and settled in this process instead (``ingestion.fanout``), as ``ingest_pings`` does."""
    path = Path(path)
    V.check_timezone(tz)
    if (parquet_rows(path) or 0) > STAGED_ABOVE_ROWS:
        from citylake.ingestion.fanout import READINGS, ingest_in_process  # fanout checks rows with this module's functions

        return ingest_in_process(lake, path, READINGS, progress=progress, key=None, mapping=mapping, tz=tz, batch_rows=batch_rows,
                                 now=now, earliest=earliest)
    V.check_columns(columns(path, delimiter=delimiter), mapping or {}, str(path), READING_REQUIRED)
    writer = BatchWriter(lake, "readings", str(path), fingerprint_soon(path), one_run=True, buffer_mb=buffer_mb)
    known = sensor_cells(lake)
    window = V.time_window(earliest, now)
    parts = validated(chunks(path, batch_rows=batch_rows, delimiter=delimiter),
                      lambda raw: validate_readings(raw, str(path), known=known, mapping=mapping or {}, tz=tz, window=window))
    return run(writer, parts, total_bytes=path.stat().st_size, progress=progress, compact=compact)


def validate_readings(
    raw: RawChunk, source: str, *, known: pl.DataFrame, mapping: Mapping[str, str], tz: str, window: V.TimeWindow
) -> Chunk:
    """Check readings and attach each sensor's cell; unknown sensors are rejected with the fix."""
    rows = V.rename(raw.rows, mapping, source, READING_REQUIRED, ())
    frame = pl.from_arrow(rows).with_columns(pl.Series(V.POSITION, raw.positions), V.text("sensor_id").alias("sensor_id"))
    frame = frame.join(known, on="sensor_id", how="left", maintain_order="left")
    schema = frame.schema
    frame = frame.with_columns(V.timestamps(frame["ts"], tz).alias("_ts"), *V.typed_numbers(["value"], schema))
    checks = [
        *V.required(["sensor_id", "metric"]),
        V.Check(pl.col("h3_cell").is_null(), pl.format("sensor {} is not in the registry; ingest it with `citylake ingest sensors`",
                                                      pl.col("sensor_id")), "unknown sensor"),
        *V.timestamp_checks("ts", "_ts", window=window, schema=schema),
        *V.numeric("value", schema=schema),
    ]
    good, bad = V.split(frame, checks, raw_columns=list(READING_REQUIRED))
    good = good.select(
        pl.col("sensor_id"), pl.col("_ts").alias("ts"), V.text("metric").alias("metric"), pl.col("_value").alias("value"), pl.col("h3_cell")
    )
    bad = pl.concat([V.unreadable(raw.rejected), bad]) if raw.rejected else bad
    return Chunk(good.to_arrow(), bad, raw.rows_in, raw.bytes_done)
