"""Arrow Flight SQL for analysts' SQL tools (ADBC, DBeaver through the Flight SQL JDBC driver, Superset): the same analyst
workspace as ``citylake sql``, reached with a bearer token.

- Who: every call carries ``authorization: Bearer <token>`` (or a basic-auth handshake with the account's name and its
  token as the password, answered with the bearer header). An unknown or revoked token is unauthenticated; planner and
  pilot accounts are refused here, since this front is SQL only. The account's role picks the workspace: an analyst's
  sees the shared tables and the releases, a steward's every table.
- What: each statement runs through ``Workspace.query`` on a workspace borrowed from the pool, so the SELECT-only checks,
  the time limit and the memory cap are the CLI's. The catalog lists what the role reads, as schema ``main`` with no
  catalog (the names DuckDB resolves: ``main.footfall_hourly``).
- Tickets: a statement runs when its FlightInfo is asked for; the rows wait under a random handle bound to the account
  and are handed out once, to the same account, by ``do_get``. A ticket replayed by another account, without a token or
  after the token was revoked, gets nothing. A catalog ticket is recomputed for whoever presents it.
- Read-only: updates, transactions and Substrait plans are refused with one line that says so.

``flight_server(lake, accounts, pool, host=…, port=…)`` makes the server (listening at once); ``serve_in_thread`` runs it,
``server.shutdown()`` stops it.
"""

from __future__ import annotations

import base64
import binascii
import importlib.metadata
import logging
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import wraps
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.flight as fl
from flightsql import flightsql_pb2 as sql
from google.protobuf import any_pb2

from citylake.lake import Lake
from citylake.privacy import Refused
from citylake.privacy.accounts import Account, Accounts
from citylake.queries.sandbox import QueryCancelled, Workspace
from citylake.server.workspaces import ServerBusy, WorkspacePool

log = logging.getLogger(__name__)

SERVER_NAME = "citylake"
SCHEMA_NAME = "main"  # the schema DuckDB resolves the lake's tables in, for either role; there is no catalog to name
TABLE_TYPE = "TABLE"
RESULTS_PER_ACCOUNT = 4  # rows waiting for their do_get; a fifth statement drops the oldest
RESULT_SECONDS = 300.0  # a result nobody fetched in 5 minutes is dropped
PREPARED_PER_ACCOUNT = 64  # tools prepare one per statement they show; the oldest goes first
PREPARED_SECONDS = 3600.0
CANCEL_POLL_SECONDS = 0.25  # how soon a client's cancellation reaches a running statement
READ_ONLY = ("the SQL workspace is read-only: it runs SELECT and EXPLAIN; the lake changes only through `citylake ingest`, "
             "`citylake publish` and `citylake maintain`")

CATALOGS_SCHEMA = pa.schema([pa.field("catalog_name", pa.string(), nullable=False)])
DB_SCHEMAS_SCHEMA = pa.schema([pa.field("catalog_name", pa.string()), pa.field("db_schema_name", pa.string(), nullable=False)])
TABLES_SCHEMA = pa.schema([pa.field("catalog_name", pa.string()), pa.field("db_schema_name", pa.string()),
                           pa.field("table_name", pa.string(), nullable=False), pa.field("table_type", pa.string(), nullable=False)])
TABLES_WITH_SCHEMA = TABLES_SCHEMA.append(pa.field("table_schema", pa.binary(), nullable=False))
TABLE_TYPES_SCHEMA = pa.schema([pa.field("table_type", pa.string(), nullable=False)])
PRIMARY_KEYS_SCHEMA = pa.schema([pa.field("catalog_name", pa.string()), pa.field("db_schema_name", pa.string()),
                                 pa.field("table_name", pa.string(), nullable=False), pa.field("column_name", pa.string(), nullable=False),
                                 pa.field("key_sequence", pa.int32(), nullable=False), pa.field("key_name", pa.string())])
KEYS_SCHEMA = pa.schema([
    pa.field("pk_catalog_name", pa.string()), pa.field("pk_db_schema_name", pa.string()),
    pa.field("pk_table_name", pa.string(), nullable=False), pa.field("pk_column_name", pa.string(), nullable=False),
    pa.field("fk_catalog_name", pa.string()), pa.field("fk_db_schema_name", pa.string()),
    pa.field("fk_table_name", pa.string(), nullable=False), pa.field("fk_column_name", pa.string(), nullable=False),
    pa.field("key_sequence", pa.int32(), nullable=False), pa.field("fk_key_name", pa.string()), pa.field("pk_key_name", pa.string()),
    pa.field("update_rule", pa.uint8(), nullable=False), pa.field("delete_rule", pa.uint8(), nullable=False)])
