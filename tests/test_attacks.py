"""The privacy attack suite: every way the audit broke the privacy promises, tried again as a curious analyst or another
OS user would, each shown to fail. The analyst has only the README and the command line; the steward holds the key."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import make_pings

from citylake.lake import Lake

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent
NOBODY = 65534


class City:
    """A lake made as its owner makes it, a steward (the key's holder) and an analyst (no key)."""

    def __init__(self, base: Path) -> None:
        self.base, self.lake = base, base / "lake"
        self.key = base / "steward-only" / "lake.key"
        self.steward_env = {**os.environ, "CITYLAKE_PRIVACY_PSEUDONYM_KEY_FILE": str(self.key), "COLUMNS": "200"}
        self.steward_env.pop("CITYLAKE_PSEUDONYM_KEY", None)
        self.analyst_env = {**self.steward_env, "CITYLAKE_PRIVACY_PSEUDONYM_KEY_FILE": str(base / "analyst-has-no.key")}

    def run(self, *args: str, env: dict | None = None, steward: bool = False, timeout: int = 300) -> subprocess.CompletedProcess:
        chosen = env if env is not None else (self.steward_env if steward else self.analyst_env)
        return subprocess.run([sys.executable, "-m", "citylake.cli", "--lake", str(self.lake), *args], capture_output=True, text=True,
                              env=chosen, timeout=timeout)

    def ok(self, *args: str, **kw) -> str:
        done = self.run(*args, **kw)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def refused(self, *args: str, **kw) -> str:
        """The one line a refusal prints; fails if the command ran, printed a traceback or more than one line."""
        done = self.run(*args, **kw)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("citylake: error:"), done.stderr + done.stdout
        assert str(self.lake) not in lines[0] and "Traceback" not in done.stderr
        return lines[0]


@pytest.fixture(scope="module")
def city():
    base = Path(tempfile.mkdtemp(prefix="citylake-attacks-", dir="/tmp"))
    os.chmod(base, 0o755)  # other OS users may reach the lake; the steward zone must still stop them
    town = City(base)
    town.ok("generate-city", "--out", str(base / "city"), "--devices", "300", "--days", "2", "--seed", "4")
    town.ok("init", steward=True)
    for kind, name in (("places", "places.geojson"), ("sensors", "sensors.csv"), ("readings", "readings.csv"), ("pings", "pings.csv")):
        town.ok("ingest", kind, str(base / "city" / name), steward=True)
    town.ok("privacy", "set", "--epsilon-per-day", "3", "--delta-per-day", "1e-5", steward=True)  # room for a second release
    town.ok("publish", "--epsilon", "1", "--delta", "1e-6", steward=True)
    yield town
    shutil.rmtree(base, ignore_errors=True)


def test_suppression_is_no_presence_oracle(city):
    """The audit found one device's home by whether "N withheld" was 0. An analyst's answer now comes from the release
    alone: it never counts what was left out, and a lone device appearing in the box changes nothing in it."""
    box = ["--by", "cell", "--bbox", "121.30,31.10,121.31,31.11", "--format", "csv"]
    before = city.run("query", "footfall", *box)
    assert before.returncode == 0 and "withheld" not in before.stderr
    lone = city.base / "lone.csv"
    lone.write_text("device_id,ts,lat,lon\n" + "".join(f"lone-device,2026-11-02T{h:02d}:00:00Z,31.105,121.305\n" for h in range(20)))
    city.ok("ingest", "pings", str(lone), steward=True)
    after = city.run("query", "footfall", *box)
    assert after.stdout == before.stdout and after.stderr == before.stderr


def test_the_stewards_own_results_do_not_count_what_they_withhold(city):
    """A steward's exact result says groups were withheld, never how many: 0 against 1 would say whether anyone was there."""
    lone = city.base / "lone-at-five.csv"
    lone.write_text("device_id,ts,lat,lon\nsolo,2026-11-03T05:10:00Z,31.3305,121.3305\nsolo,2026-11-03T05:40:00Z,31.3305,121.3305\n")
    city.ok("ingest", "pings", str(lone), steward=True)
    box = ["--role", "steward", "--by", "cell", "--bbox", "121.33,31.33,121.331,31.331", "--format", "csv"]
    someone = city.run("query", "footfall", *box, "--from", "2026-11-03T05:00Z", "--to", "2026-11-03T06:00Z", steward=True)
    nobody = city.run("query", "footfall", *box, "--from", "2026-11-03T07:00Z", "--to", "2026-11-03T08:00Z", steward=True)
    assert someone.returncode == nobody.returncode == 0 and someone.stderr == nobody.stderr and someone.stdout == nobody.stdout


@pytest.mark.parametrize("release", [["--delta", "-1e-6"], ["--epsilon", "1e-320"], ["--epsilon", "nan"], ["--epsilon", "0"]])
def test_a_malformed_release_spends_nothing(city, release):
    spent = city.ok("privacy", "show", steward=True)
    line = city.refused("publish", *release, steward=True)
    assert "epsilon" in line or "delta" in line
    assert city.ok("privacy", "show", steward=True) == spent


@pytest.mark.parametrize("args", [
    ["query", "footfall", "--by", "cell", "--res", "9"],
    ["query", "footfall", "--by", "cell", "--res", "11"],
    ["query", "footfall", "--freq", "1d"],
    ["query", "footfall", "--by", "category"],
    ["query", "od", "--cells", "9"],
    ["query", "od", "--category", "park"],
    ["query", "dwell", "--category", "park"],
    ["map", "hotspots", "--out", "hot.html"],
    ["report", "--district", "places:expo", "--out", "expo.html"],
])
def test_no_exact_counts_to_subtract(city, args):
    """Parent cells minus children, hours minus days, places minus categories: an analyst gets no exact count of any of them,
    only the release's fixed partitions (whose noise does not cancel when subtracted)."""
    assert "steward" in city.refused(*args)


def test_a_flag_an_environment_variable_or_a_borrowed_file_is_no_key(city, tmp_path):
    someone = {**city.analyst_env, "CITYLAKE_PSEUDONYM_KEY": secrets.token_hex(32)}  # a well-formed key, not the lake's
    assert "not this lake's pseudonym key" in city.refused("sql", "--role", "steward", "SELECT count(*) FROM pings", env=someone)
    hostname = {**city.analyst_env, "CITYLAKE_PRIVACY_PSEUDONYM_KEY_FILE": "/etc/hostname"}
    city.refused("sql", "--role", "steward", "SELECT count(*) FROM pings", env=hostname)
    k_of_one = {**city.analyst_env, "CITYLAKE_PRIVACY_K_ANONYMITY": "1"}
    city.refused("query", "od", "--cells", "9", env=k_of_one)
    steward_k_of_one = {**city.steward_env, "CITYLAKE_PRIVACY_K_ANONYMITY": "1"}  # not a setting: the floor is the lake's
    exact = city.run("query", "footfall", "--role", "steward", "--format", "csv", env=steward_k_of_one)
    assert exact.returncode == 0 and "fewer than 10 devices" in exact.stderr
    city.refused("query", "dwell", "--save")
    program = ("import citylake\nfrom citylake import api\nlake = citylake.open_lake({lake!r})\n"
               "for attempt in (lambda: citylake.connect(lake), lambda: citylake.frame(lake, 'pings').collect(),\n"
               "                lambda: citylake.sql(lake, 'SELECT * FROM pings'), lambda: api.workspace(lake, role='steward')):\n"
               "    try:\n        attempt(); print('GOT IN')\n    except citylake.CitylakeError as err:\n        print('refused:', err)\n")
    done = subprocess.run([sys.executable, "-c", program.format(lake=str(city.lake))], capture_output=True, text=True,
                          env=city.analyst_env, timeout=120)
    assert done.returncode == 0 and "GOT IN" not in done.stdout and done.stdout.count("refused:") == 4, done.stdout + done.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="reading as another OS user needs root and setpriv")
