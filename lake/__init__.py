"""The lake: Delta tables of city data, their schemas, maintenance and engine access."""

from __future__ import annotations

from lake.engines import connect, create_views, duckdb_for, scan
from lake.errors import (
    BadWriteMode,
    ExtensionMissing,
    LakeError,
    LakeNotFound,
    NoSuchVersion,
    SchemaMismatch,
    TableNotEmpty,
    UnknownTable,
)
from lake.lake import DEFAULT_CELL_RES, DEFAULT_PARTITION_RES, Lake, TableStats
from lake.schemas import TABLES, TableSpec

__all__ = [
    "BadWriteMode", "DEFAULT_CELL_RES", "DEFAULT_PARTITION_RES", "ExtensionMissing", "Lake", "LakeError",
    "LakeNotFound", "NoSuchVersion", "SchemaMismatch", "TABLES", "TableNotEmpty", "TableSpec", "TableStats",
    "UnknownTable", "connect", "create_views", "duckdb_for", "scan",
]
