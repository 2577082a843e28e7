"""Pings ingested on a Dask cluster (ingestion/fanout.py): the rows, rejects and ledger one process lands, exactly
once, in one commit — with another writer in between, a client killed before its commit, and files split by row group."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import TEST_KEY, with_key

from citylake.analytics import dask_client
from citylake.ingestion import ingest_pings, ingest_pings_on_cluster, ledger
from citylake.lake import Lake
from citylake.lake.data_files import file_stats

pytestmark = pytest.mark.integration

KEY = TEST_KEY.encode()
KEYS = ["device_id", "ts", "lat", "lon"]


@pytest.fixture(scope="module")
def client():
    with dask_client(workers=2, announce=lambda _: None) as client:
        yield client


def raw_pings(n: int, *, seed: int, start: str = "2026-11-01", days: int = 4) -> pl.DataFrame:
    """Pings as a feed sends them (text ids, ISO times), a few repeated and a few broken."""
    rng = np.random.default_rng(seed)
    ts = np.datetime64(start, "s") + rng.integers(0, days * 86400, n).astype("timedelta64[s]")
    frame = pl.DataFrame({"device_id": [f"dev-{d}" for d in rng.integers(0, 300, n)],
                          "ts": [f"{t}Z" for t in ts.astype(str)],
                          "lat": np.round(rng.uniform(31.1, 31.3, n), 5).astype(str),
                          "lon": np.round(rng.uniform(121.3, 121.6, n), 5).astype(str)})
    broken = rng.choice(n, n // 50, replace=False)
    frame = frame.with_columns(pl.when(pl.int_range(n).is_in(broken)).then(pl.lit("95.5")).otherwise("lat").alias("lat"))
    return pl.concat([frame, frame.sample(n // 20, seed=seed)])  # repeats inside the file


def write_inputs(folder: Path) -> list[str]:
    """A CSV, and a Parquet file of five row groups that repeats part of the CSV (a feed sending a day twice)."""
    csv = raw_pings(6_000, seed=1)
    parquet = pl.concat([raw_pings(9_000, seed=2), csv.slice(0, 1_500)])
    csv.write_csv(folder / "a.csv")
    pq.write_table(parquet.to_arrow(), folder / "b.parquet", row_group_size=2_000)
    return [str(folder / "a.csv"), str(folder / "b.parquet")]


def rows(lake: Lake) -> pl.DataFrame:
    return pl.scan_delta(lake.table_uri("pings")).collect().sort(KEYS)


def quarantined(lake: Lake) -> pl.DataFrame:
    return (pl.from_arrow(lake.table("quarantine").to_pyarrow_table(columns=["source", "row_number", "reason"]))
            .sort("source", "row_number"))


def one_process(folder: Path, files: list[str]) -> Lake:
    """The oracle: the same files through the single-process ingest."""
    lake = Lake.init(folder)
    for path in files:
        ingest_pings(lake, path, key=KEY)
    return lake


def test_a_cluster_lands_what_one_process_lands_once(client, tmp_path):
    files = write_inputs(tmp_path)
    lake = Lake.init(tmp_path / "lake")
    report = ingest_pings_on_cluster(lake, files, client, key=KEY, rows_per_task=3_000)
    oracle = one_process(tmp_path / "oracle", files)
    assert rows(lake).equals(rows(oracle)) and rows(lake).select(KEYS).is_duplicated().sum() == 0
    assert quarantined(lake).equals(quarantined(oracle))
    assert report.accepted == rows(lake).height and report.rejected == quarantined(lake).height
    assert report.rows_in == 6_300 + 10_950 and report.accepted + report.rejected + report.duplicates == report.rows_in
    assert len(lake.history("pings")) == 2  # the table's creation and one commit for both files
    batches = pl.from_arrow(lake.table("batches").to_pyarrow_table())
    assert batches.height == 4 and batches["rows_accepted"].sum() == report.accepted  # the CSV, and 3 pieces of the Parquet file
    assert set(batches["source"]) == set(files) and ledger.check(lake).ok

    again = ingest_pings_on_cluster(lake, files, client, key=KEY, rows_per_task=3_000)
    assert again.accepted == 0 and again.duplicates == report.accepted + report.duplicates
    assert rows(lake).height == report.accepted and quarantined(lake).height == report.rejected and ledger.check(lake).ok


def test_a_large_parquet_file_is_staged_and_settled_in_one_process_and_lands_what_a_buffered_run_lands(tmp_path, monkeypatch):
    """One process ingests a Parquet file of more than ``STAGED_ABOVE_ROWS`` rows by stage and settle on two threads
    (memory two tasks' rows, not a buffer's; dense days in shares, read from the staged files a row group at a time): the
    rows, rejects, duplicates and ledger of the buffered run, in one commit."""
    import functools

    from citylake.ingestion import fanout, location

    files = write_inputs(tmp_path)
    oracle = one_process(tmp_path / "oracle", files)  # both files buffered: under the threshold
    monkeypatch.setattr(location, "STAGED_ABOVE_ROWS", 5_000)  # the Parquet file (10,950 rows) above it, the CSV not read as one
    monkeypatch.setattr(fanout, "ingest_on_cluster", functools.partial(fanout.ingest_on_cluster, rows_per_task=3_000))
    monkeypatch.setattr(fanout, "SETTLE_ROWS", 500)  # dense days settled in shares, sliced by device,
    monkeypatch.setattr(fanout, "STAGED_GROUP_ROWS", 200)  # from staged files read a row group at a time
    staged_tasks = []
    monkeypatch.setattr(fanout, "stage", lambda *args, _stage=fanout.stage: staged_tasks.append(args[3]) or _stage(*args))
    lake = Lake.init(tmp_path / "lake")
    reports = [ingest_pings(lake, path, key=KEY) for path in files]
    assert [p.source for p in staged_tasks] == [files[1]] * 3  # the Parquet file in 3 tasks; the CSV buffered
    assert rows(lake).equals(rows(oracle)) and quarantined(lake).equals(quarantined(oracle))
    runs = [commit.get("citylake.run") for commit in lake.history("pings")]
    assert len(runs) == 3 and runs.count("staged") == 1  # the table's creation, the CSV's commit, the Parquet file's one commit
    assert reports[1].rows_in == 10_950 and sum(r.accepted + r.rejected + r.duplicates for r in reports) == 6_300 + 10_950
    assert sum(r.accepted for r in reports) == rows(lake).height and sum(r.rejected for r in reports) == quarantined(lake).height
    assert ledger.check(lake).ok
    assert reports[1].touched["date"] and reports[1].touched["partition_cell"]  # what a merge after several files takes

    again = ingest_pings(lake, files[1], key=KEY)
    assert again.accepted == 0 and again.duplicates == reports[1].accepted + reports[1].duplicates
    assert rows(lake).equals(rows(oracle)) and ledger.check(lake).ok


def test_a_failed_task_in_one_process_leaves_no_staged_rows_behind(tmp_path, monkeypatch):
    """One task of an in-process staged ingest fails while another is still staging: the error reaches the caller only
    after the running task has stopped, so the run's staging area is removed whole and nothing lands."""
    import functools

    from citylake.ingestion import fanout, location

    files = write_inputs(tmp_path)
    monkeypatch.setattr(location, "STAGED_ABOVE_ROWS", 5_000)
    monkeypatch.setattr(fanout, "ingest_on_cluster", functools.partial(fanout.ingest_on_cluster, rows_per_task=3_000))

    def stage(*args, _stage=fanout.stage):
        if args[3].number == 1:
            raise OSError("the input disk went away")
        time.sleep(0.5)  # still staging when the other task fails
        return _stage(*args)

    monkeypatch.setattr(fanout, "stage", stage)
    lake = Lake.init(tmp_path / "lake")
    with pytest.raises(OSError, match="went away"):
        ingest_pings(lake, files[1], key=KEY)
    assert rows(lake).height == 0 and not any((tmp_path / "lake" / "steward" / ".staging").rglob("*.parquet"))


