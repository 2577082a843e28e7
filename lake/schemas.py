"""The lake's tables: explicit Arrow schemas, partitioning, sort order and dedupe keys.

Conventions (docs/design.md, Tables): WGS84 coordinates; UTC microsecond timestamps; H3 cells as
int64 (Delta has no unsigned type, and a valid cell's top bit is always 0). Column
metadata carries what a reader needs to interpret a column: the geometry column's CRS
and encoding, and each cell column's H3 resolution.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

CRS = "EPSG:4326"
TIMESTAMP = pa.timestamp("us", tz="UTC")
BBOX = pa.struct([("xmin", pa.float64()), ("ymin", pa.float64()), ("xmax", pa.float64()), ("ymax", pa.float64())])
PARTITION_CELL, PARTITION_DATE = "partition_cell", "date"


@dataclass(frozen=True)
class TableSpec:
    """What the lake knows about one table."""

    name: str
    fields: tuple[pa.Field, ...]
    description: str
    partition_by: tuple[str, ...] = ()
    sort_by: tuple[str, ...] = ()
    key: tuple[str, ...] = ()  # rows with equal key are the same row: reruns must not add it twice
    people: bool = False  # holds data about people: raw rows for the steward role only
    zone: str = "shared"  # steward (raw people data, raw input, bookkeeping), shared (registries, readings), release (DP releases)
    cell_columns: tuple[str, ...] = field(default=("h3_cell",))
    compression: str = "SNAPPY"  # of its Parquet pages, after dictionary and run-length encoding

    @property
    def partitioned_by_cell(self) -> bool:
        return PARTITION_CELL in self.partition_by

    def schema(self, *, cell_res: int, partition_res: int) -> pa.Schema:
        """Arrow schema with the H3 resolutions recorded on the cell columns."""
        out = []
        for f in self.fields:
            if f.name in self.cell_columns:
                f = f.with_metadata({"h3_resolution": str(cell_res)})
            elif f.name == PARTITION_CELL:
                f = f.with_metadata({"h3_resolution": str(partition_res)})
            out.append(f)
        return pa.schema(out)


def _f(name: str, type_: pa.DataType, nullable: bool = True, **metadata: str) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata=metadata or None)


_GEOMETRY = _f("geometry", pa.binary(), False, crs=CRS, encoding="WKB")
_PARTITION = (_f(PARTITION_CELL, pa.int64(), False), _f(PARTITION_DATE, pa.date32(), False))

def _alert_fields() -> tuple[pa.Field, ...]:
    """An alert episode, as the steward's exact table and the released one both keep it."""
    return (_f("alert_id", pa.string(), False), _f("kind", pa.string(), False), _f("place_id", pa.string()),
            _f("sensor_ids", pa.string()), _f("start", TIMESTAMP, False), _f("end", TIMESTAMP, False),
            _f("status", pa.string(), False), _f("severity", pa.string(), False), _f("evidence", pa.string(), False),
            _f("revision", pa.int64(), False), _f("updated_at", TIMESTAMP, False))


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            "places",
            (
                _f("place_id", pa.string(), False),
                _f("name", pa.string()),
                _f("category", pa.string(), False),
                _GEOMETRY,
                _f("bbox", BBOX, False),
                _f("h3_cell", pa.int64(), False),
                _f("source", pa.string(), False),
                _f("attributes", pa.string()),
                _f("loaded_at", TIMESTAMP, False),
            ),
            "Places from map data (POIs, parks, districts, roads, buildings); h3_cell is the centroid's cell.",
            key=("place_id",),
        ),
        TableSpec(
            "place_cells",
            (
                _f("place_id", pa.string(), False),
                _f("h3_cell", pa.int64(), False),
                _f("interior", pa.bool_(), False),
            ),
            "H3 cover of each place; interior cells lie wholly inside it, boundary cells need an exact test.",
            sort_by=("h3_cell",),
            key=("place_id", "h3_cell"),
        ),
        TableSpec(
            "sensors",
            (
                _f("sensor_id", pa.string(), False),
                _f("kind", pa.string(), False),
                _f("unit", pa.string()),
                _f("lat", pa.float64(), False),
                _f("lon", pa.float64(), False),
                _f("h3_cell", pa.int64(), False),
                _f("place_id", pa.string()),
                _f("attributes", pa.string()),
                _f("loaded_at", TIMESTAMP, False),
            ),
            "IoT sensor registry; place_id is the containing or nearest place.",
            key=("sensor_id",),
        ),
        TableSpec(
            "readings",
            (
                _f("sensor_id", pa.string(), False),
                _f("ts", TIMESTAMP, False),
                _f("metric", pa.string(), False),
                _f("value", pa.float64(), False),
                _f("h3_cell", pa.int64(), False),
                *_PARTITION,
            ),
            "Sensor readings, partitioned by coarse H3 cell and UTC date, sorted by cell then time.",
            partition_by=(PARTITION_CELL, PARTITION_DATE),
            sort_by=("h3_cell", "ts"),
            key=("sensor_id", "ts", "metric"),
        ),
        TableSpec(
            "pings",
            (
                _f("device_id", pa.int64(), False),  # keyed-hash pseudonym, never the raw id
                _f("ts", TIMESTAMP, False),
                _f("lat", pa.float64(), False),
                _f("lon", pa.float64(), False),
                _f("accuracy_m", pa.float32()),
                _f("h3_cell", pa.int64(), False),
                *_PARTITION,
            ),
            "Anonymised device pings, partitioned by coarse H3 cell and UTC date, sorted by cell then time.",
            partition_by=(PARTITION_CELL, PARTITION_DATE),
            sort_by=("h3_cell", "ts"),
            key=("device_id", "ts", "lat", "lon"),
            people=True,
            zone="steward",
            # Every query reads it whole. Dictionaries already shrink what repeats (devices, cells, times); on top of
            # them Snappy saved 11-13% of the bytes and doubled the time to read them (10M pings: 0.10 -> 0.21 s).
            compression="UNCOMPRESSED",
        ),
        TableSpec(
            "stays",
            (
                _f("device_id", pa.int64(), False),
                _f("place_id", pa.string(), False),
                _f("start", TIMESTAMP, False),
                _f("end", TIMESTAMP, False),
                _f("duration_s", pa.float64(), False),
                _f("pings", pa.int64(), False),
                _f("max_gap_s", pa.int64(), False),
                _f("min_dwell_s", pa.int64(), False),
                _f("computed_at", TIMESTAMP, False),
            ),
            "Derived: stays of devices in places (runs of consecutive pings inside a place), with the parameters that made them.",
            key=("device_id", "place_id", "start", "max_gap_s", "min_dwell_s"),
            people=True,
            zone="steward",
            cell_columns=(),
        ),
        TableSpec(
            "footfall_hourly",
            (
                _f("place_id", pa.string(), False),
                _f("name", pa.string()),
                _f("category", pa.string(), False),
                _f("bucket", TIMESTAMP, False),
                _f("devices", pa.int64(), False),
                _f("release_id", pa.string(), False),
                _f("computed_at", TIMESTAMP, False),
            ),
            "Release: distinct devices per place per hour with differentially private noise; rows under the release's threshold "
            "are not shown (see the releases table for epsilon, bounds and threshold).",
            key=("place_id", "bucket"),
            cell_columns=(),
            zone="release",
        ),
        TableSpec(
            "footfall_cells_hourly",
            (
                _f("h3_cell", pa.int64(), False),
                _f("bucket", TIMESTAMP, False),
                _f("devices", pa.int64(), False),
                _f("release_id", pa.string(), False),
                _f("computed_at", TIMESTAMP, False),
            ),
            "Release: distinct devices per H3 cell (the release's cell resolution) per hour with differentially private noise.",
            key=("h3_cell", "bucket"),
            cell_columns=(),
            zone="release",
        ),
        TableSpec(
            "od_daily",
            (
                _f("origin", pa.string(), False),
                _f("destination", pa.string(), False),
                _f("bucket", TIMESTAMP, False),
                _f("devices", pa.int64(), False),
                _f("release_id", pa.string(), False),
                _f("computed_at", TIMESTAMP, False),
            ),
            "Release: devices that travelled between two districts (consecutive stays) per day, with differentially private noise.",
            key=("origin", "destination", "bucket"),
            cell_columns=(),
            zone="release",
        ),
        TableSpec(
            "alerts",
            _alert_fields(),
            "Live alerts from `citylake watch`, judged on exact counts: one row per episode (crowd surge, sensor fault, "
            "traffic drop), updated as it grows and closed when it ends; crowds k-anonymous, so the steward's.",
            key=("alert_id",),
            cell_columns=(),
            zone="steward",
        ),
        TableSpec(
            "alerts_released",
            _alert_fields(),
            "Release: the live alerts everyone may read. Sensor faults and traffic drops as `citylake watch` raised them (they "
            "are about things); crowd surges from a differentially private test (the sparse vector technique), never a count.",
            key=("alert_id",),
            cell_columns=(),
            zone="release",
        ),
        TableSpec(
            "detections",
            (
                _f("detection_id", pa.string(), False),
                _f("kind", pa.string(), False),
                _f("place_id", pa.string()),
                _f("sensor_ids", pa.string()),
                _f("start", TIMESTAMP, False),
                _f("end", TIMESTAMP, False),
                _f("peak", TIMESTAMP, False),
                _f("peak_z", pa.float64()),
                _f("severity", pa.string(), False),
                _f("evidence", pa.string(), False),
                _f("computed_at", TIMESTAMP, False),
            ),
            "Batch detections (`citylake detect`, reports): crowd surges, traffic drops, unusual readings and sensor faults, "
            "one row per episode; learned from exact counts, so the steward's (k-anonymous: no crowd under k).",
            key=("detection_id",),
            cell_columns=(),
            zone="steward",
        ),
        TableSpec(
            "releases",
            (
                _f("release_id", pa.string(), False),
                _f("day", pa.date32(), False),
                _f("table_name", pa.string(), False),
                _f("mechanism", pa.string(), False),
                _f("epsilon", pa.float64(), False),
                _f("delta", pa.float64(), False),
                _f("noise_scale", pa.float64(), False),
                _f("bounds", pa.string(), False),
                _f("threshold", pa.int64(), False),
                _f("computed_at", TIMESTAMP, False),
            ),
            "What each release of each day is: its mechanism, epsilon and delta, noise scale, contribution bounds and threshold.",
            key=("day", "table_name"),
            cell_columns=(),
            zone="release",
        ),
        TableSpec(
            "privacy_ledger",
            (
                _f("release_id", pa.string(), False),
                _f("day", pa.date32(), False),
                _f("table_name", pa.string(), False),
                _f("epsilon", pa.float64(), False),
                _f("delta", pa.float64(), False),
                _f("recorded_at", TIMESTAMP, False),
            ),
            "The privacy budget spent: one row per release of one table and day, kept when a release is replaced (it was seen).",
            key=("release_id", "day", "table_name"),
            cell_columns=(),
            zone="steward",
        ),
        TableSpec(
            "quarantine",
            (
                _f("batch_id", pa.string(), False),
                _f("table_name", pa.string(), False),
                _f("source", pa.string(), False),
                _f("row_number", pa.int64()),
                _f("raw", pa.string()),
                _f("reason", pa.string(), False),
                _f("quarantined_at", TIMESTAMP, False),
            ),
            "Every rejected input row with its source, position, raw text (device ids pseudonymised) and the reason.",
            key=("batch_id", "row_number"),
            cell_columns=(),
            zone="steward",
        ),
        TableSpec(
            "batches",
            (
                _f("batch_id", pa.string(), False),
                _f("table_name", pa.string(), False),
                _f("source", pa.string(), False),
                _f("fingerprint", pa.string(), False),
                _f("rows_in", pa.int64(), False),
                _f("rows_accepted", pa.int64(), False),
                _f("rows_rejected", pa.int64(), False),
                _f("rows_duplicate", pa.int64(), False),
                _f("version", pa.int64()),
                _f("started_at", TIMESTAMP, False),
                _f("finished_at", TIMESTAMP, False),
            ),
            "One row per ingestion run and chunk: source fingerprint, row counts and the commit version.",
            key=("batch_id", "started_at"),
            cell_columns=(),
            zone="steward",  # input file paths
        ),
    )
}
