"""The analyst workspace: every way out we know of is refused with a clear message."""

from __future__ import annotations

import os
import subprocess
import sys

import duckdb
import pytest
from conftest import TEST_KEY, make_pings, with_key

from citylake.lake import Lake
from citylake.queries.sandbox import Refused, Workspace

SECRET = "/etc/passwd"
READERS = ["read_csv('{p}')", "read_csv_auto('{p}')", "read_json('{p}')", "read_json_auto('{p}')", "read_ndjson('{p}')",
           "read_parquet('{p}')", "parquet_scan('{p}')", "read_text('{p}')", "read_blob('{p}')", "ST_Read('{p}')",
           "delta_scan('{p}')", "glob('{p}')", "sniff_csv('{p}')", "parquet_metadata('{p}')"]


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    lake = with_key(Lake.init(tmp_path_factory.mktemp("sandbox") / "lake"))
    lake.write("pings", make_pings(2_000))
    import polars as pl

    lake.write("quarantine", pl.DataFrame({"batch_id": ["b"], "table_name": ["pings"], "source": ["f.csv"], "row_number": [2],
                                           "raw": ["alice,2026-11-01,1,2"], "reason": ["x"]}).with_columns(
        pl.lit("2026-11-01T00:00:00Z").str.to_datetime(time_zone="UTC").alias("quarantined_at")))
    return lake


@pytest.fixture(scope="module")
def analyst(lake):
    return Workspace(lake)


