"""A Dask cluster of separate processes over TLS — `dask scheduler` and `citylake worker` — running the report of an
s3:// lake: the workers have no lake path and no storage keys of their own; tasks bring the URI and storage settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest
import seaweed
from conftest import TEST_KEY, self_signed

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STORAGE_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "CITYLAKE_LAKE")


def clean_env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k not in STORAGE_VARIABLES and not k.startswith("CITYLAKE_")}, **extra}


def citylake(*args: str, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "citylake.cli", *args], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture
def tls_cluster(tmp_path):
    """`dask scheduler` on tls:// and two `citylake worker` processes, started in a folder of their own, without the
    lake's storage variables."""
    cert, key = self_signed(tmp_path)
    tls = {"CITYLAKE_ANALYSIS_TLS_CA_FILE": str(cert), "CITYLAKE_ANALYSIS_TLS_CERT": str(cert), "CITYLAKE_ANALYSIS_TLS_KEY": str(key)}
    scheduler_file = tmp_path / "scheduler.json"
    processes = [subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--protocol", "tls", "--host", "127.0.0.1", "--port", "0",
         "--dashboard-address", "127.0.0.1:0", "--tls-ca-file", str(cert), "--tls-cert", str(cert), "--tls-key", str(key),
         "--scheduler-file", str(scheduler_file)], cwd=tmp_path, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            assert time.monotonic() < deadline and processes[0].poll() is None, processes[0].stderr.read().decode()[-2000:]
            time.sleep(0.2)
        time.sleep(0.3)
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tls://")
        workers = tmp_path / "workers"
        workers.mkdir()
        for n in range(2):
            processes.append(subprocess.Popen([sys.executable, "-m", "citylake.cli", "worker", address, "--name", f"w{n}"],
                                              cwd=workers, env=clean_env(**tls), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                              text=True))
        yield address, tls
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_for_workers(address: str, tls: dict, count: int) -> None:
    from distributed import Client
    from distributed.security import Security

    security = Security(tls_ca_file=tls["CITYLAKE_ANALYSIS_TLS_CA_FILE"], tls_client_cert=tls["CITYLAKE_ANALYSIS_TLS_CERT"],
                        tls_client_key=tls["CITYLAKE_ANALYSIS_TLS_KEY"], require_encryption=True)
    with Client(address, security=security, timeout="20s") as client:
        client.wait_for_workers(count, timeout=60)
        names = {w["name"] for w in client.scheduler_info()["workers"].values()}
        assert names == {"w0", "w1"}
        threads = {w["nthreads"] for w in client.scheduler_info()["workers"].values()}
        assert threads == {1}


def test_the_report_of_an_s3_lake_runs_on_tls_workers_that_only_reach_the_store(seaweed_s3, tls_cluster, tmp_path):
    address, tls = tls_cluster
    wait_for_workers(address, tls, 2)
    lake = f"s3://{seaweed.BUCKET}/cluster-{uuid.uuid4().hex[:8]}"
    steward = clean_env(**seaweed_s3.env(), CITYLAKE_PSEUDONYM_KEY=TEST_KEY, COLUMNS="200")
    city = tmp_path / "city"
    assert citylake("generate-city", "--out", str(city), "--devices", "150", "--days", "3", "--seed", "8", env=steward).returncode == 0
    assert citylake("--lake", lake, "init", env=steward).returncode == 0
    for kind, name in (("places", "places.geojson"), ("sensors", "sensors.csv"), ("readings", "readings.csv"), ("pings", "pings.csv")):
        done = citylake("--lake", lake, "ingest", kind, str(city / name), env=steward)
        assert done.returncode == 0, done.stderr
    remote = citylake("--lake", lake, "report", "--scheduler", address, "--district", "places:cbd", "--out", str(tmp_path / "remote"),
                      env={**steward, **tls})
    assert remote.returncode == 0, remote.stderr
    assert "dask: 2 workers" in remote.stderr + remote.stdout
    local = citylake("--lake", lake, "report", "--district", "places:cbd", "--out", str(tmp_path / "local"), env=steward)
    assert local.returncode == 0, local.stderr
    summary = lambda where: json.loads((tmp_path / where / "summary.json").read_text())  # noqa: E731
    assert summary("remote") == summary("local") and summary("remote")["reports"][0]["pings"] > 0

    # a tls:// cluster without the TLS settings, and a tcp:// client at the TLS scheduler: one line each, no report
    bare = citylake("--lake", lake, "report", "--scheduler", address, "--district", "places:cbd", "--out", str(tmp_path / "bare"),
                    env=steward)
    assert bare.returncode == 1 and "analysis.tls_ca_file" in bare.stderr and len(bare.stderr.strip().splitlines()) == 1
    plain = citylake("--lake", lake, "report", "--scheduler", address.replace("tls://", "tcp://"), "--district", "places:cbd",
                     "--out", str(tmp_path / "plain"), env=steward, timeout=120)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr and not (tmp_path / "plain" / "summary.json").exists()