def test_a_dense_day_is_settled_in_shares_of_its_partitions_or_their_slices_and_lands_as_one_process(client, tmp_path, monkeypatch):
    from citylake.ingestion import fanout

    monkeypatch.setattr(fanout, "SETTLE_ROWS", 500)  # these ~4,000-row days in a few partitions: each sliced by device
    files = write_inputs(tmp_path)
    lake, said = Lake.init(tmp_path / "lake"), []
    report = ingest_pings_on_cluster(lake, files, client, key=KEY, rows_per_task=3_000, announce=said.append)
    tasks = next(line for line in said if "settling" in line)
    days, settles = (int(word) for word in tasks.replace("(s)", "").split() if word.isdigit())
    assert settles > days >= 4, tasks
    oracle = one_process(tmp_path / "oracle", files)
    assert rows(lake).equals(rows(oracle)) and quarantined(lake).equals(quarantined(oracle))
    assert report.accepted == rows(lake).height and len(lake.history("pings")) == 2 and ledger.check(lake).ok
    stats = lake.stats("pings")
    assert stats.files > stats.partitions  # dense partitions were settled by several tasks, a file each


def test_a_dates_partitions_are_shared_out_whole_and_evenly(monkeypatch):
    from collections import Counter

    from citylake.ingestion import fanout

    monkeypatch.setattr(fanout, "SETTLE_ROWS", 100)
    staged = Counter({("2026-11-01", cell): rows for cell, rows in enumerate([90, 60, 50, 40, 30, 20, 10])})
    staged[("2026-11-02", 7)] = 80
    shares = fanout.settle_shares(staged, "2026-11-01")  # 300 rows: three shares
    assert len(shares) == 3 and sorted(c for share in shares for c in share.partitions) == list(range(7))  # each cell once
    assert not any(share.slices for share in shares)  # no partition is denser than a share: none is sliced
    loads = [sum(staged[("2026-11-01", c)] for c in share.partitions) for share in shares]
    assert max(loads) - min(loads) <= 30 and max(loads) <= 110
    assert fanout.settle_shares(staged, "2026-11-02") == [None]  # small enough: the date whole