def refused(analyst: Workspace, query: str) -> str:
    with pytest.raises((Refused, duckdb.Error)) as err:
        result = analyst.sql(query)
        if result is not None:
            result.fetchall()
    return str(err.value)


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    """Readable files of every format, outside the lake, each holding a secret."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path_factory.mktemp("outside")
    (d / "s.csv").write_text("secret\ns3cr3t\n")
    (d / "s.json").write_text('{"secret": "s3cr3t"}\n')
    (d / "s.geojson").write_text('{"type":"FeatureCollection","features":[{"type":"Feature","geometry":{"type":"Point",'
                                 '"coordinates":[1,2]},"properties":{"secret":"s3cr3t"}}]}')
    pq.write_table(pa.table({"secret": ["s3cr3t"]}), d / "s.parquet")
    return d


def path_for(reader: str, outside) -> str:
    kind = "parquet" if "parquet" in reader else "geojson" if reader.startswith("ST_") else "json" if "json" in reader else "csv"
    return str(outside / f"s.{kind}")


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("target", ["system file", "readable file"])
def test_no_reader_function_reaches_outside_files(analyst, outside, reader, target):
    path = SECRET if target == "system file" else path_for(reader, outside)
    message = refused(analyst, f"SELECT * FROM {reader.format(p=path)}")  # raises: nothing was read
    assert "s3cr3t" not in message and "root:" not in message


@pytest.mark.parametrize("reader", ["read_parquet('{p}/**/*.parquet')", "delta_scan('{p}')", "read_blob('{p}/_delta_log/*')"])
def test_raw_pings_cannot_be_read_by_path(analyst, lake, reader):
    message = refused(analyst, f"SELECT count(*) FROM {reader.format(p=lake.path('pings'))}")
    assert "not available to analysts" in message and str(lake.root) not in message


@pytest.mark.parametrize("table", ["pings", "quarantine"])
def test_people_tables_are_not_visible(analyst, table):
    assert "not visible to analysts" in refused(analyst, f"SELECT count(*) FROM {table}")


@pytest.mark.parametrize("query, fragment", [
    ("COPY (SELECT 1) TO '/tmp/citylake-escape.csv'", "COPY statements are not allowed"),
    ("COPY (SELECT 1) TO 'places-copy.csv'", "COPY statements are not allowed"),
    ("EXPORT DATABASE '/tmp/citylake-export'", "EXPORT statements are not allowed"),
    ("ATTACH '/tmp/citylake-escape.db' AS x", "ATTACH statements are not allowed"),
    ("ATTACH ':memory:' AS x", "ATTACH statements are not allowed"),
    ("SET enable_external_access = true", "SET statements are not allowed"),
    ("RESET allowed_directories", "SET statements are not allowed"),
    ("INSTALL httpfs", "LOAD statements are not allowed"),
    ("LOAD httpfs", "LOAD statements are not allowed"),
    ("CREATE TABLE stash AS SELECT * FROM places", "CREATE statements are not allowed"),
    ("DROP VIEW places", "DROP statements are not allowed"),
    ("SELECT 1; COPY (SELECT 1) TO '/tmp/x.csv'", "COPY statements are not allowed"),
])
def test_writes_attach_settings_and_extensions_are_refused(analyst, query, fragment):
    assert fragment in refused(analyst, query)
    assert not os.path.exists("/tmp/citylake-escape.csv") and not os.path.exists("/tmp/citylake-escape.db")


def test_settings_stay_locked_even_through_the_connection(analyst):
    with pytest.raises(duckdb.Error, match="locked"):
        analyst.con.execute("SET enable_external_access = true")


def test_analysts_can_still_ask_questions(analyst, lake):
    assert analyst.sql("SELECT count(*) FROM places").fetchone() == (0,)
    assert analyst.sql("SELECT h3_cell_to_string(h3_latlng_to_cell(31.2, 121.4, 9))").fetchone() == ("893099592abffff",)
    assert analyst.sql("SELECT ST_AsText(ST_Point(1, 2))").fetchone() == ("POINT (1 2)",)
    assert "EXPLAIN" not in refused_or_none(analyst, "EXPLAIN SELECT count(*) FROM readings")


def refused_or_none(analyst: Workspace, query: str) -> str:
    try:
        analyst.sql(query).fetchall()
        return ""
    except (Refused, duckdb.Error) as err:
        return str(err)


def test_the_steward_sees_everything(lake):
    steward = Workspace(lake, role="steward")
    assert steward.sql("SELECT count(*) FROM pings").fetchone() == (2_000,)
    assert steward.sql("SELECT count(*) FROM quarantine").fetchone() == (1,)


def test_cli_roles(lake, tmp_path):
    def run(*args, env=None):
        return subprocess.run([sys.executable, "-m", "citylake.cli", "--lake", str(lake.root), "sql", *args], capture_output=True,
                              text=True, timeout=120, env={**os.environ, **(env or {})})

    denied = run("SELECT count(*) FROM pings")
    assert denied.returncode == 1 and "not visible to analysts" in denied.stderr and "Traceback" not in denied.stderr
    keyless = run("SELECT count(*) FROM pings", "--role", "steward", env={"CITYLAKE_PRIVACY_PSEUDONYM_KEY_FILE": str(tmp_path / "none")})
    assert keyless.returncode == 1 and "no pseudonym key" in keyless.stderr
    (tmp_path / "key").write_text(TEST_KEY + "\n")
    steward = run("SELECT count(*) AS n FROM pings", "--role", "steward", "--format", "csv",
                  env={"CITYLAKE_PRIVACY_PSEUDONYM_KEY_FILE": str(tmp_path / "key")})
    assert steward.returncode == 0 and steward.stdout.splitlines() == ["n", "2000"]


@pytest.mark.parametrize("query", [
    "SELECT name, setting FROM pg_settings", "SELECT * FROM pg_class", "SELECT * FROM pg_catalog.pg_tables",
    "SELECT * FROM '.tmp/probe.csv'", "SELECT * FROM \"probe.csv\"", "SELECT * FROM 'probe.parquet'", "SELECT * FROM '~/x.json'",
])
def test_the_postgres_catalog_and_files_named_as_tables_are_refused(analyst, query, tmp_path, monkeypatch):
    """A helper attacking the server found both: pg_settings named the server's directories, and a file path written as a
    table name read a CSV from DuckDB's temporary directory (which it allows itself)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".tmp").mkdir()
    (tmp_path / ".tmp" / "probe.csv").write_text("secret\ns3cr3t\n")
    (tmp_path / "probe.csv").write_text("secret\ns3cr3t\n")
    assert "s3cr3t" not in refused(analyst, query)