def test_worker_refuses_a_tls_scheduler_without_the_tls_settings(tmp_path):
    refused = citylake("worker", "tls://127.0.0.1:1", env=clean_env())
    assert refused.returncode == 1 and "analysis.tls_ca_file" in refused.stderr and "Traceback" not in refused.stderr
    wrong = citylake("worker", "http://127.0.0.1:1", env=clean_env())
    assert wrong.returncode == 1 and "tls://HOST:PORT" in wrong.stderr
    plain = citylake("worker", "tcp://127.0.0.1:1", env=clean_env())
    assert plain.returncode == 1 and "plain-TCP" in plain.stderr and "Traceback" not in plain.stderr
    assert "one thread on one core" in citylake("worker", "--help", env=clean_env()).stdout


def test_pings_in_the_store_are_ingested_by_tls_workers_in_one_commit(seaweed_s3, tls_cluster, tmp_path):
    """Files in the store, a lake in the store, workers that reach only the store: the rows one process lands from the
    same files on disk, in one commit; an analyst's keys stage nothing."""
    import obstore
    import polars as pl
    import pyarrow.parquet as pq
    from test_ingest_fanout import KEYS, one_process, raw_pings

    from citylake.lake import Lake
    from citylake.lake.storage import locate

    address, tls = tls_cluster
    wait_for_workers(address, tls, 2)
    raw_pings(4_000, seed=5).write_csv(tmp_path / "a.csv")
    pq.write_table(raw_pings(7_000, seed=6).to_arrow(), tmp_path / "b.parquet", row_group_size=1_000)
    inbox = f"s3://{seaweed.BUCKET}/inbox-{uuid.uuid4().hex[:8]}"
    store = locate(inbox, seaweed_s3.storage()).store
    for name in ("a.csv", "b.parquet"):
        obstore.put(store, name, (tmp_path / name).read_bytes())
    lake_uri = f"s3://{seaweed.BUCKET}/fanout-{uuid.uuid4().hex[:8]}"
    steward = clean_env(**seaweed_s3.env(), CITYLAKE_PSEUDONYM_KEY=TEST_KEY)
    assert citylake("--lake", lake_uri, "init", env=steward).returncode == 0
    done = citylake("--lake", lake_uri, "ingest", "pings", f"{inbox}/a.csv", f"{inbox}/b.parquet", "--scheduler", address,
                    env={**steward, **tls})
    assert done.returncode == 0, done.stderr
    assert "dask: 2 workers" in done.stderr
    lake = Lake.open(lake_uri, storage=seaweed_s3.storage())
    landed = pl.scan_delta(lake.table_uri("pings"), storage_options=lake.storage_options).collect().sort(KEYS)
    oracle = one_process(tmp_path / "oracle", [str(tmp_path / "a.csv"), str(tmp_path / "b.parquet")])
    assert landed.equals(pl.scan_delta(oracle.table_uri("pings")).collect().sort(KEYS)) and landed.height > 10_000
    assert len(lake.history("pings")) == 2  # created, then one commit for both files

    missing = citylake("--lake", lake_uri, "ingest", "pings", f"{inbox}/missing.csv", "--scheduler", address, env={**steward, **tls})
    assert missing.returncode == 1 and missing.stderr.strip().endswith("missing.csv: no such object on the store"), missing.stderr
    pq.write_table(raw_pings(3_000, seed=7).to_arrow(), tmp_path / "damaged.parquet", use_dictionary=False)
    damaged = bytearray((tmp_path / "damaged.parquet").read_bytes())
    damaged[200:len(damaged) // 2] = bytes((b * 7 + 13) % 256 for b in damaged[200:len(damaged) // 2])  # pages, not the footer
    obstore.put(store, "damaged.parquet", bytes(damaged))
    broken = citylake("--lake", lake_uri, "ingest", "pings", f"{inbox}/damaged.parquet", "--scheduler", address, env={**steward, **tls})
    assert broken.returncode == 1 and "Traceback" not in broken.stderr, broken.stderr
    assert f"{inbox}/damaged.parquet: not a readable Parquet file" in broken.stderr.strip().splitlines()[-1]  # its URI, as given

    analyst = clean_env(**seaweed_s3.env(seaweed.ANALYST_KEYS), CITYLAKE_PSEUDONYM_KEY=TEST_KEY)
    refused = citylake("--lake", lake_uri, "ingest", "pings", f"{inbox}/a.csv", "--scheduler", address, env={**analyst, **tls})
    assert refused.returncode != 0 and "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert Lake.open(lake_uri, storage=seaweed_s3.storage()).rows("pings") == landed.height

    # a worker's copy of a text object has no name: the kernel frees it when the worker dies, killed or not
    from citylake.ingestion.fanout import local_copy

    with local_copy(f"{inbox}/a.csv", seaweed_s3.storage()) as path:
        assert os.readlink(path).endswith("(deleted)") and path.read_bytes() == (tmp_path / "a.csv").read_bytes()
