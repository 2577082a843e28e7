"""Flight SQL, through the real ADBC driver: the analyst workspace's answers and refusals, the catalog by role, tokens."""

from __future__ import annotations

import threading

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pyarrow.flight as fl
import pytest
from conftest import generated_city_lake, self_signed

from citylake.privacy import Policy
from citylake.privacy.accounts import Accounts
from citylake.queries import release
from citylake.queries.sandbox import Limits, Workspace
from citylake.server.flight import flight_server, serve_in_thread
from citylake.server.workspaces import WorkspacePool

AUTH = "adbc.flight.sql.authorization_header"
HIDDEN = {"pings", "stays", "quarantine", "batches", "privacy_ledger"}
SLOW = "SELECT count(*) FROM range(100000000) a, range(100000000) b"  # 10^16 rows: only the time limit ends it


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    city = generated_city_lake(tmp_path_factory.mktemp("flight"), devices=300, days=2, seed=21)
    release.publish(city, policy=Policy(epsilon_per_day=2.0), epsilon=1.0, delta=0.0, announce=lambda _: None)
    return city


@pytest.fixture(scope="module")
def tokens(lake):
    accounts = Accounts(lake)
    made = {name: accounts.add(name, name) for name in ("analyst", "steward", "planner", "pilot")}
    made["revoked"] = accounts.add("gone", "analyst")
    accounts.revoke("gone")
    return made


@pytest.fixture(scope="module")
def server(lake, tokens):
    pool = WorkspacePool(lake, limits=Limits(seconds=1), size=2, refresh_seconds=60)
    server = flight_server(lake, Accounts(lake), pool, host="127.0.0.1", port=0)
    thread = serve_in_thread(server)
    yield server
    server.shutdown()
    thread.join(timeout=10)


def connect(server, token: str | None = None, **db_kwargs):
    if token is not None:
        db_kwargs[AUTH] = "Bearer " + token
    return flightsql.connect(f"grpc://127.0.0.1:{server.port}", db_kwargs=db_kwargs, autocommit=True)


def ask(server, token: str | None, query: str) -> list[tuple]:
    with connect(server, token) as con, con.cursor() as cur:
        cur.execute(query)
        return cur.fetchall()


def refusal(server, token: str | None, query: str) -> str:
    with pytest.raises(adbc_driver_manager.Error) as err:
        ask(server, token, query)
    message = str(err.value)
    assert "Traceback" not in message and "File \"" not in message
    return message


def test_the_analyst_counts_what_the_workspace_counts(server, tokens, lake):
    counted = "SELECT count(*) AS n, sum(devices) AS d FROM footfall_hourly"
    expected = Workspace(lake).query(counted).to_pylist()[0]
    assert expected["n"] > 0 and ask(server, tokens["analyst"], counted) == [(expected["n"], expected["d"])]
    places = ask(server, tokens["steward"], "SELECT count(*) FROM places")
    assert ask(server, tokens["analyst"], "SELECT count(*) FROM main.places") == places


def test_a_prepared_statement_runs_again(server, tokens):
    with connect(server, tokens["analyst"]) as con, con.cursor() as cur:
        for _ in range(2):
            cur.execute("SELECT place_id, sum(devices) FROM footfall_hourly GROUP BY place_id ORDER BY place_id")
            assert cur.fetchall()
        cur.execute("SELECT 42 AS answer")
        assert cur.fetch_arrow_table().to_pylist() == [{"answer": 42}]


@pytest.mark.parametrize("query, fragment", [
    ("SELECT * FROM pings", "not visible to analysts"),
    ("SELECT count(*) FROM stays", "not visible to analysts"),
    ("SELECT * FROM privacy_ledger", "not visible to analysts"),
    ("SELECT * FROM delta_scan('{lake}/steward/pings')", "not available to analysts"),
    ("SELECT * FROM read_parquet('{lake}/**/*.parquet')", "not available to analysts"),
    ("COPY (SELECT 1) TO '/tmp/citylake-flight-escape.csv'", "COPY statements are not allowed"),
    ("ATTACH ':memory:' AS x", "ATTACH statements are not allowed"),
    ("INSTALL httpfs", "statements are not allowed"),
    ("SELECT * FROM duckdb_settings()", "not available to analysts"),
])
def test_the_analyst_is_refused_what_the_cli_refuses(server, tokens, lake, query, fragment):
    message = refusal(server, tokens["analyst"], query.format(lake=lake.root))
    assert fragment in message and str(lake.root) not in message