def test_another_os_user_reads_releases_and_nothing_of_the_steward_zone(city, tmp_path):
    def as_nobody(*command: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command], capture_output=True,
                              text=True, errors="replace", env=env, timeout=300)

    lake = Lake.open(city.lake)
    steward_files = [p for p in (city.lake / "steward").rglob("*") if p.is_file()]
    pings_file = next(p for p in steward_files if p.suffix == ".parquet" and "pings" in p.parts)
    for secret in (pings_file, city.lake / "steward" / "privacy.json", city.key,
                   next(p for p in steward_files if "quarantine" in p.parts and p.suffix == ".parquet")):
        assert as_nobody("cat", str(secret)).returncode != 0, f"{secret} is readable by another user"
    assert as_nobody("ls", str(city.lake / "steward")).returncode != 0
    assert all(p.stat().st_mode & 0o077 == 0 for p in steward_files), "a steward file is open to group or others"
    release = next(lake.path("footfall_hourly").glob("*.parquet"))
    assert as_nobody("cat", str(release)).returncode == 0  # releases are for everyone who reaches the lake
    cache = Path(tempfile.mkdtemp(dir="/tmp"))
    os.chmod(cache, 0o777)
    env = {"PATH": os.environ["PATH"], "HOME": str(cache), "XDG_CACHE_HOME": str(cache), "COLUMNS": "200"}
    cli = [sys.executable, "-m", "citylake.cli", "--lake", str(city.lake)]
    read = as_nobody(*cli, "query", "footfall", "--format", "csv", env=env)
    assert read.returncode == 0 and read.stdout.startswith("place_id,name,category,bucket,devices"), read.stderr
    stolen = as_nobody(*cli, "sql", "--role", "steward", "SELECT count(*) FROM pings", env=env)
    assert stolen.returncode == 1 and "steward" in stolen.stderr and "Traceback" not in stolen.stderr
    version = lake.table("footfall_hourly").version()
    for change in (["maintain", "compact", "footfall_hourly"], ["ingest", "places", str(city.base / "city" / "places.geojson")]):
        refused = as_nobody(*cli, *change, env=env)
        assert refused.returncode == 1 and refused.stderr.strip().splitlines() == [refused.stderr.strip()], refused.stderr
        assert "only the lake's owner" in refused.stderr and "panicked" not in refused.stderr
    assert lake.table("footfall_hourly").version() == version