def test_a_partition_denser_than_a_share_is_sliced_by_device_and_each_row_is_in_one_share(monkeypatch):
    """A partition of 1,050 rows with shares of 100: eleven slices by device, every residue once; a partition of 60
    rows beside it stays whole; on rows, the shares' filters take every row exactly once (negative pseudonyms too)."""
    from collections import Counter

    import numpy as np

    from citylake.ingestion import fanout
    from citylake.lake.schemas import PARTITION_CELL

    monkeypatch.setattr(fanout, "SETTLE_ROWS", 100)
    staged = Counter({("2026-11-01", 1): 1_050, ("2026-11-01", 2): 60})
    shares = fanout.settle_shares(staged, "2026-11-01")
    assert sorted(s for share in shares for s in share.slices) == [(1, r, 11) for r in range(11)]
    assert sorted(c for share in shares for c in share.partitions) == [2] and len(shares) == 12
    rng = np.random.default_rng(3)
    rows = pl.DataFrame({PARTITION_CELL: rng.choice([1, 2], 5_000, p=[1_050 / 1_110, 60 / 1_110]),
                         "device_id": rng.integers(-2**63, 2**63 - 1, 5_000)})
    taken = [rows.with_row_index().filter(share.holds())["index"] for share in shares]
    assert sorted(pl.concat(taken).to_list()) == list(range(5_000))
    assert max(len(t) for t in taken) < 2 * 5_000 * 1_050 / 1_110 / 11