def test_the_steward_sees_pings(server, tokens, lake):
    expected = Workspace(lake, role="steward").query("SELECT count(*) AS n FROM pings").to_pylist()[0]["n"]
    assert ask(server, tokens["steward"], "SELECT count(*) FROM pings") == [(expected,)] and expected > 0


@pytest.mark.parametrize("who, fragment", [(None, "no token"), ("clk_" + "x" * 43, "unknown or was revoked"),
                                           ("revoked", "unknown or was revoked"), ("planner", "SQL is for analyst and steward"),
                                           ("pilot", "SQL is for analyst and steward")])
def test_only_analyst_and_steward_tokens_reach_sql(server, tokens, who, fragment):
    assert fragment in refusal(server, tokens.get(who, who), "SELECT 1")


def test_the_catalog_shows_an_analyst_only_what_it_reads(server, tokens, lake):
    with connect(server, tokens["analyst"]) as con:
        objects = con.adbc_get_objects(depth="all").read_all().to_pylist()
        assert con.adbc_get_table_types() == ["TABLE"]
        info = con.adbc_get_info()
        schema = con.adbc_get_table_schema("footfall_hourly", db_schema_filter="main")
    tables = {table["table_name"]: table for catalog in objects for schema_ in catalog["catalog_db_schemas"]
              for table in schema_["db_schema_tables"]}
    assert set(tables) == set(Workspace(lake).tables) and "footfall_hourly" in tables and not HIDDEN & set(tables)
    assert {column["column_name"] for column in tables["footfall_hourly"]["table_columns"]} >= {"place_id", "bucket", "devices"}
    assert "devices" in schema.names
    assert info["vendor_name"] == "citylake" and info["vendor_version"] and info["vendor_arrow_version"]
    with connect(server, tokens["steward"]) as con:
        listed = {row["table_name"] for catalog in con.adbc_get_objects(depth="tables").read_all().to_pylist()
                  for schema_ in catalog["catalog_db_schemas"] for row in schema_["db_schema_tables"]}
    assert HIDDEN <= listed


def test_a_ticket_is_the_account_s_alone(server, tokens):
    """A statement's ticket, replayed by another caller, a planner or nobody, gets no rows."""
    from flightsql import flightsql_pb2 as sql
    from google.protobuf import any_pb2

    command = any_pb2.Any()
    command.Pack(sql.CommandStatementQuery(query="SELECT count(*) AS n FROM footfall_hourly"))
    analyst, as_analyst = raw_client(server, tokens["analyst"])
    info = analyst.get_flight_info(fl.FlightDescriptor.for_command(command.SerializeToString()), as_analyst)
    ticket = info.endpoints[0].ticket
    for other, error in ((None, fl.FlightUnauthenticatedError), (tokens["planner"], fl.FlightUnauthorizedError),
                         (tokens["steward"], fl.FlightServerError)):
        thief, options = raw_client(server, other)
        with pytest.raises(error):
            thief.do_get(ticket, options).read_all()
    assert analyst.do_get(ticket, as_analyst).read_all().num_rows == 1
    with pytest.raises(fl.FlightServerError, match="run the statement again"):  # a ticket is good once
        analyst.do_get(ticket, as_analyst).read_all()


def test_updates_and_transactions_are_refused(server, tokens):
    with connect(server, tokens["analyst"]) as con, con.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error, match="read-only"):
            cur.adbc_statement.set_sql_query("CREATE TABLE x AS SELECT 1")
            cur.adbc_statement.execute_update()
        with pytest.raises(adbc_driver_manager.Error):
            con.adbc_connection.set_autocommit(False)


def test_a_slow_query_is_cancelled_at_the_limit_while_others_answer(server, tokens):
    outcome: dict[str, str] = {}

    def slow() -> None:
        outcome["slow"] = refusal(server, tokens["analyst"], SLOW)

    runner = threading.Thread(target=slow)
    runner.start()
    assert ask(server, tokens["analyst"], "SELECT 1 + 1") == [(2,)]  # answers while the slow one holds a workspace
    runner.join(timeout=60)
    assert not runner.is_alive() and "limit of 1 s" in outcome["slow"]


def test_basic_auth_handshake_gives_a_bearer(server, tokens):
    with flightsql.connect(f"grpc://127.0.0.1:{server.port}", db_kwargs={"username": "analyst", "password": tokens["analyst"]},
                           autocommit=True) as con, \
            con.cursor() as cur:
        cur.execute("SELECT count(*) FROM footfall_hourly")
        assert cur.fetchone()[0] > 0
    with pytest.raises(adbc_driver_manager.Error, match="does not match"):
        flightsql.connect(f"grpc://127.0.0.1:{server.port}", db_kwargs={"username": "steward", "password": tokens["analyst"]})


