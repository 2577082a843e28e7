"""A lake on object storage: a real S3-compatible server (SeaweedFS on loopback, ``conftest.seaweed_s3``), the CLI run
as users run it, concurrent writers, a writer killed mid-commit, and analysts' keys against the steward zone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import seaweed
from conftest import TEST_KEY, with_key
from test_ingest_crash import write_pings

from citylake.lake import Lake, LocalOnly, Storage, StorageRefused, StorageUnreachable, connect, duckdb_for
from citylake.lake.engines import reach_storage
from citylake.lake.errors import BadLocation
from citylake.lake.storage import LeaseLock, locate

pytestmark = pytest.mark.integration


def citylake(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "citylake.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


def ok(*args: str, env: dict | None = None) -> str:
    result = citylake(*args, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def one_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """A refusal: non-zero, one line on stderr, no traceback, naming what it should."""
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr and "panicked" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def new_prefix(name: str) -> str:
    return f"s3://{seaweed.BUCKET}/{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("s3city") / "city"
    ok("generate-city", "--out", str(out), "--devices", "200", "--days", "3", "--seed", "11")
    return out


def steward_env(server, tmp: Path) -> dict:
    return {**server.env(), "CITYLAKE_PSEUDONYM_KEY": TEST_KEY}


def chain(lake: str, city: Path, out: Path, env: dict) -> dict:
    """init → ingest → query → publish → report → map, as the README runs it; what each step answered."""
    answers = {"init": ok("--lake", lake, "init", env=env)}
    for kind, name in (("places", "places.geojson"), ("sensors", "sensors.csv"), ("readings", "readings.csv"), ("pings", "pings.csv")):
        answers[kind] = ok("--lake", lake, "ingest", kind, str(city / name), env=env)
    answers["tables"] = json.loads(ok("--lake", lake, "tables", "--format", "json", env=env))
    answers["footfall"] = json.loads(ok("--lake", lake, "query", "footfall", "--role", "steward", "--freq", "1d",
                                        "--format", "json", env=env))
    answers["footfall_polars"] = json.loads(ok("--lake", lake, "query", "footfall", "--role", "steward", "--freq", "1d",
                                               "--engine", "polars", "--format", "json", env=env))
    answers["publish"] = ok("--lake", lake, "publish", env=env)
    answers["released"] = json.loads(ok("--lake", lake, "query", "footfall", "--format", "json", env=env))
    answers["report"] = ok("--lake", lake, "report", "--district", "places:cbd", "--out", str(out / "reports"), env=env)
    answers["map"] = ok("--lake", lake, "map", "footfall", "--out", str(out / "map.html"), env=env)
    answers["summary"] = json.loads((out / "reports" / "summary.json").read_text())
    return answers


def test_the_readme_chain_on_s3_answers_as_on_a_local_disk(seaweed_s3, city, tmp_path):
    env = steward_env(seaweed_s3, tmp_path)
    on_s3 = chain(new_prefix("chain"), city, tmp_path / "s3", env)
    on_disk = chain(str(tmp_path / "lake"), city, tmp_path / "disk", env)
    assert "lake ready at s3://" in on_s3["init"]
    for kind in ("places", "sensors", "readings", "pings"):
        assert on_s3[kind].split(";")[0] == on_disk[kind].split(";")[0]  # the same rows accepted, rejected, skipped
    rows = lambda answer: {t["name"]: t["rows"] for t in answer["tables"]}  # noqa: E731
    assert rows(on_s3) == rows(on_disk) and rows(on_s3)["pings"] > 10_000
    assert on_s3["footfall"] == on_disk["footfall"] and len(on_s3["footfall"]) > 5  # DuckDB through httpfs and the log
    assert on_s3["footfall_polars"] == on_disk["footfall_polars"] == on_s3["footfall"]
    places = {"places:" + f["properties"]["id"] for f in json.loads((city / "places.geojson").read_text())["features"]}
    # DP: the noise differs, and at this city's size a release holds 2-6 place-hours, at times none: each lake released,
    # and on public partitions only
    assert "released footfall_hourly" in on_s3["publish"] and "released footfall_hourly" in on_disk["publish"]
    assert {r["place_id"] for r in on_s3["released"] + on_disk["released"]} <= places
    assert on_s3["summary"] == on_disk["summary"] and on_s3["summary"]["reports"][0]["pings"] > 0  # Dask, from the s3:// URI
    assert "kepler" in (tmp_path / "s3" / "map.html").read_text().lower()
    assert (tmp_path / "s3" / "reports" / "places_cbd.html").is_file()


def test_secrets_are_never_printed(seaweed_s3, tmp_path):
    env = {**steward_env(seaweed_s3, tmp_path), "CITYLAKE_STORAGE_SECRET_ACCESS_KEY": seaweed.STEWARD_KEYS[1]}
    shown = ok("--lake", new_prefix("secret"), "settings", env=env)
    assert seaweed.STEWARD_KEYS[1] not in shown and "(set)" in shown
    assert seaweed.STEWARD_KEYS[1] not in repr(seaweed_s3.storage())
    wrong = citylake("--lake", new_prefix("secret"), "init", env={**env, "CITYLAKE_STORAGE_SECRET_ACCESS_KEY": "not-the-secret-xyz"})
    line = one_line(wrong, "refused")
    assert "not-the-secret-xyz" not in wrong.stderr + wrong.stdout and seaweed.STEWARD_KEYS[1] not in line


def test_an_unreachable_store_and_unknown_schemes_get_one_line(tmp_path):
    down = citylake("--lake", "s3://nowhere/lake", "tables", env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "a",
                                                                  "AWS_SECRET_ACCESS_KEY": "b"})
    one_line(down, "cannot reach", "storage.endpoint")
    one_line(citylake("--lake", "gs://bucket/lake", "tables"), "gs:// is not supported")
    with pytest.raises(BadLocation):
        locate("s3:///no-bucket")
    assert locate(f"file://{tmp_path}/lake").uri == f"{tmp_path}/lake"


def test_storage_settings_fill_from_the_aws_variables():
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:8333", "AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    storage = Storage.from_env(env, region="ap-east-1")
    assert (storage.endpoint, storage.region, storage.access_key_id) == ("http://127.0.0.1:8333", "ap-east-1", "k")
    assert storage.uses_path_style and storage.uses_http  # an http:// endpoint of one's own: path-style, plain HTTP
    aws = Storage.from_env({"AWS_ACCESS_KEY_ID": "k"})
    assert not aws.uses_path_style and not aws.uses_http
    assert aws.delta_options()["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] == "true"


def test_analysts_keys_cannot_read_the_steward_zone(seaweed_s3, city, tmp_path):
    """The store's policy is the steward zone's guard on S3: an analyst with the lake's URI, the steward's pseudonym key
    and a role claim still reads only the shared tables and the releases."""
    lake_uri = f"s3://{seaweed.BUCKET}/city"  # the analyst identity may read tables/ and releases/ under city/ only
    steward = steward_env(seaweed_s3, tmp_path)
    ok("--lake", lake_uri, "init", env=steward)
    ok("--lake", lake_uri, "ingest", "places", str(city / "places.geojson"), env=steward)
    ok("--lake", lake_uri, "ingest", "pings", str(city / "pings.csv"), env=steward)
    ok("--lake", lake_uri, "publish", env=steward)
    analyst = {**seaweed_s3.env(seaweed.ANALYST_KEYS), "CITYLAKE_PSEUDONYM_KEY": TEST_KEY}  # even holding the key
    assert json.loads(ok("--lake", lake_uri, "query", "footfall", "--format", "json", env=analyst))  # releases: yes
    tables = {t["name"] for t in json.loads(ok("--lake", lake_uri, "tables", "--format", "json", env=analyst))}
    assert "places" in tables and "footfall_hourly" in tables and "pings" not in tables and "stays" not in tables
    one_line(citylake("--lake", lake_uri, "query", "footfall", "--role", "steward", env=analyst), "steward")
    one_line(citylake("--lake", lake_uri, "sql", "--role", "steward", "SELECT count(*) FROM pings", env=analyst))
    one_line(citylake("--lake", lake_uri, "ingest", "places", str(city / "places.geojson"), env=analyst), "refused")
    one_line(citylake("--lake", lake_uri, "publish", env=analyst))
    # straight at the store, past citylake: the Delta log, the files, DuckDB with the analyst's secret
    lake = Lake.open(lake_uri, storage=seaweed_s3.storage(seaweed.ANALYST_KEYS))
    assert not lake.readable("pings") and lake.readable("footfall_hourly")
    with pytest.raises(OSError):
        lake.table("pings")
    with pytest.raises(StorageRefused):
        lake.read_steward_file("privacy.json")
    con = connect()
    reach_storage(con, lake)
    with pytest.raises(Exception, match="(?i)403|denied|privilege|forbidden"):
        con.execute(f"SELECT count(*) FROM delta_scan('{lake.table_uri('pings')}')").fetchall()
    with pytest.raises(Exception, match="(?i)403|denied|privilege|forbidden"):
        con.execute(f"SELECT count(*) FROM read_parquet('{lake.uri}/steward/pings/**/*.parquet')").fetchall()
    assert con.execute(f"SELECT count(*) FROM delta_scan('{lake.table_uri('footfall_hourly')}')").fetchone()[0] > 0


def test_local_only_features_say_so_on_s3(seaweed_s3, tmp_path):
    uri = new_prefix("local-only")
    ok("--lake", uri, "init", env=steward_env(seaweed_s3, tmp_path))
    with pytest.raises(LocalOnly, match="local disk"):
        print(Lake.open(uri, storage=seaweed_s3.storage()).steward_dir)
    one_line(citylake("--lake", uri, "watch", "--max-seconds", "1", env=steward_env(seaweed_s3, tmp_path)), "local disk")


def test_concurrent_writers_on_s3_land_each_row_once(seaweed_s3, tmp_path):
    """Two ingests of overlapping files at once, each committing chunk by chunk: the lease lock serialises the key check
    and the commit across processes, so the union lands once."""
    lake = with_key(Lake.init(new_prefix("concurrent"), storage=seaweed_s3.storage()))
    write_pings(tmp_path / "pings.csv", 60_000)
    lines = (tmp_path / "pings.csv").read_text().splitlines()
    header, body = lines[0], lines[1:]
    (tmp_path / "a.csv").write_text("\n".join([header, *body[:40_000]]) + "\n")
    (tmp_path / "b.csv").write_text("\n".join([header, *body[20_000:]]) + "\n")
    env = {**os.environ, **steward_env(seaweed_s3, tmp_path), "CITYLAKE_INGEST_BATCH_ROWS": "5000", "CITYLAKE_INGEST_BUFFER_MB": "0"}
    procs = [subprocess.Popen([sys.executable, "-m", "citylake.cli", "--lake", lake.uri, "ingest", "pings", str(tmp_path / f)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for f in ("a.csv", "b.csv")]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    total, distinct = duckdb_for(lake).execute(
        "SELECT count(*), count(DISTINCT (device_id, ts, lat, lon)) FROM pings").fetchone()
    assert total == distinct == len(set(body))


def test_a_writer_killed_mid_commit_on_s3_blocks_no_one_and_loses_nothing(seaweed_s3, tmp_path):
    import obstore

    lease = 4
    write_pings(tmp_path / "pings.csv", 120_000)
    env = {**os.environ, **steward_env(seaweed_s3, tmp_path), "CITYLAKE_INGEST_BATCH_ROWS": "10000", "CITYLAKE_INGEST_BUFFER_MB": "0",
           "CITYLAKE_STORAGE_LOCK_LEASE_SECONDS": str(lease)}
    lock = "steward/.locks/pings.lock"
    for _ in range(5):  # the lock can be let go between seeing it held and the kill: then strike again, on a fresh lake
        lake = with_key(Lake.init(new_prefix("killed"), storage=seaweed_s3.storage()))
        command = [sys.executable, "-m", "citylake.cli", "--lake", lake.uri, "ingest", "pings", str(tmp_path / "pings.csv")]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 120
        while True:  # strike while it holds the writer lock (between its key check and its commit), after a commit or two
            assert proc.poll() is None, "the ingest finished before it could be killed"
            assert time.monotonic() < deadline
            if lake.stats("pings").version >= 2 and lake.location.read_text(lock) is not None:
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if json.loads(lake.location.read_text(lock) or "{}").get("pid") == proc.pid:  # it died holding the lock
            break
    else:
        pytest.fail("five kills in a row landed outside the writer lock")
    partial = lake.rows("pings")
    rerun = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)  # waits out the lease, not for ever
    assert rerun.returncode == 0, rerun.stderr
    total, distinct = duckdb_for(lake).execute("SELECT count(*), count(DISTINCT (device_id, ts, lat, lon)) FROM pings").fetchone()
    unique_rows = len(set((tmp_path / "pings.csv").read_text().splitlines()[1:]))
    assert total == distinct == unique_rows and 0 < partial < unique_rows
    assert lake.location.read_text(lock) is None  # released by the rerun
    with pytest.raises(FileNotFoundError):
        lake.location._call(obstore.head, lock)


def test_the_lease_lock_excludes_and_a_dead_holders_lease_runs_out(seaweed_s3):
    import obstore

    lake = Lake.init(new_prefix("lease"), storage=Storage(**{**vars(seaweed_s3.storage()), "lock_lease_seconds": 3}))
    location = lake.location
    counter = "steward/counter"
    location.write_text(counter, "0", private=True)

    def add_one(times: int) -> None:
        for _ in range(times):
            with LeaseLock(location, "steward/.locks/count.lock"):
                value = int(location.read_text(counter))
                location.write_text(counter, str(value + 1), private=True)

    workers = [threading.Thread(target=add_one, args=(10,)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert location.read_text(counter) == "30"  # no lost update: one holder at a time
    # a holder that died: its lease object stays, with an expiry that stops moving
    expires = time.time() + 2
    location._call(obstore.put, "steward/.locks/dead.lock", json.dumps({"holder": "x", "pid": 1, "expires": expires}).encode())
    taker = LeaseLock(location, "steward/.locks/dead.lock")
    assert not taker._try_take()  # still the dead holder's
    time.sleep(max(0.0, expires - time.time()) + 0.2)
    assert taker._try_take()  # lapsed: taken over
    assert json.loads(location.read_text("steward/.locks/dead.lock"))["holder"] == taker.holder


def test_missing_lake_on_s3_says_init(seaweed_s3, tmp_path):
    one_line(citylake("--lake", new_prefix("missing"), "tables", env=steward_env(seaweed_s3, tmp_path)), "no citylake lake at s3://",
             "citylake init")


def test_storage_unreachable_error_names_the_fix():
    assert "storage.endpoint" in str(StorageUnreachable("s3://b/p", "http://127.0.0.1:9", "connection refused"))


PAUSE_BEFORE_COMMIT = """
import os, signal, sys
from citylake.lake import lake as L
original = L.Lake._commit
def paused(self, *args, **kwargs):
    if kwargs.get("fenced") and not getattr(L, "_paused_once", False):
        L._paused_once = True
        os.kill(os.getpid(), signal.SIGSTOP)  # a suspended machine: the lease renewer stops too
    return original(self, *args, **kwargs)
