"""Pings ingestion: pseudonyms, UTC timestamps, quarantine, idempotency, streaming."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from citylake.ingestion.errors import BadOption, MissingColumns, UnreadableInput
from citylake.ingestion.location import WITHHELD, ingest_pings, parse_mapping
from citylake.lake import duckdb_for, scan

KEY = b"test-key"
HEADER = "device_id,ts,lat,lon,accuracy_m\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def quarantine(lake) -> list[tuple[int, str]]:
    return duckdb_for(lake).execute("SELECT row_number, reason FROM quarantine ORDER BY row_number").fetchall()


def oracle_pseudonym(raw: str) -> int:
    return int.from_bytes(hmac.new(KEY, raw.encode(), hashlib.sha256).digest()[:8], "big", signed=True)


def test_raw_device_ids_never_reach_the_lake(lake, tmp_path):
    """Not in pings, and not in quarantine either: rejected rows carry the pseudonym in the id's place."""
    ids = ["alice@example.org", "imei-356938035643809", "bob-phone"]
    secret = ["carol-bad-coords", "dave-truncated", "erin-\u00e9"]
    rows = "".join(f"{d},2026-11-01T0{i}:00:00Z,31.2{i},121.4{i},5\n" for i, d in enumerate(ids))
    rows += f"{secret[0]},2026-11-01T00:00:00Z,121.4,31.2,5\n{secret[1]},2026-11-01T00:00:00Z\n"
    (tmp_path / "p.csv").write_bytes((HEADER + rows).encode() + secret[2].encode() + b"\xff,2026-11-01T00:00:00Z,31.2,121.4,5\n")
    report = ingest_pings(lake, tmp_path / "p.csv", key=KEY)
    assert (report.accepted, report.rejected) == (3, 3)
    raw = dict(duckdb_for(lake).execute("SELECT row_number, raw FROM quarantine").fetchall())
    assert raw[5] == f"pseudonym:{oracle_pseudonym(secret[0])},2026-11-01T00:00:00Z,121.4,31.2,5"
    assert raw[6] == WITHHELD  # a truncated line: its fields may be shifted, so none is kept
    assert not any(s in text for s in secret + ids for text in raw.values())
    got = scan(lake, "pings").sort("ts").select("device_id").collect()["device_id"].to_list()
    assert got == [oracle_pseudonym(d) for d in ids]
    for path in Path(lake.root).rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            assert not any(d.encode() in blob for d in ids + secret), f"raw id found in {path}"


def test_the_same_device_gets_the_same_pseudonym_across_files(lake, tmp_path):
    ingest_pings(lake, write(tmp_path / "a.csv", HEADER + "dev-1,2026-11-01T00:00:00Z,31.2,121.4,5\n"), key=KEY)
    ingest_pings(lake, write(tmp_path / "b.csv", HEADER + "dev-1,2026-11-02T00:00:00Z,31.3,121.5,5\n"), key=KEY)
    assert scan(lake, "pings").select(pl.col("device_id").n_unique()).collect().item() == 1


@pytest.mark.parametrize("text, want", [
    ("2026-11-01T08:00:00+08:00", dt.datetime(2026, 11, 1, 0, 0)),
    ("2026-11-01 08:00:00.250-05:00", dt.datetime(2026, 11, 1, 13, 0, 0)),  # stored to the second
    ("2026-11-01T00:00:00Z", dt.datetime(2026, 11, 1)),
    ("2026-11-01T08:30", dt.datetime(2026, 11, 1, 0, 30)),  # naive, read in --tz Asia/Shanghai
    ("1793491200", dt.datetime(2026, 11, 1)),  # epoch seconds
    ("1793491200500", dt.datetime(2026, 11, 1, 0, 0, 0)),  # epoch milliseconds, stored to the second
])
def test_timestamps_become_utc(lake, tmp_path, text, want):
    ingest_pings(lake, write(tmp_path / "p.csv", HEADER + f"d,{text},31.2,121.4,5\n"), key=KEY, tz="Asia/Shanghai")
    got = scan(lake, "pings").select("ts").collect().item()
    assert got == want.replace(tzinfo=dt.timezone.utc)


@pytest.mark.parametrize("placeholder", ["0001-01-01T00:00:00Z", "1900-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "-1", "0",
                                         "1999-12-31T23:59:59Z"])
