"""The Python API: open a lake with the settings in force and query it.

    >>> import citylake
    >>> lake = citylake.open_lake("citylake-data")
    >>> citylake.sql(lake, "SELECT count(*) FROM pings").fetchall()
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

from citylake import settings as S
from lake import Lake, duckdb_for, scan


def init_lake(path: str | Path | None = None, /, *, settings: S.Settings | None = None) -> Lake:
    """Create a lake (or complete a partial one) with the configured resolutions."""
    settings = settings or S.load()
    return Lake.init(
        path or settings["lake"],
        cell_res=settings["h3.cell_resolution"],
        partition_res=settings["h3.partition_resolution"],
    )


def open_lake(path: str | Path | None = None, /, *, settings: S.Settings | None = None) -> Lake:
    """Open an existing lake (``path``, else the ``lake`` setting)."""
    settings = settings or S.load()
    return Lake.open(path or settings["lake"])


def connect(lake: Lake, /, *, as_of: str | None = None, settings: S.Settings | None = None) -> duckdb.DuckDBPyConnection:
    """DuckDB over the lake: spatial and H3 SQL functions, one view per table."""
    settings = settings or S.load()
    return duckdb_for(
        lake,
        as_of=as_of,
        extension_dir=settings["duckdb.extension_directory"],
        memory_limit=settings["duckdb.memory_limit"] or None,
        threads=settings["duckdb.threads"] or None,
    )


def workspace(lake: Lake, /, *, role: str = "analyst", as_of: str | None = None, settings: S.Settings | None = None):
    """The SQL workspace for a role: analysts read-only without personal data; stewards (key holders) everything."""
    from ingestion.pseudonym import load_key
    from queries.sandbox import STEWARD, Workspace

    settings = settings or S.load()
    if role == STEWARD:
        load_key(settings["privacy.pseudonym_key_file"])  # only the key's holder is a steward
    return Workspace(lake, role=role, as_of=as_of, extension_dir=settings["duckdb.extension_directory"],
                     memory_limit=settings["duckdb.memory_limit"] or None, threads=settings["duckdb.threads"] or None)


def sql(lake: Lake, query: str, /, *, role: str = "analyst", as_of: str | None = None) -> duckdb.DuckDBPyRelation | None:
    """Run SQL in the workspace of ``role`` (analyst by default)."""
    return workspace(lake, role=role, as_of=as_of).sql(query)


def frame(lake: Lake, table: str, /, *, as_of: int | str | None = None) -> pl.LazyFrame:
    """A Polars LazyFrame over one table."""
    return scan(lake, table, as_of=as_of)