SQL_INFO_VALUE = pa.dense_union([
    pa.field("string_value", pa.string(), nullable=False), pa.field("bool_value", pa.bool_(), nullable=False),
    pa.field("bigint_value", pa.int64(), nullable=False), pa.field("int32_bitmask", pa.int32(), nullable=False),
    pa.field("string_list", pa.list_(pa.string()), nullable=False),
    pa.field("int32_to_int32_list_map", pa.map_(pa.int32(), pa.list_(pa.int32())), nullable=False)], type_codes=[0, 1, 2, 3, 4, 5])
SQL_INFO_SCHEMA = pa.schema([pa.field("info_name", pa.uint32(), nullable=False), pa.field("value", SQL_INFO_VALUE, nullable=False)])
METADATA_COMMANDS = (sql.CommandGetCatalogs, sql.CommandGetDbSchemas, sql.CommandGetTables, sql.CommandGetTableTypes,
                     sql.CommandGetSqlInfo, sql.CommandGetPrimaryKeys, sql.CommandGetExportedKeys, sql.CommandGetImportedKeys,
                     sql.CommandGetCrossReference)
WRITE_COMMANDS = (sql.CommandStatementUpdate, sql.CommandPreparedStatementUpdate, sql.CommandStatementSubstraitPlan)
REFUSED_ACTIONS = {"BeginTransaction", "EndTransaction", "BeginSavepoint", "EndSavepoint", "CreatePreparedSubstraitPlan"}


# --- who is calling -------------------------------------------------------------------------------------------------


class _Caller(fl.ServerMiddleware):
    """The account a call was made with; answers a basic-auth handshake with the bearer header to use from then on."""

    def __init__(self, account: Account, bearer: str | None) -> None:
        self.account, self._bearer = account, bearer

    def sending_headers(self) -> dict[str, str]:
        return {"authorization": self._bearer} if self._bearer else {}


class _TokenCheck(fl.ServerMiddlewareFactory):
    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts

    def start_call(self, info, headers) -> _Caller:
        try:
            return self._caller(headers)
        except fl.FlightError:
            raise
        except Exception:  # an unreadable accounts file: the client learns no more than that
            log.exception("flight sql: checking a token failed")
            raise fl.FlightInternalError("the server could not check the token; the server's log has the details") from None

    def _caller(self, headers: dict) -> _Caller:
        kind, _, credential = _header(headers, "authorization").partition(" ")
        bearer = None
        if kind.lower() == "basic":
            account, token = self._basic(credential.strip())
            bearer = f"Bearer {token}"  # the handshake's answer: the client sends it from then on
        else:
            account = self._bearer(credential.strip() if kind.lower() == "bearer" else "")
        if not account.reads_sql:
            raise fl.FlightUnauthorizedError(f"SQL is for analyst and steward accounts; {account.name} is a {account.role} account: "
                                             "use the web app or the HTTP API, or ask the steward for an analyst account")
        return _Caller(account, bearer)

    def _bearer(self, token: str) -> Account:
        if not token:
            raise fl.FlightUnauthenticatedError("no token: send the header `authorization: Bearer <token>` (ADBC: db_kwargs "
                                                "{'adbc.flight.sql.authorization_header': 'Bearer <token>'}); the steward makes "
                                                "one with `citylake users add NAME --role analyst`")
        account = self.accounts.who(token)
        if account is None:
            raise fl.FlightUnauthenticatedError("the token is unknown or was revoked; ask the steward for a new one "
                                                "(`citylake users add NAME --role analyst`)")
        return account

    def _basic(self, credential: str) -> tuple[Account, str]:
        name, _, token = _basic_pair(credential)
        account = self._bearer(token)
        if account.name != name:
            raise fl.FlightUnauthenticatedError("the user name does not match the token; log in with the account's name and "
                                                "its token as the password")
        return account, token


def _header(headers: dict, name: str) -> str:
    values = headers.get(name) or []
    return values[0] if values else ""