@pytest.mark.parametrize("statement", [
    "EXPLAIN ANALYZE COPY (SELECT 'x' AS place_id) TO '{lake}/releases/footfall_hourly/injected.parquet'",
    "EXPLAIN ANALYZE CREATE TABLE stash AS SELECT * FROM places",
    "EXPLAIN (ANALYZE) SELECT * FROM places",
    "explain /* a comment */ analyse select 1",
])
def test_the_sandbox_writes_nothing(city, statement):
    city.refused("sql", statement.format(lake=city.lake))
    assert not (city.lake / "releases" / "footfall_hourly" / "injected.parquet").exists()


@pytest.mark.parametrize("probe", [
    "SELECT count(*) FROM delta_scan('{lake}/steward/pings') WHERE lat > 31.2",
    "SELECT count(*) FROM delta_scan('{lake}/steward/pings') WHERE lat > 99",
    "EXPLAIN SELECT * FROM delta_scan('{lake}/steward/pings')",
    "SELECT * FROM read_parquet('{lake}/steward/pings/**/*.parquet')",
    "SELECT * FROM parquet_metadata('{lake}/steward/pings/**/*.parquet')",
    "SELECT * FROM duckdb_settings()",
    "SELECT current_setting('allowed_directories')",
    "SELECT * FROM information_schema.tables",
    "SELECT sql FROM duckdb_views()",
    "SELECT * FROM batches",
    "SELECT * FROM privacy_ledger",
])
def test_hidden_tables_leak_nothing_through_files_statistics_or_the_catalog(city, probe):
    """Each is refused before it runs, with the same words whatever the data (no answer depends on file statistics), and
    no error names a path."""
    line = city.refused("sql", probe.format(lake=city.lake))
    assert "/" not in line.split("citylake: error:", 1)[1].replace("`citylake ", "")


def test_the_catalog_an_analyst_sees_holds_no_steward_table_and_no_path(city):
    shell = subprocess.run([sys.executable, "-m", "citylake.cli", "--lake", str(city.lake), "shell"], input=".tables\n", text=True,
                           capture_output=True, env=city.analyst_env, timeout=120)
    listed = shell.stdout.split()
    assert "footfall_hourly" in listed and not {"pings", "stays", "quarantine", "batches", "privacy_ledger"} & set(listed)


