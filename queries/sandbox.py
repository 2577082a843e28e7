"""The analyst SQL workspace: DuckDB that sees the shareable tables and nothing else.

Two locks, each enough for what it guards:
- DuckDB's own: only the shareable tables' directories may be read (``allowed_directories``),
  every other file access is off (``enable_external_access = false``) and the configuration
  is locked, so no statement can reopen it. Raw pings and the quarantine (which holds raw
  input text) are not among them: not as views, not through ``read_parquet`` on their path.
- Ours: only SELECT and EXPLAIN statements run, so nothing is written, attached, installed,
  loaded or set — DuckDB would still let COPY write *into* an allowed directory.

The steward role (whoever holds the pseudonym key; ``citylake.privacy`` decides) gets a plain connection that sees everything.
"""

from __future__ import annotations

import duckdb

from citylake.lake import Lake, connect, create_views, duckdb_for
from citylake.privacy import ANALYST, STEWARD, Refused, check_role
from citylake.privacy import STEWARD_ONLY_TABLES as HIDDEN_FROM_ANALYSTS

READ_ONLY = (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN)
__all__ = ["Refused", "Workspace"]


class Workspace:
    """SQL over the lake for one role. Use ``Workspace(lake).sql("SELECT …")``."""

    def __init__(self, lake: Lake, /, *, role: str = ANALYST, as_of: str | None = None, **connect_options: object) -> None:
        self.lake, self.role = lake, check_role(role)
        if role == STEWARD:
            self.con = duckdb_for(lake, as_of=as_of, **connect_options)
            return
        self.tables = [name for name in lake.names if name not in HIDDEN_FROM_ANALYSTS]
        self.con = connect(**connect_options)  # type: ignore[arg-type]
        create_views(self.con, lake, as_of=as_of, tables=self.tables)
        self._lock()

    def _lock(self) -> None:
        readable = [str(self.lake.path(name).resolve()) + "/" for name in self.tables]
        self.con.execute("SET allowed_directories = ?", [readable])
        self.con.execute("SET enable_external_access = false")
        self.con.execute("SET allow_community_extensions = false")
        self.con.execute("SET lock_configuration = true")

    def sql(self, query: str, /) -> duckdb.DuckDBPyRelation | None:
        """Run ``query``; for analysts, only SELECT and EXPLAIN statements are accepted."""
        if self.role == ANALYST:
            for statement in self.con.extract_statements(query):
                if statement.type not in READ_ONLY:
                    raise Refused(
                        f"{statement.type.name} statements are not allowed in the analyst workspace: it is read-only "
                        "(SELECT and EXPLAIN); the lake changes only through `citylake ingest` and `citylake maintain`"
                    )
        try:
            return self.con.sql(query)
        except duckdb.CatalogException as err:
            hidden = [t for t in HIDDEN_FROM_ANALYSTS if t in str(err)] if self.role == ANALYST else []
            if hidden:
                raise Refused(f"{hidden[0]} is not visible to analysts: it holds personal data or raw input; "
                              "use aggregate queries (`citylake query footfall`) or the steward role") from None
            raise
