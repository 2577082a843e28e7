"""The lake: schemas, atomic writes, refusal to clobber, time travel, maintenance, engines."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from pathlib import Path

import deltalake
import duckdb
import h3
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_pings

from citylake.lake import (
    TABLES,
    BadWriteMode,
    Lake,
    LakeNotFound,
    NoSuchVersion,
    SchemaMismatch,
    TableNotEmpty,
    UnknownTable,
    duckdb_for,
    scan,
)
from citylake.lake.lake import FORMAT_VERSION


def duck_rows(lake: Lake, query: str, **kw) -> list[tuple]:
    return duckdb_for(lake, **kw).execute(query).fetchall()


def test_init_creates_every_table_and_is_idempotent(tmp_path):
    lake = Lake.init(tmp_path / "lake")
    again = Lake.init(tmp_path / "lake", cell_res=9)  # an existing lake keeps its resolutions
    assert again.cell_res == lake.cell_res == 11
    for name in TABLES:
        assert deltalake.DeltaTable.is_deltatable(str(lake.path(name)))
        assert lake.stats(name).rows == 0
    assert json.loads((tmp_path / "lake" / "citylake.json").read_text())["partition_res"] == 5


def test_open_without_init_says_how(tmp_path):
    with pytest.raises(LakeNotFound, match="citylake init"):
        Lake.open(tmp_path / "nothing")


def test_unknown_table_lists_the_known(lake):
    with pytest.raises(UnknownTable, match="tables are: places"):
        lake.stats("pingz")


def test_schema_records_crs_and_resolutions(lake):
    schema = deltalake.DeltaTable(str(lake.path("places"))).schema()
    fields = {f.name: f for f in schema.fields}
    assert fields["geometry"].metadata["crs"] == "EPSG:4326"
    assert fields["geometry"].metadata["encoding"] == "WKB"
    pings = {f.name: f for f in deltalake.DeltaTable(str(lake.path("pings"))).schema().fields}
    assert pings["h3_cell"].metadata["h3_resolution"] == "11"
    assert pings["partition_cell"].metadata["h3_resolution"] == "5"


def test_written_rows_read_back_identically_in_duckdb_and_polars(lake, pings):
    lake.write("pings", pings)
    via_polars = scan(lake, "pings").sort("device_id", "ts").collect()
    via_duckdb = pl.from_arrow(duckdb_for(lake).execute("SELECT * FROM pings ORDER BY device_id, ts").to_arrow_table())
    assert via_polars.height == via_duckdb.height == pings.num_rows
    assert via_polars.select(sorted(via_polars.columns)).equals(via_duckdb.select(sorted(via_polars.columns)))
    original = pl.from_arrow(pings).sort("device_id", "ts")
    assert via_polars.select(original.columns).equals(original)


def test_partition_keys_follow_h3_and_utc_date(lake, pings):
    lake.write("pings", pings)
    rows = scan(lake, "pings").select("h3_cell", "ts", "partition_cell", "date").head(300).collect()
    for cell, ts, parent, day in rows.iter_rows():
        assert parent == h3.str_to_int(h3.cell_to_parent(h3.int_to_str(cell), lake.partition_res))
        assert day == ts.astimezone(dt.timezone.utc).date()


def test_files_are_sorted_by_cell_then_time(lake, pings):
    lake.write("pings", pings)
    for path in Path(lake.path("pings")).rglob("*.parquet"):
        frame = pl.from_arrow(pq.read_table(path, columns=["h3_cell", "ts"]))
        assert frame.equals(frame.sort("h3_cell", "ts"))


def test_writes_refuse_to_clobber_by_default(lake, pings):
    assert lake.write("pings", pings) == 1
    with pytest.raises(TableNotEmpty, match="mode='append'"):
        lake.write("pings", pings)
    assert lake.write("pings", pings.slice(0, 10), mode="append") == 2
    assert lake.rows("pings") == pings.num_rows + 10
    assert lake.write("pings", pings.slice(0, 5), mode="overwrite") == 3
    assert lake.rows("pings") == 5
    with pytest.raises(BadWriteMode):
        lake.write("pings", pings, mode="upsert")


def test_time_travel_by_version_and_time_in_both_engines(lake, pings):
    lake.write("pings", pings.slice(0, 100))
    time.sleep(0.05)
    between = dt.datetime.now(dt.timezone.utc)
    time.sleep(0.05)
    lake.write("pings", pings.slice(100, 50), mode="append")
    assert lake.rows("pings", as_of=1) == 100
    assert lake.rows("pings", as_of=between) == 100
    assert lake.rows("pings", as_of=between.isoformat()) == 100
    assert scan(lake, "pings", as_of=1).select(pl.len()).collect().item() == 100
    assert duck_rows(lake, "SELECT count(*) FROM pings", versions={"pings": 1}) == [(100,)]
    assert duck_rows(lake, "SELECT count(*) FROM pings", as_of=between) == [(100,)]
    assert duck_rows(lake, "SELECT count(*) FROM pings") == [(150,)]


def test_time_travel_outside_history_is_refused(lake, pings):
    lake.write("pings", pings.slice(0, 10))
    with pytest.raises(NoSuchVersion, match="versions run from 0 to 1"):
        lake.rows("pings", as_of=7)
    with pytest.raises(NoSuchVersion, match="created at"):
        lake.rows("pings", as_of="1999-01-01T00:00:00Z")
    with pytest.raises(NoSuchVersion, match="ISO time"):
        lake.rows("pings", as_of="yesterday")
    with pytest.raises(NoSuchVersion, match="belongs to one table"):
        duckdb_for(lake, as_of=1)


def test_deletes_are_seen_by_both_engines(lake, pings):
    lake.write("pings", pings)
    deltalake.DeltaTable(str(lake.path("pings"))).delete("lat < 31.25")
    want = int(np.sum(pings.column("lat").to_numpy() >= 31.25))
    assert scan(lake, "pings").select(pl.len()).collect().item() == want
    assert duck_rows(lake, "SELECT count(*) FROM pings") == [(want,)]


def test_compaction_merges_files_and_keeps_every_row(lake):
    for seed in range(6):
        lake.write("pings", make_pings(2_000, seed=seed, days=1), mode="append")
    before = lake.stats("pings")
    checksum = duck_rows(lake, "SELECT count(*), bit_xor(hash(device_id, ts, lat, lon)) FROM pings")
    lake.compact("pings")
    after = lake.stats("pings")
    assert after.files < before.files and after.partitions == before.partitions
    assert after.rows == before.rows
    assert duck_rows(lake, "SELECT count(*), bit_xor(hash(device_id, ts, lat, lon)) FROM pings") == checksum
    assert lake.history("pings", limit=1)[0]["operation"] == "OPTIMIZE"
    assert page_compressions(lake, "pings") == {"UNCOMPRESSED"}, "compaction rewrote pings with another compression"


def page_compressions(lake: Lake, name: str) -> set[str]:
    files = [pq.ParquetFile(uri.removeprefix("file://")).metadata for uri in deltalake.DeltaTable(str(lake.path(name))).file_uris()]
    return {meta.row_group(0).column(i).compression for meta in files for i in range(meta.num_columns)}


def test_each_table_is_written_with_its_own_compression(lake, pings):
    lake.write("pings", pings)
    lake.write("readings", pa.table({"sensor_id": ["s1"] * 3, "ts": pings["ts"][:3], "metric": ["pm25"] * 3,
                                     "value": [1.0, 2.0, 3.0], "h3_cell": pings["h3_cell"][:3]}))
    assert page_compressions(lake, "pings") == {TABLES["pings"].compression} == {"UNCOMPRESSED"}
    assert page_compressions(lake, "readings") == {TABLES["readings"].compression} == {"SNAPPY"}


def test_vacuum_dry_run_lists_and_apply_removes(lake, pings):
    lake.write("pings", pings)
    lake.write("pings", pings.slice(0, 10), mode="overwrite")
    stale = lake.vacuum("pings", retention_hours=0, dry_run=True)
    assert stale and all(Path(lake.path("pings"), f).exists() for f in stale)
    removed = lake.vacuum("pings", retention_hours=0, dry_run=False)
    assert sorted(removed) == sorted(stale)
    assert not any(Path(lake.path("pings"), f).exists() for f in stale)
    assert lake.rows("pings") == 10 and duck_rows(lake, "SELECT count(*) FROM pings") == [(10,)]


def test_add_column_evolves_the_schema(lake, pings):
    lake.write("pings", pings.slice(0, 10))
    lake.add_column("pings", "speed_mps", "double")
    later = pings.slice(10, 5).append_column("speed_mps", pa.array([1.5] * 5))
    lake.write("pings", later, mode="append")
    speeds = duck_rows(lake, "SELECT speed_mps IS NULL AS missing, count(*) FROM pings GROUP BY 1 ORDER BY 1")
    assert speeds == [(False, 5), (True, 10)]
    assert scan(lake, "pings").select(pl.col("speed_mps").null_count()).collect().item() == 10
    with pytest.raises(SchemaMismatch, match="already exists"):
        lake.add_column("pings", "speed_mps", "double")


def test_schema_mismatches_name_the_column(lake, pings):
    with pytest.raises(SchemaMismatch, match="'colour'.*add_column"):
        lake.write("pings", pings.append_column("colour", pa.array(["red"] * pings.num_rows)))
    with pytest.raises(SchemaMismatch, match="'device_id'.*required"):
        lake.write("pings", pings.drop_columns(["device_id"]))
    with pytest.raises(SchemaMismatch, match="'lat'"):
        lake.write("pings", pings.set_column(2, "lat", pa.array(["north"] * pings.num_rows)))
    naive = pings.set_column(1, "ts", pings.column("ts").cast(pa.timestamp("us")))
    with pytest.raises(SchemaMismatch, match="time zone"):
        lake.write("pings", naive)
    assert lake.rows("pings") == 0


def test_stats_count_partitions_files_and_bytes(lake, pings):
    lake.write("pings", pings)
    stats = lake.stats("pings")
    frame = pl.from_arrow(pings)
    parents = frame.select(pl.col("h3_cell")).to_series().to_numpy()
    from citylake.h3_index import cell_to_parent

    keys = {(p, d) for p, d in zip(cell_to_parent(parents, 5), frame["ts"].dt.date())}
    assert stats.partitions == len(keys) == stats.files
    assert stats.rows == pings.num_rows
    assert stats.bytes == sum(p.stat().st_size for p in Path(lake.path("pings")).rglob("*.parquet"))


def test_rows_per_partition_come_from_the_log_and_match_a_scan(lake, pings):
    lake.write("pings", pings.slice(0, 5_000))
    lake.write("pings", pings.slice(5_000), mode="append")  # two commits: counts add up over files
    per_day = lake.rows_per_partition("pings", "date")
    scanned = pl.from_arrow(pings).group_by(pl.col("ts").dt.date().cast(pl.String)).len()
    assert per_day == dict(scanned.iter_rows())
    with pytest.raises(ValueError, match="partition columns are"):
        lake.rows_per_partition("pings", "device_id")


def test_append_new_finds_present_keys_at_the_edges_of_the_new_rows_ranges(lake):
    early, late = make_pings(3_000, seed=1, start="2026-11-01"), make_pings(3_000, seed=2, start="2026-11-01")
    late = late.set_column(1, "ts", pa.compute.add(late.column("ts"), pa.scalar(dt.timedelta(hours=1))))
    _, inserted, _ = lake.append_new("pings", early)
    assert inserted == 3_000
    ts = pl.from_arrow(early)["ts"]
    edges = pl.from_arrow(early).filter((pl.col("ts") == ts.min()) | (pl.col("ts") == ts.max()))  # the range's own ends
    batch = pa.concat_tables([late, edges.to_arrow().cast(late.schema)])
    _, inserted, duplicates = lake.append_new("pings", batch)
    assert (inserted, duplicates) == (3_000, edges.height)
    assert lake.rows("pings") == 6_000


# --- partition pruning: proved, not assumed ------------------------------------------------


def one_partition(lake: Lake) -> tuple[Path, int, dt.date]:
    files = sorted(Path(lake.path("pings")).rglob("*.parquet"))
    target = files[len(files) // 2]
    cell = int(target.parent.parent.name.split("=")[1])
    day = dt.date.fromisoformat(target.parent.name.split("=")[1])
    return target, cell, day


def test_duckdb_reads_only_the_partition_asked_for(lake):
    lake.write("pings", make_pings(30_000))
    files = lake.stats("pings").files
    _, cell, day = one_partition(lake)
    con = duckdb_for(lake)
    plan = con.execute(f"EXPLAIN ANALYZE SELECT count(*) FROM pings WHERE partition_cell = {cell} AND date = DATE '{day}'").fetchall()
    text = plan[0][1]
    assert re.search(rf"Scanning Files: 1/{files}\b", text), text
    assert re.search(r"Total Files Read: 1\b", text), text


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_queries_on_one_partition_never_open_the_others(lake, engine):
    """Corrupt every other data file: a query that opened one would fail."""
    lake.write("pings", make_pings(30_000))
    target, cell, day = one_partition(lake)
    want = scan(lake, "pings").filter((pl.col("partition_cell") == cell) & (pl.col("date") == day)).select(pl.len()).collect().item()
    assert want > 0
    for path in Path(lake.path("pings")).rglob("*.parquet"):
        if path != target:
            path.write_bytes(b"not a parquet file")
    if engine == "duckdb":
        con = duckdb_for(lake)
        got = con.execute(f"SELECT count(*) FROM pings WHERE partition_cell = {cell} AND date = DATE '{day}'").fetchone()[0]
        with pytest.raises(duckdb.Error):  # the control: a scan that does open them fails
            con.execute("SELECT count(*) FROM pings").fetchall()
    else:
        query = scan(lake, "pings").filter((pl.col("partition_cell") == cell) & (pl.col("date") == day))
        assert query.explain().count(".parquet") == 1
        got = query.select(pl.len()).collect().item()
    assert got == want


def test_run_keys_remember_every_key_through_growth():
    from citylake.lake.run_keys import FIRST_SLOTS, RunKeys

    rng = np.random.default_rng(5)
    run, seen_before = RunKeys(None, seen_version=0), set()
    for chunk in range(4):  # 4 × 30,000 keys, a third repeated: the table doubles past FIRST_SLOTS more than once
        keys = rng.integers(0, 60_000, 30_000)
        rows = pl.DataFrame({"a": keys, "b": keys % 7})
        suspects = run.suspects(rows, ["a", "b"])
        expected = []
        for k in keys.tolist():
            expected.append(k in seen_before)
            seen_before.add(k)
        assert suspects.tolist() == expected, chunk
    assert run.slots.size > FIRST_SLOTS and run.used == len(seen_before)


def test_a_lake_from_before_zones_moves_into_them_when_its_owner_opens_it(tmp_path):
    """Format 1 kept every table in tables/: opening it moves people data and bookkeeping into the 0700 steward zone."""
    import json
    import os
    import stat

    lake = Lake.init(tmp_path / "lake")
    lake.write("pings", make_pings(500))
    marker = tmp_path / "lake" / "citylake.json"
    for spec in TABLES.values():  # put it back as format 1 laid it out
        if spec.zone != "shared":
            lake.path(spec.name).rename(tmp_path / "lake" / "tables" / spec.name)
    (tmp_path / "lake" / "steward").rmdir()
    facts = json.loads(marker.read_text())
    marker.write_text(json.dumps({k: v for k, v in facts.items() if k != "lake_id"} | {"format": 1}))
    opened = Lake.open(tmp_path / "lake")
    assert opened.rows("pings") == 500 and opened.path("pings").parent.name == "steward" and opened.lake_id
    assert not (tmp_path / "lake" / "tables" / "pings").exists() and json.loads(marker.read_text())["format"] == FORMAT_VERSION
    steward = tmp_path / "lake" / "steward"
    assert stat.S_IMODE(steward.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in steward.rglob("*")), "a steward file is open to others"
    assert os.access(opened.path("footfall_hourly"), os.R_OK)


def test_the_city_time_zone_is_kept_with_the_lake_and_a_bad_one_refused(tmp_path):
    from citylake.lake import BadLakeFile, BadTimezone

    made = Lake.init(tmp_path / "lake", timezone="Asia/Shanghai")
    assert Lake.open(made.root).timezone == "Asia/Shanghai" and Lake.init(made.root).timezone == "Asia/Shanghai"  # kept
    Lake.init(made.root, timezone="Europe/Berlin")  # given again: changed, rows untouched (they are UTC)
    assert json.loads((made.root / "citylake.json").read_text())["timezone"] == "Europe/Berlin"
    assert Lake.init(tmp_path / "plain").timezone == "UTC"
    with pytest.raises(BadTimezone, match="IANA name such as Asia/Shanghai"):
        Lake.init(tmp_path / "mars", timezone="Mars/Olympus")
    facts = json.loads((made.root / "citylake.json").read_text())
    (made.root / "citylake.json").write_text(json.dumps({**facts, "timezone": "Nowhere/Land"}))
    with pytest.raises(BadLakeFile, match="'timezone' is 'Nowhere/Land'"):
        Lake.open(made.root)