def test_a_replaced_release_is_gone_for_readers(city):
    lake = Lake.open(city.lake)
    old = lake.table("footfall_hourly").version()
    old_rows = json.loads(city.ok("sql", "SELECT * FROM footfall_hourly ORDER BY place_id, bucket", "--format", "json"))
    time.sleep(1.1)
    city.ok("publish", "--epsilon", "1", "--delta", "1e-6", steward=True)
    now = json.loads(city.ok("sql", "SELECT * FROM footfall_hourly ORDER BY place_id, bucket", "--format", "json"))
    assert {r["release_id"] for r in now} != {r["release_id"] for r in old_rows}
    with pytest.raises(Exception, match="(?i)not found|no such file"):
        Lake.open(city.lake).table("footfall_hourly", as_of=old).to_pyarrow_table()
    before = old_rows[0]["computed_at"]
    pinned = json.loads(city.ok("sql", "SELECT * FROM footfall_hourly ORDER BY place_id, bucket", "--as-of", before, "--format", "json"))
    assert pinned == now  # a release is read as it is now, whatever time is asked for


def test_runaway_queries_are_cancelled(city):
    limited = {**city.analyst_env, "CITYLAKE_SANDBOX_TIMEOUT_SECONDS": "2", "CITYLAKE_SANDBOX_MEMORY_LIMIT": "200MB"}
    started = time.monotonic()
    line = city.refused("sql", "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r", env=limited)
    assert "cancelled" in line and time.monotonic() - started < 30
    city.refused("sql", "SELECT count(DISTINCT a.range * 100000 + b.range) FROM range(20000) a, range(20000) b", env=limited)
    for runaway in ("SELECT h3_cell_to_children(h3_latlng_to_cell(31.2, 121.4, 0), 15)",  # 4.7e12 cells: an abort, before
                    "SELECT len(h3_cell_to_children(h3_latlng_to_cell(31.2, 121.4, 2), 11)) FROM range(50)",
                    "SELECT h3_grid_disk(h3_latlng_to_cell(31.2, 121.4, 9), 100000)"):
        assert "cells" in city.refused("sql", runaway, env=limited)


def test_quarantine_and_pings_keep_no_raw_id_and_no_more_precision_than_a_city_needs(city):
    shifted = city.base / "shifted.csv"
    shifted.write_text("device_id,ts,lat,lon\n7,alice-phone,2026-11-02T10:00:00Z,31.2,121.4\n2026-11-02T10:00:00Z,alice-phone,31.2,121.4\n"
                       "precise-device,2026-11-02T10:00:00.123456Z,31.123456789,121.987654321\n")
    city.ok("ingest", "pings", str(shifted), steward=True)
    for path in city.lake.rglob("*"):
        assert not (path.is_file() and b"alice-phone" in path.read_bytes()), f"a raw id in {path}"
    stored = city.ok("sql", "--role", "steward", "SELECT ts, lat, lon FROM pings WHERE lon BETWEEN 121.9876 AND 121.9877",
                     "--format", "json", steward=True)
    (row,) = json.loads(stored)
    assert row["ts"].endswith("10:00:00+00:00") and row["lat"] == 31.12346 and row["lon"] == 121.98765


def test_pseudonyms_do_not_link_across_lakes(tmp_path):
    """Each lake gets its own key by default, so one device has unrelated pseudonyms in two lakes."""
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    env.pop("CITYLAKE_PRIVACY_PSEUDONYM_KEY_FILE", None)
    env.pop("CITYLAKE_PSEUDONYM_KEY", None)
    import pyarrow.csv as pcsv

    pings = make_pings(200, days=1, start="2026-11-02")
    ids = [f"device-{i % 20}" for i in range(200)]
    pcsv.write_csv(pings.select(["ts", "lat", "lon"]).append_column("device_id", [ids]), tmp_path / "p.csv")
    seen = []
    for name in ("north", "south"):
        for step in (["init"], ["ingest", "pings", str(tmp_path / "p.csv")]):
            done = subprocess.run([sys.executable, "-m", "citylake.cli", "--lake", str(tmp_path / name), *step], capture_output=True,
                                  text=True, env=env, timeout=120)
            assert done.returncode == 0, done.stderr
        seen.append(set(Lake.open(tmp_path / name).table("pings").to_pyarrow_table()["device_id"].to_pylist()))
    assert len(seen[0]) == len(seen[1]) == 20 and not seen[0] & seen[1]
    assert len(list((tmp_path / "home" / ".config" / "citylake" / "keys").glob("*.key"))) == 2
