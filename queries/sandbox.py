"""The analyst SQL workspace: DuckDB that sees the shared tables and the releases, and nothing else.

Three locks, each enough for what it guards:
- No files at all: the tables are handed to DuckDB as Arrow datasets read through the Delta log (the latest release;
  shared tables as of a time if asked), and the connection runs with ``enable_external_access = false`` and a locked
  configuration. No path is in the catalog, so none can appear in a plan, an error or a setting an analyst can read.
- Ours, before anything runs: only SELECT statements, and EXPLAIN of a SELECT (never EXPLAIN ANALYZE, which runs
  what it explains); no table function but ``range``/``generate_series``/``unnest`` (so no ``delta_scan``,
  ``read_parquet``, ``duckdb_settings()``); no catalog schemas or system tables; no ``current_setting``.
- Limits: every statement runs under a time limit (then it is cancelled), with a memory limit and a thread cap.

The steward role (whoever holds the lake's pseudonym key; ``citylake.privacy`` decides) gets a plain connection that
sees every table.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from citylake.lake import TABLES, Lake, connect, duckdb_for
from citylake.privacy import ANALYST, STEWARD, STEWARD_ONLY_TABLES, Refused, check_role
from citylake.queries.errors import QueryError

HIDDEN_FROM_ANALYSTS = STEWARD_ONLY_TABLES
TABLE_FUNCTIONS = {"range", "generate_series", "unnest"}  # make rows from their arguments; read nothing
HIDDEN_FUNCTIONS = {"current_setting", "getvariable"}  # show the connection's settings, which name directories
HIDDEN_SCHEMAS = {"information_schema", "pg_catalog", "system", "temp"}
SYSTEM_PREFIXES = ("duckdb_", "sqlite_", "pragma_", "pg_")  # pg_settings names directories, like duckdb_settings()
FILE_LIKE = re.compile(r"[./\\:*?~]")  # a table name with these is a file DuckDB would scan (its replacement scans), never a table
COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
EXPLAINED = re.compile(r"^\s*explain\s+(?P<inner>(select|with|from)\b.*)$", re.S | re.I)
__all__ = ["Limits", "QueryCancelled", "Refused", "Workspace"]


@dataclass(frozen=True)
class Limits:
    """What one analyst statement may use (settings sandbox.*)."""
    seconds: float = 60.0
    memory: str = "2GB"
    threads: int = 2


DEFAULT_LIMITS = Limits()


class QueryCancelled(QueryError, TimeoutError):
    """A statement that outran the workspace's time limit, or was cancelled (``Workspace.interrupt``)."""