def raw_client(server, token: str | None):
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    return fl.FlightClient(f"grpc://127.0.0.1:{server.port}"), fl.FlightCallOptions(headers=headers)


@pytest.mark.parametrize("call", [
    lambda c, o: list(c.do_action(fl.Action("BeginTransaction", b""), o)),
    lambda c, o: list(c.do_action(fl.Action("NoSuchAction", b""), o)),
    lambda c, o: c.do_get(fl.Ticket(b"\xff forged"), o).read_all(),
    lambda c, o: c.get_flight_info(fl.FlightDescriptor.for_path("pings"), o),
    lambda c, o: list(c.list_flights(options=o)),
])
def test_other_calls_fail_in_one_line(server, tokens, call):
    client, options = raw_client(server, tokens["analyst"])
    with pytest.raises(fl.FlightError) as err:
        call(client, options)
    assert "Traceback" not in str(err.value) and "File \"" not in str(err.value)


def test_get_schema_answers_without_running_anything(server, tokens):
    client, options = raw_client(server, tokens["analyst"])
    assert client.get_schema(fl.FlightDescriptor.for_path("pings"), options).schema.names == []


def test_parameters_are_refused_with_the_fix(server, tokens):
    with connect(server, tokens["analyst"]) as con, con.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error, match="write the values into the SQL text"):
            cur.execute("SELECT ?", (1,))


@pytest.fixture
def one_workspace_server(lake):
    """A server with one workspace and a long limit: only an interrupt frees the workspace early."""
    server = flight_server(lake, Accounts(lake), WorkspacePool(lake, limits=Limits(seconds=60), size=1), port=0)
    thread = serve_in_thread(server)
    yield server
    server.shutdown()
    thread.join(timeout=10)


def test_a_client_that_gives_up_frees_its_workspace(one_workspace_server, tokens):
    from flightsql import flightsql_pb2 as sql
    from google.protobuf import any_pb2

    command = any_pb2.Any()
    command.Pack(sql.CommandStatementQuery(query=SLOW))
    client, _ = raw_client(one_workspace_server, None)
    impatient = fl.FlightCallOptions(timeout=0.5, headers=[(b"authorization", f"Bearer {tokens['analyst']}".encode())])
    with pytest.raises(fl.FlightTimedOutError):
        client.get_flight_info(fl.FlightDescriptor.for_command(command.SerializeToString()), impatient)
    assert ask(one_workspace_server, tokens["analyst"], "SELECT 1") == [(1,)]  # not after the 60 s limit: it was interrupted


def test_tls(lake, tokens, tmp_path):
    certificate, key = self_signed(tmp_path)
    server = flight_server(lake, Accounts(lake), WorkspacePool(lake, limits=Limits(seconds=5), size=1), port=0,
                           tls=(certificate, key))
    thread = serve_in_thread(server)
    try:
        kwargs = {AUTH: "Bearer " + tokens["analyst"], "adbc.flight.sql.client_option.tls_root_certs": certificate.read_text()}
        with flightsql.connect(f"grpc+tls://127.0.0.1:{server.port}", db_kwargs=kwargs, autocommit=True) as con, con.cursor() as cur:
            cur.execute("SELECT count(*) FROM footfall_hourly")
            assert cur.fetchone()[0] > 0
        with pytest.raises(adbc_driver_manager.Error):  # plain text to a TLS port
            ask(server, tokens["analyst"], "SELECT 1")
    finally:
        server.shutdown()
        thread.join(timeout=10)


def test_a_token_revoked_between_statement_and_fetch_fetches_nothing(server, lake):
    accounts = Accounts(lake)
    token = accounts.add("leaving", "analyst")
    client, options = raw_client(server, token)
    from flightsql import flightsql_pb2 as sql
    from google.protobuf import any_pb2

    command = any_pb2.Any()
    command.Pack(sql.CommandStatementQuery(query="SELECT count(*) FROM footfall_hourly"))
    ticket = client.get_flight_info(fl.FlightDescriptor.for_command(command.SerializeToString()), options).endpoints[0].ticket
    accounts.revoke("leaving")
    with pytest.raises(fl.FlightUnauthenticatedError, match="revoked"):
        client.do_get(ticket, options).read_all()
