"""The citylake command, run as a user runs it: a real subprocess."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from conftest import make_pings

from citylake.lake import Lake

pytestmark = pytest.mark.integration


def citylake(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "citylake.cli", *args],
        capture_output=True, text=True, cwd=cwd, env={**os.environ, "COLUMNS": "200", **(env or {})}, timeout=300,
    )


def ok(*args: str, **kw) -> str:
    result = citylake(*args, **kw)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "city"
    ok("generate-city", "--out", str(out), "--devices", "60", "--days", "2", "--seed", "3")
    return out


@pytest.fixture(scope="module")
def sample_lake(city) -> str:
    root = str(city.parent / "lake")
    ok("--lake", root, "init")
    for kind, name in (("places", "places.geojson"), ("sensors", "sensors.csv"), ("readings", "readings.csv"), ("pings", "pings.csv")):
        assert f"→ {kind}:" in ok("--lake", root, "ingest", kind, str(city / name))
    return root


def one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("citylake: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_tables_reports_what_the_lake_holds(sample_lake, city):
    manifest = json.loads((city / "manifest.json").read_text())
    rows = {r["name"]: r for r in json.loads(ok("--lake", sample_lake, "tables", "--format", "json"))}
    mess = manifest["mess"]["pings"]
    assert rows["pings"]["rows"] == manifest["rows"]["pings"] - mess["duplicated_rows"] - mess["swapped_coordinates"]
    assert rows["places"]["rows"] == manifest["rows"]["places"] and rows["sensors"]["rows"] == manifest["rows"]["sensors"]
    assert rows["quarantine"]["rows"] == mess["swapped_coordinates"]
    assert rows["batches"]["rows"] == 4
    assert rows["pings"]["partitions"] >= 2 and rows["pings"]["files"] >= rows["pings"]["partitions"]
    assert rows["pings"]["bytes"] > 0


def test_sql_in_every_format(sample_lake):
    query = "SELECT h3_cell_to_string(h3_cell_to_parent(h3_cell, 7)) AS cell, count(*) AS n FROM readings GROUP BY 1 ORDER BY 2 DESC, 1"
    as_json = json.loads(ok("--lake", sample_lake, "sql", query, "--format", "json"))
    as_csv = list(csv.DictReader(io.StringIO(ok("--lake", sample_lake, "sql", query, "--format", "csv"))))
    total = json.loads(ok("--lake", sample_lake, "sql", "SELECT count(*) AS n FROM readings", "--format", "json"))[0]["n"]
    assert sum(r["n"] for r in as_json) == total > 0
    assert [(r["cell"], int(r["n"])) for r in as_csv] == [(r["cell"], r["n"]) for r in as_json]
    table = ok("--lake", sample_lake, "sql", query)
    assert as_json[0]["cell"] in table
    for text_filters in ("SELECT count(*) AS n FROM readings r JOIN sensors s USING (sensor_id) WHERE s.kind = 'air_quality' "
                         "AND r.metric = 'pm25'",
                         "SELECT count(*) AS n FROM sensors WHERE kind IN ('air_quality', 'noise') AND sensor_id >= 'A'"):
        assert json.loads(ok("--lake", sample_lake, "sql", text_filters, "--format", "json"))[0]["n"] > 0  # text filters in the scans


def test_lake_from_environment_then_default_directory(sample_lake, tmp_path):
    assert "pings" in ok("tables", env={"CITYLAKE_LAKE": sample_lake})
    ok("init", cwd=tmp_path)
    assert (tmp_path / "citylake-data" / "citylake.json").is_file()


def test_time_travel_from_the_command_line(sample_lake):
    rows = json.loads(ok("--lake", sample_lake, "tables", "--as-of", "0", "--format", "json"))
    assert {r["rows"] for r in rows} == {0}


def test_several_pings_files_land_each_then_merge_once(tmp_path):
    """Three files over the same days in one command: a line per file, then the partitions they touched merged once (one
    OPTIMIZE after the three writes, not one per file after the first), each in one file; the rows those of three commands."""
    files = []
    for seed in range(3):
        rows = make_pings(3_000, seed=seed, days=2).drop_columns(["h3_cell"])
        files.append(tmp_path / f"pings-{seed}.csv")
        files[-1].write_text(pl.from_arrow(rows).with_columns(pl.col("device_id").cast(pl.String)).write_csv())
    together, apart = str(tmp_path / "together"), str(tmp_path / "apart")
    for root in (together, apart):
        ok("--lake", root, "init")
    mistyped = citylake("--lake", together, "ingest", "pings", str(files[0]), str(tmp_path / "pings-9.csv"), str(files[1]))
    assert mistyped.returncode == 1 and mistyped.stderr.strip().splitlines() == [
        f"citylake: error: {tmp_path / 'pings-9.csv'}: no such file; none of the 3 files was ingested"]
    assert Lake.open(together).rows("pings") == 0  # every name checked before the first file is read
    done = citylake("--lake", together, "ingest", "pings", *map(str, files))
    assert done.returncode == 0 and done.stdout.count("→ pings: ") == 3, done.stderr
    assert "merged the files of" in done.stderr and "Traceback" not in done.stderr
    for path in files:
        ok("--lake", apart, "ingest", "pings", str(path))
    operations = [h["operation"] for h in json.loads(ok("--lake", together, "maintain", "history", "pings", "--format", "json"))]
    assert operations == ["OPTIMIZE", "WRITE", "WRITE", "WRITE", "CREATE TABLE"]
    stats = Lake.open(together).stats("pings")
    assert stats.files == stats.partitions
    ordered = ["device_id", "ts", "lat", "lon"]
    assert Lake.open(together).table("pings").to_pyarrow_table().sort_by([(c, "ascending") for c in ordered]).equals(
        Lake.open(apart).table("pings").to_pyarrow_table().sort_by([(c, "ascending") for c in ordered]))


def test_maintenance_commands(tmp_path):
    lake = Lake.init(tmp_path / "lake")
    for seed in range(3):  # three appends to the same partitions: fragmented
        lake.write("pings", make_pings(1_000, seed=seed, days=1), mode="append")
    files, partitions = lake.stats("pings").files, lake.stats("pings").partitions
    before = set(lake.table("pings").file_uris())
    compacted = ok("--lake", str(lake.root), "maintain", "compact", "pings")
    assert f"pings: {files:,} files → {partitions:,}" in compacted  # one file per partition
    replaced = before - set(lake.table("pings").file_uris())
    dry = ok("--lake", str(lake.root), "maintain", "vacuum", "pings", "--retention-hours", "0")
    assert f"would remove {len(replaced):,} files" in dry and "nothing deleted" in dry
    applied = ok("--lake", str(lake.root), "maintain", "vacuum", "pings", "--retention-hours", "0", "--apply")
    assert f"removed {len(replaced):,} files" in applied
    assert not any(Path(uri).exists() for uri in replaced)
    history = json.loads(ok("--lake", str(lake.root), "maintain", "history", "pings", "--format", "json"))
    assert [h["operation"] for h in history] == ["VACUUM END", "VACUUM START", "OPTIMIZE", "WRITE", "WRITE", "WRITE", "CREATE TABLE"]
    assert lake.rows("pings") == 3_000


@pytest.mark.parametrize("args, fragments", [
    (["sql", "SELECT * FROM nope"], ["nope", "does not exist"]),
    (["sql", "SELEC 1"], ["syntax error"]),
    (["sql", "SELECT h3_latlng_to_cell(95.0, 0.0, 9)"], ["lat 95.0", "EPSG:4326"]),
    (["maintain", "history", "pingz"], ["'pingz'", "tables are:"]),
    (["tables", "--as-of", "99"], ["versions run from 0 to"]),
])
def test_user_mistakes_print_one_line(sample_lake, args, fragments):
    one_line_error(citylake("--lake", sample_lake, *args), *fragments)


def test_missing_lake_says_to_init(tmp_path):
    one_line_error(citylake("--lake", str(tmp_path / "none"), "tables"), "citylake init")


def test_bad_setting_names_its_source(tmp_path):
    one_line_error(citylake("tables", env={"CITYLAKE_H3_CELL_RESOLUTION": "17"}, cwd=tmp_path), "$CITYLAKE_H3_CELL_RESOLUTION")
    (tmp_path / "citylake.toml").write_text("[h3]\ncell_resolutoin = 9\n")
    one_line_error(citylake("tables", cwd=tmp_path), "h3.cell_resolutoin", "no such setting")


def test_a_settings_file_other_users_can_change_is_refused(tmp_path):
    """A ``citylake.toml`` another OS user can write (left in a shared working directory) could point the lake, its object
    store or the key file elsewhere: refused in one line that says the fix, before anything is read or written; once
    only its owner can write it, it is taken."""
    planted = tmp_path / "citylake.toml"
    planted.write_text('lake = "elsewhere"\n[storage]\nendpoint = "http://127.0.0.1:9"\n')
    for mode in (0o666, 0o646):
        planted.chmod(mode)
        one_line_error(citylake("settings", cwd=tmp_path), "anyone can change it", f"chmod go-w {planted.name}")
        one_line_error(citylake("--config", str(planted), "settings"), "anyone can change it", f"chmod go-w {planted}")
    planted.chmod(0o644)
    shown = citylake("settings", cwd=tmp_path)
    assert shown.returncode == 0 and "elsewhere" in shown.stdout, shown.stderr
    (tmp_path / "mine.toml").symlink_to(planted)  # a link of your own to a file of your own: taken
    assert "elsewhere" in citylake("--config", str(tmp_path / "mine.toml"), "settings").stdout


def test_a_settings_file_with_an_acl_or_that_is_no_file_is_refused(tmp_path):
    """An access control list can let another user write a file whose mode says no one else may: refused (its fix named).
    A FIFO planted as the file would hang a plain open: refused at once, as anything but a regular file is."""
    import struct

    config = tmp_path / "citylake.toml"
    config.write_text('lake = "elsewhere"\n')
    config.chmod(0o644)
    entries = [(0x01, 6, 0xFFFFFFFF), (0x02, 6, 65534), (0x04, 4, 0xFFFFFFFF), (0x10, 6, 0xFFFFFFFF), (0x20, 4, 0xFFFFFFFF)]
    acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *entry) for entry in entries)  # user::rw-, user:nobody:rw-, …
    os.setxattr(config, "system.posix_acl_access", acl)  # the test's file system takes ACLs (ext4, tmpfs): a claim to hold
    one_line_error(citylake("settings", cwd=tmp_path), "access control list", f"setfacl -b {config.name}")
    os.removexattr(config, "system.posix_acl_access")
    assert citylake("settings", cwd=tmp_path).returncode == 0
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    one_line_error(citylake("--config", str(fifo), "settings"), "not a regular file")


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user or group needs root")
def test_a_settings_file_of_another_user_or_group_is_refused(tmp_path):
    """Owned by another user, or writable by a group that is not the owner's own: refused. Writable by the owner's own
    group (a user private group, as a umask of 002 makes files): taken."""
    planted = tmp_path / "citylake.toml"
    planted.write_text('lake = "elsewhere"\n')
    planted.chmod(0o664)
    os.chown(planted, 0, 65534)  # root's file, writable by the group nogroup
    one_line_error(citylake("settings", cwd=tmp_path), "group nogroup can change it", "chmod go-w")
    os.chown(planted, 0, 0)  # root's own group, no one else in it
    assert citylake("settings", cwd=tmp_path).returncode == 0
    planted.chmod(0o644)
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "citylake.toml").symlink_to(planted)  # another user's link to a file of yours: it picks what is read
    os.lchown(tmp_path / "linked" / "citylake.toml", 65534, 65534)
    one_line_error(citylake("settings", cwd=tmp_path / "linked"), "belongs to nobody, not you", "--config FILE")
    os.chown(planted, 65534, 65534)
    one_line_error(citylake("settings", cwd=tmp_path), "belongs to nobody, not you", "--config FILE")


def test_help_explains_with_examples():
    top = ok("--help")
    for command in ("init", "tables", "sql", "maintain", "settings", "ingest", "generate-city", "replay"):
        assert command in top
    assert "citylake sql" in ok("sql", "--help")
    assert "--dry-run / --apply" in ok("maintain", "vacuum", "--help")
    assert "citylake replay --broker" in ok("replay", "--help")


def test_settings_lists_every_setting_with_its_source(tmp_path):
    text = ok("settings", cwd=tmp_path, env={"CITYLAKE_DUCKDB_THREADS": "2"})
    assert "h3.partition_resolution" in text and "$CITYLAKE_DUCKDB_THREADS" in text


def test_query_near_and_profile_from_the_command_line(sample_lake):
    near = json.loads(ok("--lake", sample_lake, "query", "near", "--place", "places:expo", "--radius", "300", "--format", "json"))
    assert near and all(r["place_id"] == "places:expo" and r["distance_m"] <= 300 for r in near)
    knn = json.loads(ok("--lake", sample_lake, "query", "near", "--category", "park", "--what", "pois", "--knn", "2", "--format", "json"))
    assert sorted({r["rank"] for r in knn}) == [1, 2]
    result = citylake("--lake", sample_lake, "query", "profile", "--place", "places:expo", "--role", "steward", "--format", "csv")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("place_id,name,category,bucket,pings,devices") and "withheld (fewer than 10 devices)" in result.stderr
    flows = json.loads(ok("--lake", sample_lake, "query", "od", "--cells", "7", "--role", "steward", "--k", "2", "--format", "json"))
    assert flows and all(len(r["origin"]) == 15 and r["devices"] >= 2 for r in flows)  # hex cells at the edges
    for command in ("near", "profile", "footfall", "dwell", "od"):
        assert "Example" in ok("query", command, "--help")
    one_line_error(citylake("--lake", sample_lake, "query", "near", "--place", "nowhere"), "no place matches")


def test_only_the_steward_gets_exact_results_and_sets_k(sample_lake, tmp_path):
    no_key = {"CITYLAKE_PRIVACY_PSEUDONYM_KEY_FILE": str(tmp_path / "absent.key"), "CITYLAKE_PSEUDONYM_KEY": ""}
    one_line_error(citylake("--lake", sample_lake, "query", "footfall", "--role", "steward", env=no_key), "steward", "key")
    one_line_error(citylake("--lake", sample_lake, "query", "footfall", "--k", "50"), "--k", "steward")  # an analyst's k means nothing
    raising = citylake("--lake", sample_lake, "query", "footfall", "--role", "steward", "--k", "50", "--format", "csv")
    assert raising.returncode == 0 and "fewer than 50 devices" in raising.stderr
    lowered = citylake("--lake", sample_lake, "query", "footfall", "--role", "steward", "--k", "2", "--format", "csv")
    assert lowered.returncode == 0 and "fewer than 2 devices" in lowered.stderr
    for people in (["query", "dwell"], ["query", "od", "--cells", "7"]):
        one_line_error(citylake("--lake", sample_lake, *people), "steward")


def test_releases_are_what_analysts_read(sample_lake, tmp_path):
    no_key = {"CITYLAKE_PRIVACY_PSEUDONYM_KEY_FILE": str(tmp_path / "absent.key"), "CITYLAKE_PSEUDONYM_KEY": ""}
    one_line_error(citylake("--lake", sample_lake, "publish", env=no_key), "key")
    assert "released footfall_hourly" in ok("--lake", sample_lake, "publish", "--epsilon", "0.5", "--delta", "0")
    rows = json.loads(ok("--lake", sample_lake, "sql", "SELECT place_id, bucket, devices FROM footfall_hourly ORDER BY place_id, bucket",
                         "--format", "json", env=no_key))
    read = citylake("--lake", sample_lake, "query", "footfall", "--format", "json", env=no_key)
    assert read.returncode == 0 and "withheld" not in read.stderr and "differentially private" in read.stderr
    assert [(r["place_id"], r["bucket"], r["devices"]) for r in json.loads(read.stdout)] == \
        [(r["place_id"], r["bucket"], r["devices"]) for r in rows]
    about = json.loads(ok("--lake", sample_lake, "sql", "SELECT * FROM releases", "--format", "json", env=no_key))
    assert {r["table_name"] for r in about} == {"footfall_hourly", "footfall_cells_hourly", "od_daily"}
    assert all(r["mechanism"] == "laplace" and r["delta"] == 0 and r["threshold"] >= 10 for r in about)
    assert all(r["devices"] >= min(a["threshold"] for a in about) for r in rows)
    one_line_error(citylake("--lake", sample_lake, "publish", "--epsilon", "0.6"), "budget")  # 0.5 + 0.6 > 1 per day
    one_line_error(citylake("--lake", sample_lake, "sql", "SELECT count(*) FROM pings", env=no_key), "not visible to analysts")


def test_shell_runs_multi_line_statements_and_keeps_the_analyst_rules(sample_lake):
    script = "SELECT category,\n count(*) AS n FROM places\n GROUP BY 1 ORDER BY 1;\n.tables\nCOPY places TO '/tmp/x.csv';\n" \
             "SELECT * FROM read_csv('/etc/passwd');\n.nope\nSELECT 41 + 1 AS answer;\n.quit\nSELECT 'not reached';\n"
    result = subprocess.run([sys.executable, "-m", "citylake.cli", "--lake", sample_lake, "shell"], input=script, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "park" in result.stdout and "42" in result.stdout and "not reached" not in result.stdout
    assert "footfall_hourly" in result.stdout and "pings" not in result.stdout.split("answer")[0].split("place_cells")[0]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3 and "COPY" in errors[0] and "unknown command .nope" in errors[2], result.stderr
    assert "Traceback" not in result.stderr