def test_a_staged_file_holds_a_row_group_per_cell_in_input_order_and_a_share_reads_its_cells(monkeypatch):
    """A stage chunk's date is staged a row group per partition cell (at most ``STAGED_GROUP_ROWS`` rows each), rows in
    input order within a cell (the first of a key stays first); a settle share decodes only its cells' groups."""
    import io

    import numpy as np
    import pyarrow.parquet as pq

    from citylake.ingestion import fanout
    from citylake.lake.schemas import PARTITION_CELL

    monkeypatch.setattr(fanout, "STAGED_GROUP_ROWS", 300)
    rng = np.random.default_rng(5)
    day = pl.DataFrame({PARTITION_CELL: rng.choice([30, 10, 20], 2_000), "device_id": rng.integers(-99, 99, 2_000),
                        "order": np.arange(2_000)})
    staged = pq.ParquetFile(io.BytesIO(fanout._staged_bytes(day)))
    column = staged.schema_arrow.get_field_index(PARTITION_CELL)
    groups = [staged.read_row_group(g).to_pydict() for g in range(staged.num_row_groups)]
    assert all(len(set(g[PARTITION_CELL])) == 1 and len(g["order"]) <= 300 for g in groups)
    assert [g[PARTITION_CELL][0] for g in groups] == sorted(g[PARTITION_CELL][0] for g in groups)
    for cell in (10, 20, 30):
        staged_order = sum((g["order"] for g in groups if g[PARTITION_CELL][0] == cell), [])
        assert staged_order == day.filter(pl.col(PARTITION_CELL) == cell)["order"].to_list()

    class Location:
        def read_bytes(self, _):
            return fanout._staged_bytes(day)

    read, decode = [], pq.ParquetFile.read_row_groups
    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", lambda self, g, **kw: read.extend(g) or decode(self, g, **kw))
    share = fanout.Share(partitions=frozenset([20]), slices=frozenset([(30, 1, 2)]))
    lake = type("Lake", (), {"location": Location()})()
    rows = fanout._staged_rows(lake, "staged.parquet", share, fanout.PINGS)
    want = day.filter((pl.col(PARTITION_CELL) == 20) | ((pl.col(PARTITION_CELL) == 30) & (pl.col("device_id") % 2 == 1)))
    assert rows.sort("order").equals(want.sort("order")) and want.height
    assert sorted(staged.metadata.row_group(g).column(column).statistics.min for g in read) == sorted(
        g[PARTITION_CELL][0] for g in groups if g[PARTITION_CELL][0] != 10)  # no group of cell 10 was decoded


