"""Other engines read the lake as Delta: Spark's API (pysail, a Spark Connect server, with the pyspark-client) on a local
lake and on an s3:// lake, with the same counts per date as citylake's own readers."""

from __future__ import annotations

import os

import pytest
import seaweed
from conftest import TEST_KEY, generated_city_lake, with_key

from citylake.lake import Lake, duckdb_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def spark():
    from pysail.spark import SparkConnectServer
    from pyspark.sql import SparkSession

    server = SparkConnectServer(ip="127.0.0.1", port=0)
    server.start(background=True)
    host, port = server.listening_address
    session = SparkSession.builder.remote(f"sc://{host}:{port}").getOrCreate()
    yield session
    session.stop()
    server.stop()


def per_date_by_spark(spark, uri: str) -> dict[str, int]:
    rows = spark.read.format("delta").load(uri).groupBy("date").count().collect()
    return {str(r["date"]): int(r["count"]) for r in rows}


def per_date_by_citylake(lake: Lake) -> dict[str, int]:
    rows = duckdb_for(lake).execute("SELECT date, count(*) FROM pings GROUP BY ALL").fetchall()
    by_sql = {str(d): int(n) for d, n in rows}
    assert by_sql == lake.rows_per_partition("pings", "date")  # the log's own counts agree with a scan
    return by_sql


def test_spark_reads_a_local_lake_with_the_same_counts(spark, tmp_path):
    lake = generated_city_lake(tmp_path, devices=80, days=3, seed=4, feeds=("places", "pings"))
    lake.write("pings", lake.table("pings").to_pyarrow_table().slice(0, 10), mode="overwrite")  # a version that removed files
    generated = generated_city_lake(tmp_path / "again", devices=80, days=3, seed=4, feeds=("places", "pings"))
    assert per_date_by_spark(spark, lake.table_uri("pings")) == per_date_by_citylake(lake)  # through the log, not a glob
    assert per_date_by_spark(spark, generated.table_uri("pings")) == per_date_by_citylake(generated)
    assert sum(per_date_by_citylake(generated).values()) > 1_000


def test_spark_reads_an_s3_lake_with_the_same_counts(spark, seaweed_s3, tmp_path, monkeypatch):
    from citylake.ingestion.city import generate_city
    from citylake.ingestion.location import ingest_pings

    generate_city(tmp_path / "city", devices=80, days=3, seed=6)
    lake = with_key(Lake.init(f"s3://{seaweed.BUCKET}/interop", storage=seaweed_s3.storage()))
    ingest_pings(lake, tmp_path / "city" / "pings.csv", key=TEST_KEY.encode())
    for name, value in {**seaweed_s3.env(), "AWS_ALLOW_HTTP": "true"}.items():  # Sail reads the usual AWS variables
        monkeypatch.setenv(name, value)
    assert os.environ["AWS_ENDPOINT_URL"] == seaweed_s3.endpoint
    counts = per_date_by_citylake(lake)
    assert per_date_by_spark(spark, lake.table_uri("pings")) == counts and sum(counts.values()) > 1_000