class Workspace:
    """SQL over the lake for one role. Use ``Workspace(lake).query("SELECT …")`` (an Arrow table)."""

    def __init__(self, lake: Lake, /, *, role: str = ANALYST, as_of: str | None = None, limits: Limits = DEFAULT_LIMITS,
                 **connect_options: object) -> None:
        self.lake, self.role, self.limits = lake, check_role(role), limits
        self._interrupted = False
        if role == STEWARD:
            self.tables = lake.names
            self.con = duckdb_for(lake, as_of=as_of, **connect_options)
            return
        self.tables = [name for name in lake.readable_names if name not in HIDDEN_FROM_ANALYSTS]
        options = {**connect_options, "memory_limit": limits.memory, "threads": limits.threads}
        self.con = connect(**options)  # type: ignore[arg-type]
        for name in self.tables:  # a release is read as it is now: a replaced release is gone for readers
            pinned = as_of if TABLES[name].zone == "shared" else None
            self.con.register(name, _dataset(lake.table(name, as_of=pinned)))
        # a join's filter pushed into an Arrow scan compares plain strings with the string_view columns (no Arrow kernel)
        self.con.execute("SET disabled_optimizers = 'join_filter_pushdown'")
        for setting in ("enable_external_access = false", "allow_community_extensions = false", "lock_configuration = true"):
            self.con.execute(f"SET {setting}")

    def query(self, text: str, /) -> pa.Table | None:
        """Run ``text`` (one or more statements) and return the last one's rows; analysts' statements are checked first
        and run under the limits."""
        self._interrupted = False
        if self.role == STEWARD:
            try:
                result = self.con.sql(text)
                return None if result is None else result.to_arrow_table()
            except duckdb.InterruptException:
                raise QueryCancelled("the query was cancelled") from None
        checked = [self._checked(statement) for statement in self.con.extract_statements(text)]
        result = None
        for statement in checked:
            result = self._run(statement)
        return result

    def sql(self, text: str, /) -> duckdb.DuckDBPyRelation | None:
        """``query``, as a DuckDB relation (``.fetchall()``, ``.pl()``…)."""
        table = self.query(text)
        return None if table is None else self.con.from_arrow(table)

    def interrupt(self) -> None:
        """Cancel the statement running now (call it from another thread; the shell's Ctrl-C): it raises ``QueryCancelled``."""
        self._interrupted = True
        self.con.interrupt()

    def _checked(self, statement) -> str:
        """The statement's text if an analyst may run it; otherwise a refusal that says why."""
        if statement.type == duckdb.StatementType.EXPLAIN:
            explained = EXPLAINED.match(COMMENTS.sub(" ", statement.query))
            if not explained:
                raise Refused("only EXPLAIN of a SELECT runs in the analyst workspace (never EXPLAIN ANALYZE, which runs the "
                              "statement it explains)")
            return "EXPLAIN " + self._checked_select(explained["inner"])
        if statement.type != duckdb.StatementType.SELECT:
            raise Refused(f"{statement.type.name} statements are not allowed in the analyst workspace: it is read-only (SELECT "
                          "and EXPLAIN); the lake changes only through `citylake ingest`, `citylake publish` and `citylake maintain`")
        return self._checked_select(statement.query)

    def _checked_select(self, text: str) -> str:
        tree = json.loads(self.con.execute("SELECT json_serialize_sql(?)", [text]).fetchone()[0])
        if tree.get("error"):
            raise Refused("only plain SELECT queries run in the analyst workspace")
        for node in _nodes(tree):
            if node.get("type") == "TABLE_FUNCTION":
                name = str(node.get("function", {}).get("function_name", "")).lower()
                if name not in TABLE_FUNCTIONS:
                    raise Refused(f"table function {name}() is not available to analysts: the workspace reads the lake's "
                                  "tables only, by name (`.tables` lists them)")
            elif node.get("class") == "FUNCTION" and str(node.get("function_name", "")).lower() in HIDDEN_FUNCTIONS:
                raise Refused(f"{node['function_name']}() is not available to analysts")
            elif node.get("type") == "BASE_TABLE":
                self._check_table(str(node.get("schema_name", "")).lower(), str(node.get("table_name", "")).lower())
        return text

    def _check_table(self, schema: str, table: str) -> None:
        if table in HIDDEN_FROM_ANALYSTS:
            raise Refused(f"{table} is not visible to analysts: it holds personal data or raw input; people data reaches "
                          "analysts as releases (footfall_hourly, footfall_cells_hourly, od_daily, alerts_released)")
        if FILE_LIKE.search(table):
            raise Refused(f"{table!r} is not one of the lake's tables (the workspace reads no files); the tables are: "
                          f"{', '.join(self.tables)}")
        if schema in HIDDEN_SCHEMAS or table.startswith(SYSTEM_PREFIXES):
            raise Refused(f"the catalog ({schema or table}) is not available to analysts; the tables are: {', '.join(self.tables)}")

    def _run(self, statement: str) -> pa.Table | None:
        """One checked statement, cancelled when it outruns the time limit."""
        timer = threading.Timer(self.limits.seconds, self.con.interrupt)
        timer.start()
        try:
            result = self.con.execute(statement)
            return result.to_arrow_table() if result.description else None
        except duckdb.InterruptException:
            if self._interrupted:
                raise QueryCancelled("the query was cancelled") from None
            raise QueryCancelled(f"the query ran longer than the workspace's limit of {self.limits.seconds:g} s and was cancelled "
                                 "(setting sandbox.timeout_seconds); narrow it, or ask the steward") from None
        finally:
            timer.cancel()


def _dataset(table):
    """The Delta table's files as an Arrow dataset, text columns read as string_view: DuckDB pushes a text filter down as a
    string_view scalar, and Arrow has no kernel comparing it with a plain string column."""
    plain = table.to_pyarrow_dataset()
    viewed = [f.with_type(pa.string_view()) if pa.types.is_string(f.type) or pa.types.is_large_string(f.type) else f for f in plain.schema]
    return table.to_pyarrow_dataset(schema=pa.schema(viewed, metadata=plain.schema.metadata))


def _nodes(tree):
    """Every dict in a serialised statement."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            yield node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