def test_times_before_the_earliest_date_are_quarantined(lake, tmp_path, placeholder):
    """Placeholder times never land (one would make every hourly series span centuries); the rows beside them do."""
    text = HEADER + "a,2026-11-01T00:00:00Z,31.2,121.4,5\n" + f"b,{placeholder},31.2,121.4,5\n" + "c,2000-01-01T00:00:00Z,31.2,121.4,5\n"
    report = ingest_pings(lake, write(tmp_path / "p.csv", text), key=KEY)
    assert (report.accepted, report.rejected) == (2, 1)
    [(line, reason)] = quarantine(lake)
    assert line == 3 and "before the lake's earliest date 2000-01-01" in reason and "ingest.earliest" in reason


def test_the_earliest_date_is_a_setting(lake, tmp_path):
    text = HEADER + "a,1995-06-01T00:00:00Z,31.2,121.4,5\n"
    assert ingest_pings(lake, write(tmp_path / "p.csv", text), key=KEY).rejected == 1
    assert ingest_pings(lake, write(tmp_path / "p.csv", text), key=KEY, earliest=dt.date(1990, 1, 1)).accepted == 1


@given(st.datetimes(dt.datetime(2000, 1, 2), dt.datetime(2026, 1, 1)), st.integers(-12 * 60, 14 * 60).map(lambda m: m - m % 15),
       st.sampled_from(["T", " "]), st.booleans())
def test_timestamp_round_trip(tmp_path_factory, when, offset_min, sep, with_fraction):
    from citylake.ingestion.validate import timestamps

    when = when.replace(microsecond=when.microsecond if with_fraction else 0)
    zone = dt.timezone(dt.timedelta(minutes=offset_min))
    text = when.replace(tzinfo=zone).isoformat(sep=sep)
    got = timestamps(pl.Series([text]), "UTC").item()
    assert got == when.replace(tzinfo=zone).astimezone(dt.timezone.utc)


def test_a_shifted_row_keeps_no_raw_id_in_quarantine(lake, tmp_path):
    """The audit's case: an extra leading field shifts the id into the ts column, or the id lands in a coordinate."""
    rows = ("7,alice-phone,2026-11-01T00:00:00Z,31.2,121.4\n"  # six fields: withheld whole
            "2026-11-01T00:00:00Z,alice-phone,31.2,121.4,5\n"  # id and ts swapped: the id sits in ts
            "bob,2026-11-01T00:00:00Z,13800138000,121.4,5\n")  # a phone number where lat goes
    ingest_pings(lake, write(tmp_path / "p.csv", HEADER + rows), key=KEY)
    held = duckdb_for(lake).execute("SELECT raw || ' ' || reason FROM quarantine").fetchall()
    assert len(held) == 3 and not any("alice-phone" in text or "13800138000" in text for (text,) in held)


def test_bad_rows_are_quarantined_with_line_and_reason_and_good_rows_land(lake, tmp_path):
    text = HEADER + "\n".join([
        "ok-1,2026-11-01T00:00:00Z,31.2,121.4,5",
        "d,garbage,31.2,121.4,5",
        "d,2026-11-01T00:00:00Z,121.4,31.2,5",
        "d,2026-11-01T00:00:00Z,0,0,5",
        ",2026-11-01T00:00:00Z,31.2,121.4,5",
        "d,2099-01-01T00:00:00Z,31.2,121.4,5",
        "d,2026-11-01T00:00:00Z,north,121.4,5",
        "d,2026-11-01T00:00:00Z,inf,121.4,5",
        "d,2026-11-01T00:00:00Z,31.2,121.4,-1",
        "d,2026-11-01T00:00:00Z,31.2",
        "ok-2,2026-11-01T00:00:00Z,31.2,121.4,",
    ]) + "\n"
    report = ingest_pings(lake, write(tmp_path / "p.csv", text), key=KEY)
    assert (report.accepted, report.rejected) == (2, 9)
    reasons = dict(quarantine(lake))
    assert sorted(reasons) == list(range(3, 12))
    assert "is not a timestamp" in reasons[3] and "garbage" not in reasons[3]  # a value that is not one may be an id
    assert "lat 121.4 is out of range" in reasons[4] and "swapped" in reasons[4]
    assert "(0, 0)" in reasons[5] and "device_id is missing" in reasons[6] and "future" in reasons[7]
    assert "is not a number" in reasons[8] and "north" not in reasons[8] and "is not finite" in reasons[9]
    assert "accuracy_m -1 is negative" in reasons[10] and "has 3 fields, expected 5" in reasons[11]
    raw = duckdb_for(lake).execute("SELECT raw FROM quarantine WHERE row_number = 11").fetchone()[0]
    assert raw == WITHHELD  # 3 fields of 5: which one holds the device id cannot be told, so none is kept


