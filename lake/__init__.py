"""The lake: Delta tables of city data, their schemas, maintenance and engine access."""

from __future__ import annotations

if __name__ != "citylake.lake":  # this folder installs as citylake.lake; a checkout on sys.path must not make it `lake`
    raise ImportError(f"import citylake.lake, not {__name__}: citylake's rooms are subpackages of citylake")

from citylake.lake.changes import Added, added_since, read_added
from citylake.lake.engines import connect, create_views, duckdb_for, scan
from citylake.lake.errors import (
    BadLakeFile,
    BadTimezone,
    BadWriteMode,
    DiskFull,
    ExtensionMissing,
    LakeError,
    LakeNotFound,
    LocalOnly,
    NoSuchVersion,
    NotALakeDirectory,
    NotWritable,
    SchemaMismatch,
    StorageRefused,
    StorageUnreachable,
    TableMoved,
    TableNotEmpty,
    UnknownTable,
)
from citylake.lake.history import commit_summary
from citylake.lake.lake import DEFAULT_CELL_RES, DEFAULT_PARTITION_RES, Lake, TableStats, check_timezone
from citylake.lake.schemas import TABLES, TableSpec
from citylake.lake.storage import Storage

__all__ = [
    "Added", "added_since", "read_added", "BadLakeFile", "BadTimezone", "BadWriteMode",
    "DEFAULT_CELL_RES", "DEFAULT_PARTITION_RES", "DiskFull", "ExtensionMissing", "Lake", "LakeError",
    "LakeNotFound", "LocalOnly", "NoSuchVersion", "NotALakeDirectory", "NotWritable", "SchemaMismatch",
    "Storage", "StorageRefused", "StorageUnreachable", "TABLES", "TableMoved", "TableNotEmpty", "TableSpec",
    "TableStats", "UnknownTable", "check_timezone", "commit_summary", "connect", "create_views", "duckdb_for", "scan",
]