def _basic_pair(credential: str) -> tuple[str, str, str]:
    try:
        padded = credential + "=" * (-len(credential) % 4)  # Go's Flight client sends base64 without padding
        return base64.b64decode(padded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise fl.FlightUnauthenticatedError("malformed basic credentials: send the account's name as the user and its token "
                                            "as the password") from None


class _HandshakeAnswered(fl.ServerAuthHandler):
    """Lets the basic-auth handshake through: the middleware has checked its header and sends the bearer back. Every
    other call is checked by the middleware too, so no handshake token is needed."""

    def authenticate(self, outgoing, incoming) -> None:
        pass

    def is_valid(self, token: bytes) -> bytes:
        return b""


# --- what waits between calls ---------------------------------------------------------------------------------------


@dataclass
class _Held:
    owner: tuple[str, str]  # the account's name and creation time: a remade account of the same name is someone else
    value: object
    expires: float


class _Handles:
    """Values kept for one account under random handles, a few per account, each for a while."""

    def __init__(self, *, per_account: int, seconds: float) -> None:
        self.per_account, self.seconds = per_account, seconds
        self._held: OrderedDict[bytes, _Held] = OrderedDict()
        self._lock = threading.Lock()

    def keep(self, account: Account, value: object) -> bytes:
        handle, now = secrets.token_bytes(24), time.monotonic()
        with self._lock:
            for old in [h for h, held in self._held.items() if held.expires < now]:
                del self._held[old]
            mine = [h for h, held in self._held.items() if held.owner == _owner(account)]
            for old in mine[: max(0, len(mine) - self.per_account + 1)]:
                del self._held[old]
            self._held[handle] = _Held(_owner(account), value, now + self.seconds)
        return handle

    def get(self, account: Account, handle: bytes, /, *, once: bool = False) -> object:
        with self._lock:
            held = self._held.get(handle)
            if held is None or held.owner != _owner(account) or held.expires < time.monotonic():
                raise fl.FlightServerError("this handle is unknown, expired or another account's; run the statement again")
            if once:
                del self._held[handle]
            return held.value

    def drop(self, account: Account, handle: bytes, /) -> None:
        with self._lock:
            held = self._held.get(handle)
            if held is not None and held.owner == _owner(account):
                del self._held[handle]


def _owner(account: Account) -> tuple[str, str]:
    return (account.name, account.created)


# --- errors: one line each ------------------------------------------------------------------------------------------


def _one_line_errors(handler: Callable) -> Callable:
    """A handler whose faults reach the client as one line with a Flight status, never as a traceback."""

    @wraps(handler)
    def guarded(self, context, *args):
        try:
            return handler(self, context, *args)
        except fl.FlightError:
            raise
        except Refused as err:
            raise fl.FlightUnauthorizedError(_line(err)) from None
        except QueryCancelled as err:
            cancelled = context.is_cancelled()
            raise (fl.FlightCancelledError if cancelled else fl.FlightTimedOutError)(_line(err)) from None
        except ServerBusy as err:
            raise fl.FlightUnavailableError(_line(err)) from None
        except duckdb.Error as err:
            raise fl.FlightServerError(_line(err)) from None
        except Exception:
            log.exception("flight sql: %s failed", handler.__name__)
            raise fl.FlightInternalError(f"the server failed on {handler.__name__}; the server's log has the details") from None

    return guarded


def _line(err: Exception) -> str:
    return " ".join(str(err).split())


# --- the server -----------------------------------------------------------------------------------------------------


class FlightSqlServer(fl.FlightServerBase):
    """Flight SQL over the lake's SQL workspaces: statements, prepared statements and the catalog, read-only."""

    def __init__(self, lake: Lake, accounts: Accounts, pool: WorkspacePool, /, *, location: str,
                 tls_certificates: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(location, auth_handler=_HandshakeAnswered(), tls_certificates=tls_certificates or [],
                         middleware={"caller": _TokenCheck(accounts)})
        self.lake, self.accounts, self.pool = lake, accounts, pool
        self._results = _Handles(per_account=RESULTS_PER_ACCOUNT, seconds=RESULT_SECONDS)
        self._prepared = _Handles(per_account=PREPARED_PER_ACCOUNT, seconds=PREPARED_SECONDS)

    # flight calls

    @_one_line_errors
    def get_flight_info(self, context, descriptor: fl.FlightDescriptor) -> fl.FlightInfo:
        account, command = _caller(context), _command(descriptor)
        if isinstance(command, sql.CommandStatementQuery):
            return self._statement_info(context, account, descriptor, command.query)
        if isinstance(command, sql.CommandPreparedStatementQuery):
            query = self._prepared.get(account, command.prepared_statement_handle)
            return self._statement_info(context, account, descriptor, query)
        if isinstance(command, METADATA_COMMANDS):
            schema = _metadata_schema(command)
            return fl.FlightInfo(schema, descriptor, [fl.FlightEndpoint(descriptor.command, [])], -1, -1)
        if isinstance(command, WRITE_COMMANDS):
            raise fl.FlightUnauthorizedError(READ_ONLY)
        raise fl.FlightServerError(f"{type(command).__name__} is not supported by citylake's Flight SQL")

    @_one_line_errors
    def do_get(self, context, ticket: fl.Ticket) -> fl.RecordBatchStream:
        account, command = _caller(context), _unpacked(ticket.ticket)
        if isinstance(command, sql.TicketStatementQuery):
            return fl.RecordBatchStream(self._results.get(account, command.statement_handle, once=True))
        if isinstance(command, METADATA_COMMANDS):
            return fl.RecordBatchStream(self._metadata(account, command))
        raise fl.FlightServerError("this ticket was not made by citylake's Flight SQL; ask for the FlightInfo again")

    @_one_line_errors
    def do_put(self, context, descriptor: fl.FlightDescriptor, reader, writer) -> None:
        account, command = _caller(context), _command(descriptor)
        if isinstance(command, sql.CommandPreparedStatementQuery):
            self._prepared.get(account, command.prepared_statement_handle)
            if reader.read_all().num_rows:
                raise fl.FlightServerError("query parameters are not supported by citylake's Flight SQL yet; write the values "
                                           "into the SQL text")
            return
        if isinstance(command, WRITE_COMMANDS):
            raise fl.FlightUnauthorizedError(READ_ONLY)
        raise fl.FlightServerError(f"do_put with {type(command).__name__} is not supported: {READ_ONLY}")

    @_one_line_errors
    def do_action(self, context, action: fl.Action) -> Iterator[bytes]:
        account = _caller(context)
        if action.type == "CreatePreparedStatement":
            request = _unpacked(action.body.to_pybytes(), sql.ActionCreatePreparedStatementRequest)
            handle = self._prepared.keep(account, request.query)
            return iter([_packed(sql.ActionCreatePreparedStatementResult(prepared_statement_handle=handle))])
        if action.type == "ClosePreparedStatement":
            request = _unpacked(action.body.to_pybytes(), sql.ActionClosePreparedStatementRequest)
            self._prepared.drop(account, request.prepared_statement_handle)
            return iter([])
        if action.type in REFUSED_ACTIONS:
            raise fl.FlightUnauthorizedError(f"{action.type}: {READ_ONLY}")
        raise fl.FlightServerError(f"action {action.type} is not supported by citylake's Flight SQL")

    def list_flights(self, context, criteria) -> Iterator[fl.FlightInfo]:
        raise fl.FlightServerError("citylake's Flight SQL lists no flights; ask for tables with GetTables (ADBC: adbc_get_objects)")

    def get_schema(self, context, descriptor) -> fl.SchemaResult:
        """A catalog command's schema; an empty one for anything else (a statement's schema comes with its FlightInfo).
        Never raises: pyarrow (26) sends a Python exception raised here, even a FlightError, with its traceback."""
        try:
            command = _command(descriptor)
        except fl.FlightError:
            return fl.SchemaResult(pa.schema([]))
        return fl.SchemaResult(_metadata_schema(command) if isinstance(command, METADATA_COMMANDS) else pa.schema([]))

    def do_exchange(self, context, descriptor, reader, writer) -> None:
        raise fl.FlightServerError(f"do_exchange is not supported by citylake's Flight SQL: {READ_ONLY}")

    def list_actions(self, context) -> list[tuple[str, str]]:
        return [("CreatePreparedStatement", "prepare a SELECT (parameters are not supported)"),
                ("ClosePreparedStatement", "forget a prepared statement")]

    # statements

    def _statement_info(self, context, account: Account, descriptor: fl.FlightDescriptor, query: str) -> fl.FlightInfo:
        rows = self._run(context, account, query)
        handle = self._results.keep(account, rows)
        ticket = _packed(sql.TicketStatementQuery(statement_handle=handle))
        return fl.FlightInfo(rows.schema, descriptor, [fl.FlightEndpoint(ticket, [])], rows.num_rows, rows.nbytes)

    def _run(self, context, account: Account, query: str) -> pa.Table:
        """The rows of ``query`` in the account's workspace: its checks and limits; cancelled when the client gives up."""
        with self.pool.borrow(account.role, who=account.name) as workspace, _cancelled_with(context, workspace):
            rows = workspace.query(query)
        log.info("flight sql: %s ran a statement (%d rows)", account.name, 0 if rows is None else rows.num_rows)
        if rows is not None and rows.nbytes > self.pool.max_result_bytes:
            raise fl.FlightServerError(f"the answer holds {rows.nbytes / 2**20:,.0f} MB, more than the server returns "
                                       f"({self.pool.max_result_bytes // 2**20} MB, setting serve.max_result_mb); select fewer or "
                                       "shorter columns, or aggregate")
        return pa.table({}) if rows is None else rows

    # the catalog

    def _metadata(self, account: Account, command) -> pa.Table:
        if isinstance(command, sql.CommandGetCatalogs):
            return CATALOGS_SCHEMA.empty_table()
        if isinstance(command, sql.CommandGetDbSchemas):
            return self._db_schemas(command)
        if isinstance(command, sql.CommandGetTables):
            return self._tables(account, command)
        if isinstance(command, sql.CommandGetTableTypes):
            return pa.table({"table_type": [TABLE_TYPE]}, schema=TABLE_TYPES_SCHEMA)
        if isinstance(command, sql.CommandGetSqlInfo):
            return sql_info(list(command.info), limit_seconds=self.pool.limits.seconds)
        return _metadata_schema(command).empty_table()  # keys: the lake's tables declare none

    def _db_schemas(self, command: sql.CommandGetDbSchemas) -> pa.Table:
        shown = _in_catalog(command) and _like(command.db_schema_filter_pattern if command.HasField("db_schema_filter_pattern")
                                              else None, SCHEMA_NAME)
        return pa.table({"catalog_name": [None] * shown, "db_schema_name": [SCHEMA_NAME] * shown}, schema=DB_SCHEMAS_SCHEMA)

    def _tables(self, account: Account, command: sql.CommandGetTables) -> pa.Table:
        pattern = command.table_name_filter_pattern if command.HasField("table_name_filter_pattern") else None
        schema_pattern = command.db_schema_filter_pattern if command.HasField("db_schema_filter_pattern") else None
        wanted = (_in_catalog(command) and _like(schema_pattern, SCHEMA_NAME)
                  and (not command.table_types or TABLE_TYPE in command.table_types))
        with self.pool.borrow(account.role, who=account.name) as workspace:
            names = [name for name in workspace.tables if wanted and _like(pattern, name)]
            schemas = [_table_schema(workspace, name).serialize().to_pybytes() for name in names] if command.include_schema else None
        columns = {"catalog_name": [None] * len(names), "db_schema_name": [SCHEMA_NAME] * len(names), "table_name": names,
                   "table_type": [TABLE_TYPE] * len(names)}
        if schemas is None:
            return pa.table(columns, schema=TABLES_SCHEMA)
        return pa.table({**columns, "table_schema": schemas}, schema=TABLES_WITH_SCHEMA)


def _caller(context) -> Account:
    caller = context.get_middleware("caller")
    if caller is None:  # the factory refuses a call without a good token before it gets here
        raise fl.FlightUnauthenticatedError("no token: send the header `authorization: Bearer <token>`")
    return caller.account


@contextmanager
def _cancelled_with(context, workspace: Workspace):
    """Interrupt the workspace's statement when the client cancels the call (or goes away)."""
    done = threading.Event()

    def watch() -> None:
        while not done.wait(CANCEL_POLL_SECONDS):
            if context.is_cancelled():
                workspace.interrupt()
                return

    watcher = threading.Thread(target=watch, name="flight-cancel-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


def _table_schema(workspace: Workspace, name: str) -> pa.Schema:
    return workspace.query(f'SELECT * FROM "{name}" LIMIT 0').schema  # through the checks, like any statement


def _in_catalog(command) -> bool:
    """Whether a request's catalog filter admits our tables, which have none (an empty catalog means "none")."""
    return not command.HasField("catalog") or command.catalog == ""


def _like(pattern: str | None, name: str) -> bool:
    """SQL LIKE, as the Flight SQL filters use it: % any run, _ one character, backslash escapes."""
    if pattern is None:
        return True
    regex, escaped = [], False
    for char in pattern:
        if escaped:
            regex.append(re.escape(char))
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            regex.append(".*" if char == "%" else "." if char == "_" else re.escape(char))
    return re.fullmatch("".join(regex), name, re.S) is not None


# --- SqlInfo --------------------------------------------------------------------------------------------------------


def sql_info(asked: list[int], /, *, limit_seconds: float) -> pa.Table:
    """What the server tells tools about itself: the asked codes that it knows (every one when none are asked)."""
    known: dict[int, object] = {
        sql.FLIGHT_SQL_SERVER_NAME: SERVER_NAME,
        sql.FLIGHT_SQL_SERVER_VERSION: importlib.metadata.version("citylake"),
        sql.FLIGHT_SQL_SERVER_ARROW_VERSION: pa.__version__,
        sql.FLIGHT_SQL_SERVER_READ_ONLY: True,
        sql.FLIGHT_SQL_SERVER_SQL: True,
        sql.FLIGHT_SQL_SERVER_SUBSTRAIT: False,
        sql.FLIGHT_SQL_SERVER_TRANSACTION: _Int32(sql.SQL_SUPPORTED_TRANSACTION_NONE),
        sql.FLIGHT_SQL_SERVER_CANCEL: False,
        sql.FLIGHT_SQL_SERVER_STATEMENT_TIMEOUT: _Int32(int(limit_seconds * 1000)),  # milliseconds
        sql.SQL_DDL_CATALOG: False,
        sql.SQL_DDL_SCHEMA: False,
        sql.SQL_DDL_TABLE: False,
        sql.SQL_IDENTIFIER_CASE: _Int32(sql.SQL_CASE_SENSITIVITY_CASE_INSENSITIVE),
        sql.SQL_IDENTIFIER_QUOTE_CHAR: '"',
        sql.SQL_QUOTED_IDENTIFIER_CASE: _Int32(sql.SQL_CASE_SENSITIVITY_CASE_INSENSITIVE),
        sql.SQL_ALL_TABLES_ARE_SELECTABLE: True,
        sql.SQL_NULL_ORDERING: _Int32(sql.SQL_NULLS_SORTED_AT_END),
        sql.SQL_SEARCH_STRING_ESCAPE: "\\",
        sql.SQL_SUPPORTS_COLUMN_ALIASING: True,
        sql.SQL_NULL_PLUS_NULL_IS_NULL: True,
        sql.SQL_SUPPORTS_TABLE_CORRELATION_NAMES: True,
        sql.SQL_SUPPORTS_EXPRESSIONS_IN_ORDER_BY: True,
        sql.SQL_SUPPORTS_ORDER_BY_UNRELATED: True,
        sql.SQL_SUPPORTS_LIKE_ESCAPE_CLAUSE: True,
        sql.SQL_SUPPORTS_NON_NULLABLE_COLUMNS: True,
        sql.SQL_SCHEMA_TERM: "schema",
        sql.SQL_CATALOG_TERM: "catalog",
        sql.SQL_SELECT_FOR_UPDATE_SUPPORTED: False,
        sql.SQL_STORED_PROCEDURES_SUPPORTED: False,
        sql.SQL_TRANSACTIONS_SUPPORTED: False,
        sql.SQL_BATCH_UPDATES_SUPPORTED: False,
        sql.SQL_SAVEPOINTS_SUPPORTED: False,
        sql.SQL_NAMED_PARAMETERS_SUPPORTED: False,
        sql.SQL_CORRELATED_SUBQUERIES_SUPPORTED: True,
    }
    codes = [code for code in (asked or known) if code in known]
    return _info_table(codes, [known[code] for code in codes])


@dataclass(frozen=True)
class _Int32:
    """An SqlInfo value sent as int32 (enums and bitmasks), not as a bigint."""
    value: int


def _info_table(codes: list[int], values: list[object]) -> pa.Table:
    children: list[list] = [[] for _ in SQL_INFO_VALUE]
    kinds, offsets = [], []
    for value in values:
        kind = 1 if isinstance(value, bool) else 0 if isinstance(value, str) else 3 if isinstance(value, _Int32) else 2
        kinds.append(kind)
        offsets.append(len(children[kind]))
        children[kind].append(value.value if isinstance(value, _Int32) else value)
    arrays = [pa.array(values, type=field.type) for values, field in zip(children, SQL_INFO_VALUE)]
    union = pa.UnionArray.from_dense(pa.array(kinds, pa.int8()), pa.array(offsets, pa.int32()), arrays,
                                     [field.name for field in SQL_INFO_VALUE], list(range(len(arrays))))
    return pa.Table.from_arrays([pa.array(codes, pa.uint32()), union.view(SQL_INFO_VALUE)], schema=SQL_INFO_SCHEMA)


# --- protobuf in Any ------------------------------------------------------------------------------------------------

_ALL_COMMANDS = (sql.CommandStatementQuery, sql.CommandPreparedStatementQuery, sql.TicketStatementQuery, *METADATA_COMMANDS,
                 *WRITE_COMMANDS)


def _command(descriptor: fl.FlightDescriptor):
    if descriptor.descriptor_type != fl.DescriptorType.CMD:
        raise fl.FlightServerError("citylake's Flight SQL takes Flight SQL commands, not paths; use a Flight SQL client (ADBC, JDBC)")
    return _unpacked(descriptor.command)


def _unpacked(data: bytes, kind=None):
    wrapper = any_pb2.Any()
    try:
        wrapper.ParseFromString(data)
    except Exception:  # protobuf's DecodeError, and whatever a hostile byte string makes it raise
        raise fl.FlightServerError("the request is not a Flight SQL command; use a Flight SQL client (ADBC, JDBC)") from None
    for candidate in (kind,) if kind else _ALL_COMMANDS:
        if wrapper.Is(candidate.DESCRIPTOR):
            message = candidate()
            wrapper.Unpack(message)
            return message
    name = wrapper.type_url.rsplit(".", 1)[-1] or "an unknown message"
    raise fl.FlightServerError(f"{name} is not supported by citylake's Flight SQL ({READ_ONLY})")


def _packed(message) -> bytes:
    wrapper = any_pb2.Any()
    wrapper.Pack(message)
    return wrapper.SerializeToString()


def _metadata_schema(command) -> pa.Schema:
    if isinstance(command, sql.CommandGetCatalogs):
        return CATALOGS_SCHEMA
    if isinstance(command, sql.CommandGetDbSchemas):
        return DB_SCHEMAS_SCHEMA
    if isinstance(command, sql.CommandGetTables):
        return TABLES_WITH_SCHEMA if command.include_schema else TABLES_SCHEMA
    if isinstance(command, sql.CommandGetTableTypes):
        return TABLE_TYPES_SCHEMA
    if isinstance(command, sql.CommandGetSqlInfo):
        return SQL_INFO_SCHEMA
    if isinstance(command, sql.CommandGetPrimaryKeys):
        return PRIMARY_KEYS_SCHEMA
    return KEYS_SCHEMA


# --- for `citylake serve` -------------------------------------------------------------------------------------------


def flight_server(lake: Lake, accounts: Accounts, pool: WorkspacePool, /, *, host: str = "127.0.0.1", port: int = 8081,
                  tls: tuple[Path, Path] | None = None) -> FlightSqlServer:
    """The Flight SQL server, listening on ``host:port`` (port 0: a free one, then ``server.port``) from when it returns;
    over TLS when ``tls`` is a (certificate, key) pair of PEM files. Run it with ``serve_in_thread``; stop it with
    ``server.shutdown()``."""
    scheme = "grpc+tls" if tls else "grpc+tcp"
    certificates = [(Path(tls[0]).read_bytes(), Path(tls[1]).read_bytes())] if tls else None
    return FlightSqlServer(lake, accounts, pool, location=f"{scheme}://{host}:{port}", tls_certificates=certificates)


def serve_in_thread(server: FlightSqlServer, /) -> threading.Thread:
    """Serve until ``server.shutdown()`` (which waits for calls under way), in a daemon thread."""
    thread = threading.Thread(target=server.serve, name="flight-sql", daemon=True)
    thread.start()
    return thread


__all__ = ["FlightSqlServer", "flight_server", "serve_in_thread", "sql_info"]