def test_rerun_and_overlapping_files_add_nothing_twice(lake, tmp_path):
    rows = [f"d{i % 7},2026-11-01T{i % 24:02d}:{i % 60:02d}:00Z,31.{i:04d},121.4,5\n" for i in range(300)]
    first = write(tmp_path / "first.csv", HEADER + "".join(rows[:200]))
    overlap = write(tmp_path / "overlap.csv", HEADER + "".join(rows[150:] + rows[150:160]))
    assert ingest_pings(lake, first, key=KEY).accepted == 200
    again = ingest_pings(lake, first, key=KEY)
    assert (again.accepted, again.duplicates) == (0, 200)
    report = ingest_pings(lake, overlap, key=KEY)
    assert (report.accepted, report.duplicates) == (100, 60)
    assert lake.rows("pings") == 300
    batches = duckdb_for(lake).execute("SELECT sum(rows_accepted), sum(rows_duplicate), count(*) FROM batches").fetchone()
    assert batches == (300, 260, 3)


def test_repeats_across_the_chunks_of_one_file_land_once(lake, tmp_path):
    # 2,000 distinct rows, then 500 of them again, shuffled in among fresh ones: chunks of 300 rows meet repeats of
    # rows committed by earlier chunks of the same run (remembered as key hashes, not read back) and within themselves
    rows = [f"d{i % 40},2026-11-01T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z,31.{1000 + i},121.4,5\n" for i in range(3_000)]
    repeats = rows[:2_000] + rows[100:600] + rows[2_000:]
    ingest_pings(lake, write(tmp_path / "before.csv", HEADER + "".join(rows[2_900:])), key=KEY)  # held before the run
    report = ingest_pings(lake, write(tmp_path / "p.csv", HEADER + "".join(repeats)), key=KEY, batch_rows=300)
    assert (report.accepted, report.duplicates) == (2_900, 600)
    keys = scan(lake, "pings").select("device_id", "ts", "lat", "lon").collect()
    assert keys.height == 3_000 and keys.unique().height == 3_000


def test_a_hash_shared_by_two_keys_loses_no_row(lake, tmp_path, monkeypatch):
    # every key hashes alike: each row after the first is a suspect, and the exact check must keep them all
    from citylake.lake import run_keys

    monkeypatch.setattr(run_keys.RunKeys, "suspects", lambda self, rows, key: run_keys.np.arange(rows.height) > 0)
    rows = [f"d{i},2026-11-01T00:00:{i:02d}Z,31.2,121.4,5\n" for i in range(50)]
    report = ingest_pings(lake, write(tmp_path / "p.csv", HEADER + "".join(rows + rows[:5])), key=KEY, batch_rows=20)
    assert (report.accepted, report.duplicates, lake.rows("pings")) == (50, 5, 50)


def test_large_files_stream_in_batches_with_exact_line_numbers(lake, tmp_path):
    lines = [f"d{i % 50},2026-11-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z,31.{1000 + i},121.4,5\n" for i in range(5_000)]
    for bad in (17, 2_222, 4_999):
        lines[bad] = "d,not-a-time,31.2,121.4,5\n"
    report = ingest_pings(lake, write(tmp_path / "p.csv", HEADER + "".join(lines)), key=KEY, batch_rows=700)
    assert (report.accepted, report.rejected) == (4_997, 3)
    assert [r for r, _ in quarantine(lake)] == [bad + 2 for bad in (17, 2_222, 4_999)]  # +1 header, +1 one-based
    appends = [c for c in lake.history("pings") if c["operation"] == "WRITE"]
    assert len(appends) == 1 and lake.stats("batches").rows > 5  # the run's chunks gathered into one commit, one row each
    assert lake.stats("pings").files == lake.stats("pings").partitions


def test_a_file_larger_than_the_buffer_commits_in_parts_then_merges_them(lake, tmp_path):
    lines = [f"d{i % 50},2026-11-0{1 + i % 3}T00:{i // 60 % 60:02d}:{i % 60:02d}Z,{31.1 + i * 1e-4:.4f},121.4,5\n" for i in range(30_000)]
    report = ingest_pings(lake, write(tmp_path / "p.csv", HEADER + "".join(lines)), key=KEY, batch_rows=3_000, buffer_mb=0)
    assert report.accepted == 30_000
    operations = [c["operation"] for c in reversed(lake.history("pings"))]
    assert operations.count("WRITE") > 5 and operations[-1] == "OPTIMIZE"  # a commit per chunk, then one merge
    stats = lake.stats("pings")
    assert stats.files == stats.partitions and stats.rows == 30_000
    assert duckdb_for(lake).execute("SELECT sum(rows_accepted) FROM batches").fetchone()[0] == 30_000