L.Lake._commit = paused
from citylake.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_writer_paused_past_its_lease_lands_nothing_twice(seaweed_s3, city, tmp_path):
    """The helper's attack: a writer stopped between its key check and its commit loses the lease; another writer lands
    the same rows; the first, resumed, must not land them again (its commit is fenced to the version it checked)."""
    lake = with_key(Lake.init(new_prefix("paused"), storage=seaweed_s3.storage()))
    env = {**os.environ, **steward_env(seaweed_s3, tmp_path), "CITYLAKE_STORAGE_LOCK_LEASE_SECONDS": "3"}
    ok("--lake", lake.uri, "ingest", "sensors", str(city / "sensors.csv"), env=env)
    readings = str(city / "readings.csv")
    first = subprocess.Popen([sys.executable, "-c", PAUSE_BEFORE_COMMIT, "--lake", lake.uri, "ingest", "readings", readings],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while open(f"/proc/{first.pid}/stat").read().split()[2] != "T":  # stopped, holding the lock
        assert first.poll() is None and time.monotonic() < deadline, first.stderr.read() if first.poll() is not None else ""
        time.sleep(0.05)
    second = citylake("--lake", lake.uri, "ingest", "readings", readings, env=env)  # waits out the lease, then lands all
    assert second.returncode == 0, second.stderr
    first.send_signal(signal.SIGCONT)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    total, distinct = duckdb_for(lake).execute("SELECT count(*), count(DISTINCT (sensor_id, metric, ts)) FROM readings").fetchone()
    assert total == distinct > 0
    assert " 0 accepted" in out  # it checked again and found every row present


def test_concurrent_publishes_cannot_overspend_the_day(seaweed_s3, city, tmp_path):
    lake_uri = new_prefix("budget")
    env = steward_env(seaweed_s3, tmp_path)
    ok("--lake", lake_uri, "init", env=env)
    ok("--lake", lake_uri, "ingest", "places", str(city / "places.geojson"), env=env)
    ok("--lake", lake_uri, "ingest", "pings", str(city / "pings.csv"), env=env)
    runs = [subprocess.Popen([sys.executable, "-m", "citylake.cli", "--lake", lake_uri, "publish"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, **env}) for _ in range(2)]
    results = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    assert sorted(code for code, _ in results) == [0, 1], results  # one releases, the other finds the budget spent
    lake = Lake.open(lake_uri, storage=seaweed_s3.storage())
    spent = duckdb_for(lake).execute("SELECT day, sum(epsilon) FROM privacy_ledger GROUP BY day").fetchall()
    assert spent and all(epsilon <= 1.0 + 1e-9 for _, epsilon in spent)


def test_forged_and_damaged_lease_objects_lapse(seaweed_s3):
    import obstore

    lake = Lake.init(new_prefix("forged"), storage=seaweed_s3.storage())
    for body in (b'{"expires": 1e300}', b'{"expires": "soon"}', b"[1]", b"not json", b'{"expires": null}'):
        lake.location._call(obstore.put, "steward/.locks/x.lock", body)
        assert LeaseLock(lake.location, "steward/.locks/x.lock")._try_take(), body  # lapsed at once


def test_prefixes_are_plain_and_lakes_do_not_nest(seaweed_s3, tmp_path):
    env = steward_env(seaweed_s3, tmp_path)
    for bad in ("s3://citylake/city/../other", "s3://citylake/a/./b", "s3://citylake/enc%41x", "s3://Bad_Bucket/x", "s3://citylake/a b"):
        one_line(citylake("--lake", bad, "init", env=env), "not usable")
    outer = new_prefix("outer")
    ok("--lake", outer, "init", env=env)
    one_line(citylake("--lake", f"{outer}/tables/nested", "init", env=env), "inside the lake at")
    for endpoint in ("http://127.0.0.1:99999", "notaurl", "http://127.0.0.1:8333?x=y", "http://user:pw@127.0.0.1:8333"):
        line = one_line(citylake("--lake", outer, "tables", env={**env, "AWS_ENDPOINT_URL": endpoint}), "storage.endpoint")
        assert "pw" not in line


def test_secret_settings_are_not_echoed_and_sessions_do_not_show_keys(seaweed_s3, tmp_path):
    (tmp_path / "citylake.toml").write_text('[storage]\nsecret_acces_key = "SuperSecretTypo"\n')
    result = subprocess.run([sys.executable, "-m", "citylake.cli", "settings"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode != 0 and "SuperSecretTypo" not in result.stderr + result.stdout
    lake_uri = new_prefix("session")
    env = steward_env(seaweed_s3, tmp_path)
    ok("--lake", lake_uri, "init", env=env)
    shown = ok("--lake", lake_uri, "sql", "--role", "steward", "--format", "csv",
               "SELECT current_setting('s3_secret_access_key') AS s, current_setting('s3_access_key_id') AS k", env=env)
    assert seaweed.STEWARD_KEYS[1] not in shown and seaweed.STEWARD_KEYS[0] not in shown
    one_line(citylake("--lake", lake_uri, "report", "--scheduler", "tcp://127.0.0.1:1", "--district", "places:cbd", "--out",
                      str(tmp_path / "r"), env=env), "tls://")