def test_the_staged_and_settled_files_stay_in_the_steward_zone(client, tmp_path):
    files = write_inputs(tmp_path)
    lake = Lake.init(tmp_path / "lake")
    staging = tmp_path / "lake" / "steward" / ".staging"
    stale, recent = staging / "20200101T000000-0badf00d", staging / f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S}-1234abcd"
    for run in (stale, recent):
        (run / "2026-11-01").mkdir(parents=True)
        (run / "2026-11-01" / "000000.parquet").write_bytes(b"left by a killed run")
    cli = [sys.executable, "-m", "citylake.cli", "--lake", str(tmp_path / "lake"), "maintain", "vacuum"]
    (staging / "20200101T000000-link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)  # never followed
    listed = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert "would remove the rows of 1 stopped cluster ingest" in listed.stdout and stale.exists()
    (staging / "20200101T000000-link").unlink()
    for hours in ("-5", "99999999999"):
        refused = subprocess.run([*cli, "--apply", "--retention-hours", hours], capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr and stale.exists()
    outside = tmp_path / "outside" / "20200101T000000-0badf00d"
    outside.mkdir(parents=True)
    real = staging.rename(tmp_path / "real-staging")
    staging.symlink_to(tmp_path / "outside", target_is_directory=True)  # a staging folder that leads out of the lake
    subprocess.run([*cli, "--apply"], capture_output=True, text=True, timeout=120, check=True)
    assert outside.exists()
    staging.unlink()
    real.rename(staging)
    ingest_pings_on_cluster(lake, files[:1], client, key=KEY)
    assert not stale.exists() and recent.exists()  # a day-old run's leftovers are swept; one that may still run is not
    recent.rename(tmp_path / "recent")
    data = list((tmp_path / "lake" / "steward" / "pings").rglob("*.parquet"))
    assert data and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in data)
    assert all(stat.S_IMODE(d.stat().st_mode) == 0o700 for d in (tmp_path / "lake" / "steward" / "pings").rglob("*") if d.is_dir())
    assert not (tmp_path / "lake" / "steward" / ".staging").exists() or not any((tmp_path / "lake" / "steward" / ".staging").iterdir())
    assert not any(b"dev-" in f.read_bytes() for f in data)  # pseudonyms only


class WriterBetween:
    """A real Dask client whose first settle round is followed by another writer's commit of ``file`` (single-process
    ingest), before the run commits: the run must find the table moved and settle again."""

    def __init__(self, client, lake: Lake, file: str) -> None:
        self.client, self.lake, self.file, self.gathers = client, lake, file, 0

    def submit(self, *args, **kwargs):
        return self.client.submit(*args, **kwargs)

    def gather(self, futures):
        done = self.client.gather(futures)
        self.gathers += 1
        if self.gathers == 2:  # the first settle round
            ingest_pings(self.lake, self.file, key=KEY)
        return done


def test_another_writer_between_settle_and_commit_lands_nothing_twice(client, tmp_path):
    files = write_inputs(tmp_path)
    lake = Lake.init(tmp_path / "lake")
    moved = []
    ingest_pings_on_cluster(lake, [files[1]], WriterBetween(client, lake, files[0]), key=KEY, rows_per_task=3_000,
                            announce=moved.append)
    assert any("moved" in line for line in moved)
    oracle = one_process(tmp_path / "oracle", files)
    assert rows(lake).equals(rows(oracle)) and ledger.check(lake).ok


def test_a_client_killed_before_its_commit_leaves_nothing_seen_and_a_rerun_lands_all(tmp_path):
    files = write_inputs(tmp_path)
    big = tmp_path / "big.parquet"
    pq.write_table(pl.concat([raw_pings(60_000, seed=s) for s in range(5)]).to_arrow(), big, row_group_size=20_000)
    env = {**os.environ, "CITYLAKE_PSEUDONYM_KEY": TEST_KEY}
    lake_dir = tmp_path / "lake"
    subprocess.run([sys.executable, "-m", "citylake.cli", "--lake", str(lake_dir), "init"], env=env, check=True, capture_output=True)
    run = subprocess.Popen([sys.executable, "-m", "citylake.cli", "--lake", str(lake_dir), "ingest", "pings", str(big), files[0],
                            "--workers", "2"], env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    staging = lake_dir / "steward" / ".staging"
    deadline = time.monotonic() + 120
    while not (staging.exists() and any(staging.rglob("*.parquet"))) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    lake = Lake.open(lake_dir)
    assert rows(lake).height == 0  # killed while staging: no commit, nothing a reader sees
    rerun = subprocess.run([sys.executable, "-m", "citylake.cli", "--lake", str(lake_dir), "ingest", "pings", str(big), files[0],
                            "--workers", "2"], env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    oracle = one_process(tmp_path / "oracle", [str(big), files[0]])
    assert rows(Lake.open(lake_dir)).equals(rows(oracle)) and ledger.check(Lake.open(lake_dir)).ok


def test_a_cluster_run_refuses_in_one_line(tmp_path):
    env = {**os.environ, "CITYLAKE_PSEUDONYM_KEY": TEST_KEY}
    lake_dir = tmp_path / "lake"
    cli = lambda *args: subprocess.run([sys.executable, "-m", "citylake.cli", "--lake", str(lake_dir), *args], env=env,  # noqa: E731
                                       capture_output=True, text=True, timeout=120)
    assert cli("init").returncode == 0
    (tmp_path / "bad.csv").write_text("device,when\nx,y\n")
    twice = pa.table([pa.array(["a"]), pa.array(["b"]), pa.array(["2026-11-01T00:00:00Z"]), pa.array([31.2]), pa.array([121.4])],
                     names=["device_id", "device_id", "ts", "lat", "lon"])
    pq.write_table(twice, tmp_path / "twice.parquet")
    n = 20_000
    pq.write_table(pa.table({"device_id": [f"d{i % 300}" for i in range(n)], "ts": ["2026-11-01T00:00:00Z"] * n,
                             "lat": np.full(n, 31.2), "lon": np.full(n, 121.4)}), tmp_path / "damaged.parquet", use_dictionary=False)
    damaged = bytearray((tmp_path / "damaged.parquet").read_bytes())
    damaged[200:len(damaged) // 2] = bytes((b * 7 + 13) % 256 for b in damaged[200:len(damaged) // 2])  # pages, not the footer
    (tmp_path / "damaged.parquet").write_bytes(bytes(damaged))
    for args, says in ((("ingest", "pings", "s3://bucket/x.csv"), "--scheduler or --workers"),
                       (("ingest", "pings", str(tmp_path / "a.csv"), "--scheduler", "tcp://127.0.0.1:1"), "plain-TCP"),
                       (("publish", "--scheduler", "tcp://127.0.0.1:1"), "plain-TCP"),
                       (("pilot", "--boundary", str(tmp_path / "bad.csv"), "--scheduler", "TCP://127.0.0.1:1"), "plain-TCP"),
                       (("ingest", "pings", str(tmp_path / "none.csv"), "--workers", "1"), "no such file"),
                       (("ingest", "pings", "s3://citylake", "--workers", "1"), "name an object"),
                       (("ingest", "pings", str(tmp_path / "bad.csv"), "--workers", "1"), "device_id"),
                       (("ingest", "pings", str(tmp_path / "twice.parquet"), "--workers", "1"), "more than once"),
                       (("ingest", "pings", str(tmp_path / "twice.parquet")), "more than once"),
                       (("ingest", "pings", str(tmp_path / "damaged.parquet"), "--workers", "1"), "not a readable Parquet file"),
                       (("ingest", "pings", str(tmp_path / "damaged.parquet")), "not a readable Parquet file")):
        done = cli(*args)
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0 and "Traceback" not in done.stderr and "Compute Failed" not in done.stderr, done.stderr
        assert says in lines[-1] and all(line.startswith(("citylake:", "dask:", "1 file(s)")) for line in lines), done.stderr


def test_workers_asked_for_are_local_even_when_a_scheduler_is_set(tmp_path):
    files = write_inputs(tmp_path)
    env = {**os.environ, "CITYLAKE_PSEUDONYM_KEY": TEST_KEY, "CITYLAKE_ANALYSIS_SCHEDULER": "tls://127.0.0.1:1"}
    cli = lambda *args: subprocess.run([sys.executable, "-m", "citylake.cli", "--lake", str(tmp_path / "lake"), *args], env=env,  # noqa: E731
                                       capture_output=True, text=True, timeout=300)
    assert cli("init").returncode == 0
    done = cli("ingest", "pings", files[0], "--workers", "1")
    assert done.returncode == 0 and "dask: 1 workers" in done.stderr, done.stderr


def test_file_statistics_bound_every_value():
    times = pa.array([dt.datetime(2026, 11, 1, 8, 0, 0, 999, tzinfo=dt.timezone.utc),
                      dt.datetime(2026, 11, 1, 9, 0, 0, 1500, tzinfo=dt.timezone.utc), None], pa.timestamp("us", tz="UTC"))
    frame = pl.from_arrow(pa.table({"ts": times, "x": [3.5, float("nan"), 1.0], "n": [5, None, -2], "s": ["b", "a", None]}))
    stats = file_stats(frame)
    assert stats["numRecords"] == 3 and stats["nullCount"] == {"ts": 1, "x": 0, "n": 1, "s": 1}
    assert stats["minValues"]["ts"] == "2026-11-01T08:00:00.000Z" and stats["maxValues"]["ts"] == "2026-11-01T09:00:00.002Z"
    assert "x" not in stats["minValues"]  # NaN: no bound
    assert (stats["minValues"]["n"], stats["maxValues"]["n"], stats["minValues"]["s"], stats["maxValues"]["s"]) == (-2, 5, "a", "b")
    json.dumps(stats)


def test_skipping_by_the_written_statistics_finds_every_row(client, tmp_path):
    """Readers skip files by the statistics the workers wrote: a filter on the extreme values still finds the rows."""
    files = write_inputs(tmp_path)
    lake = with_key(Lake.init(tmp_path / "lake"))
    ingest_pings_on_cluster(lake, files, client, key=KEY)
    every = rows(lake)
    for column in ("ts", "lat", "lon", "device_id", "h3_cell"):
        for value in (every[column].min(), every[column].max()):
            found = pl.scan_delta(lake.table_uri("pings")).filter(pl.col(column) == value).collect()
            assert found.height == every.filter(pl.col(column) == value).height > 0, (column, value)


def write_readings(folder: Path) -> tuple[Path, list[str]]:
    """A sensor registry of 40 sensors in a few coarse cells, and readings as a feed sends them: a CSV and a Parquet file
    of four row groups repeating part of it, with readings of an unregistered sensor, unreadable values and times."""
    rng = np.random.default_rng(7)
    pl.DataFrame({"sensor_id": [f"s-{i}" for i in range(40)], "kind": ["traffic"] * 40,
                  "lat": np.round(rng.uniform(31.20, 31.22, 40), 5), "lon": np.round(rng.uniform(121.40, 121.42, 40), 5)}
                 ).write_csv(folder / "sensors.csv")

    def readings(n: int, seed: int) -> pl.DataFrame:
        rng = np.random.default_rng(seed)
        ts = np.datetime64("2026-11-01", "s") + rng.integers(0, 3 * 86400, n).astype("timedelta64[s]")
        frame = pl.DataFrame({"sensor_id": [f"s-{i}" for i in rng.integers(0, 42, n)],  # s-40, s-41: not registered
                              "ts": [f"{t}Z" for t in ts.astype(str)], "metric": rng.choice(["count", "speed"], n),
                              "value": np.round(rng.uniform(0, 90, n), 2).astype(str)})
        broken = pl.int_range(n).is_in(rng.choice(n, n // 40, replace=False))
        frame = frame.with_columns(pl.when(broken).then(pl.lit("n/a")).otherwise("value").alias("value"),
                                   pl.when(pl.int_range(n) == 3).then(pl.lit("yesterday")).otherwise("ts").alias("ts"))
        # one reading sent again later with another value, in the same chunk and beyond it: the first one counts
        again = pl.DataFrame({"sensor_id": "s-1", "ts": f"2026-11-02T10:00:0{seed}Z", "metric": "count", "value": ["1.5", "2.5", "3.5"]})
        return pl.concat([again.head(1), frame.head(n // 2), again.slice(1, 1), frame.tail(n - n // 2), again.tail(1),
                          frame.sample(n // 20, seed=seed)])

    csv = readings(5_000, 1)
    csv.write_csv(folder / "r.csv")
    pq.write_table(pl.concat([readings(7_000, 2), csv.slice(0, 1_000)]).to_arrow(), folder / "r.parquet", row_group_size=2_000)
    return folder / "sensors.csv", [str(folder / "r.csv"), str(folder / "r.parquet")]


def test_readings_on_a_cluster_land_what_one_process_lands_dense_days_sliced_by_sensor(client, tmp_path, monkeypatch):
    from citylake.ingestion import fanout, ingest_readings, ingest_sensors

    sensors, files = write_readings(tmp_path)
    lakes = {name: Lake.init(tmp_path / name) for name in ("cluster", "oracle", "cli", "staged")}
    for lake in lakes.values():
        ingest_sensors(lake, sensors)
    for path in files:
        ingest_readings(lakes["oracle"], path)
    monkeypatch.setattr(fanout, "SETTLE_ROWS", 500)  # ~4,000 readings a day in one or two partitions: sliced by sensor
    said: list[str] = []
    report = fanout.ingest_readings_on_cluster(lakes["cluster"], files, client, rows_per_task=3_000, announce=said.append)
    got = lambda lake: pl.scan_delta(lake.table_uri("readings")).collect().sort("sensor_id", "metric", "ts")  # noqa: E731
    assert got(lakes["cluster"]).equals(got(lakes["oracle"])) and got(lakes["cluster"]).height > 10_000
    sent_at = [dt.datetime(2026, 11, 2, 10, 0, second, tzinfo=dt.timezone.utc) for second in (1, 2)]
    sent_again = got(lakes["oracle"]).filter((pl.col("sensor_id") == "s-1") & pl.col("ts").is_in(sent_at) & (pl.col("metric") == "count"))
    assert sent_again["value"].to_list() == [1.5, 1.5]  # each file's first of the three, however the chunks sort
    assert quarantined(lakes["cluster"]).equals(quarantined(lakes["oracle"]))
    reasons = set(pl.from_arrow(lakes["cluster"].table("quarantine").to_pyarrow_table(columns=["reason"]))["reason"])
    assert any("not in the registry" in reason for reason in reasons) and len(reasons) >= 3
    days, settles = (int(word) for word in next(line for line in said if "settling" in line).replace("(s)", "").split() if word.isdigit())
    assert settles > days >= 3 and lakes["cluster"].stats("readings").files > lakes["cluster"].stats("readings").partitions
    assert report.accepted == got(lakes["cluster"]).height and len(lakes["cluster"].history("readings")) == 2
    assert ledger.check(lakes["cluster"]).ok

    from citylake.ingestion import iot  # one process: the Parquet file above the threshold staged and settled, the CSV buffered

    monkeypatch.setattr(iot, "STAGED_ABOVE_ROWS", 1_000)
    staged = [ingest_readings(lakes["staged"], path) for path in files]
    assert got(lakes["staged"]).equals(got(lakes["oracle"])) and quarantined(lakes["staged"]).equals(quarantined(lakes["oracle"]))
    runs = [commit.get("citylake.run") for commit in lakes["staged"].history("readings")]
    assert runs.count("staged") == 1 and len(runs) == 3 and sum(r.accepted for r in staged) == got(lakes["staged"]).height
    assert ledger.check(lakes["staged"]).ok

    with_key(lakes["cli"])  # the command line: the steward's, on a local cluster, every file in one commit
    done = subprocess.run([sys.executable, "-m", "citylake.cli", "--lake", str(lakes["cli"].root), "ingest", "readings", *files,
                           "--workers", "1"], env={**os.environ, "CITYLAKE_PSEUDONYM_KEY": TEST_KEY}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "dask: 1 workers" in done.stderr, done.stderr
    assert got(lakes["cli"]).equals(got(lakes["oracle"])) and len(lakes["cli"].history("readings")) == 2
    refused = subprocess.run([sys.executable, "-m", "citylake.cli", "--lake", str(lakes["cli"].root), "ingest", "readings", files[0],
                              "--workers", "1"], env={k: v for k, v in os.environ.items() if k != "CITYLAKE_PSEUDONYM_KEY"},
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