def test_parquet_input_with_typed_columns(lake, tmp_path):
    table = pa.table({
        "uid": ["a", "b", "c"], "time": pa.array([dt.datetime(2026, 11, 1, h) for h in range(3)], pa.timestamp("ms", tz="UTC")),
        "y": [31.2, 95.0, 31.3], "x": [121.4, 121.4, 121.5],
    })
    pq.write_table(table, tmp_path / "p.parquet")
    report = ingest_pings(lake, tmp_path / "p.parquet", key=KEY, mapping=parse_mapping("device_id=uid,ts=time,lat=y,lon=x",
                                                                                     ("device_id", "ts", "lat", "lon", "accuracy_m")))
    assert (report.accepted, report.rejected) == (2, 1)
    assert quarantine(lake)[0][0] == 2


def test_missing_columns_name_what_was_found_and_the_fix(lake, tmp_path):
    with pytest.raises(MissingColumns, match=r"missing column\(s\) lat, lon; found device_id, ts, y, x.*--map"):
        ingest_pings(lake, write(tmp_path / "p.csv", "device_id,ts,y,x\nd,2026-11-01T00:00:00Z,1,2\n"), key=KEY, delimiter=",")
    assert lake.rows("pings") == 0


def test_bad_options_are_named():
    with pytest.raises(BadOption, match="target=source"):
        parse_mapping("device_id:uid", ("device_id",))
    with pytest.raises(BadOption, match="not a column"):
        parse_mapping("colour=c", ("device_id",))


def test_unknown_timezone_is_refused(lake, tmp_path):
    with pytest.raises(BadOption, match="IANA"):
        ingest_pings(lake, write(tmp_path / "p.csv", HEADER), key=KEY, tz="Mars/Olympus")


def test_empty_and_missing_files_say_so(lake, tmp_path):
    with pytest.raises(UnreadableInput, match="empty"):
        ingest_pings(lake, write(tmp_path / "empty.csv", ""), key=KEY)
    with pytest.raises(UnreadableInput, match="no such file"):
        ingest_pings(lake, tmp_path / "absent.csv", key=KEY)
    assert os.path.exists(tmp_path / "empty.csv")


def test_read_pings_returns_the_rows_it_would_write(tmp_path):
    from citylake.ingestion.location import read_pings

    good, bad = read_pings(write(tmp_path / "p.csv", HEADER + "a,2026-11-01T00:00:00Z,31.2,121.4,5\nb,nope,31.2,121.4,5\n"), key=KEY)
    assert good.num_rows == 1 and good.column("device_id").to_pylist() == [oracle_pseudonym("a")]
    assert bad["reason"].to_list() == ["ts [withheld: not a valid value here] is not a timestamp (ISO 8601 or epoch seconds/millis)"]


def test_chunks_validated_in_parallel_come_back_in_file_order_and_errors_surface(lake, tmp_path):
    import threading
    import time

    from citylake.ingestion.batch import validated

    seen_at_once, running, lock = [], [0], threading.Lock()

    def slow_first(i: int) -> int:
        with lock:
            running[0] += 1
            seen_at_once.append(running[0])
        time.sleep(0.05 if i % 2 == 0 else 0.0)  # even chunks finish after the odd ones started after them
        with lock:
            running[0] -= 1
        if i == 7:
            raise UnreadableInput("f.csv", "chunk 7 is bad")
        return i

    out = validated(range(10), slow_first, workers=2)
    assert [next(out) for _ in range(7)] == list(range(7))
    with pytest.raises(UnreadableInput, match="chunk 7"):
        next(out)
    assert max(seen_at_once) == 2  # two at a time, never more


def test_progress_shows_a_file_name_with_braces_and_brackets(lake, tmp_path, monkeypatch):
    from conftest import captured_progress

    from citylake.ingestion import batch

    screen = captured_progress(monkeypatch, batch)
    path = write(tmp_path / "pings {day}[1].csv", "device_id,ts,lat,lon\nd1,2026-11-01T00:00:00Z,31.2,121.4\n")
    assert ingest_pings(lake, path, key=b"k", progress=True).accepted == 1
    assert "pings {day}[1].csv" in screen.getvalue()
