"""A live feed's background compaction: only touched partitions that hold several files, one commit each, then vacuum."""

from __future__ import annotations

import time

import polars as pl
import pyarrow as pa
import pytest
from conftest import make_pings

from citylake.ingestion.compaction import CROWDED_FILES, Compactor
from citylake.lake import Lake
from citylake.lake.errors import DiskFull


def files_per_partition(lake: Lake) -> dict[tuple[str, str], int]:
    """Files per (partition_cell, date), counted from the Delta log by hand."""
    actions = pl.from_arrow(pa.table(lake.table("pings").get_add_actions(flatten=True)))
    counted = actions.group_by("partition.partition_cell", "partition.date").len()
    return {(str(cell), str(date)): n for cell, date, n in counted.iter_rows()}


@pytest.fixture
def small_commits(lake: Lake) -> Lake:
    """Pings of two days committed in six small commits: every partition they touch holds up to six files."""
    rows = make_pings(3_000, days=2, seed=3)
    for part in range(6):
        lake.append_new("pings", rows.slice(part * 500, 500))
    return lake


def compactor(lake: Lake, **options) -> Compactor:
    return Compactor(lake, "pings", **{"every_s": 0, "retention_hours": 168, "target_mb": 128, **options})


def test_a_round_merges_only_touched_partitions_that_hold_several_files(small_commits):
    lake = small_commits
    before, rows = files_per_partition(lake), lake.rows("pings")
    day = min(date for _, date in before)
    merger = compactor(lake)
    merger.touched({"partition_cell": {cell for cell, _ in before}, "date": {day}})
    merger.round()
    after = files_per_partition(lake)
    for partition, files in before.items():
        touched_and_crowded = partition[1] == day and files >= CROWDED_FILES
        assert after[partition] == (1 if touched_and_crowded else files), partition
    assert merger.done.partitions == sum(1 for (_, d), n in before.items() if d == day and n >= CROWDED_FILES) > 0
    assert lake.rows("pings") == rows
    merger.round()  # nothing touched since: nothing merged again
    assert files_per_partition(lake) == after


def test_a_failed_round_is_said_and_its_partitions_tried_again(small_commits, monkeypatch):
    lake = small_commits
    said, real = [], lake.compact_partitions
    monkeypatch.setattr(lake, "compact_partitions", lambda *a, **k: (_ for _ in ()).throw(DiskFull("pings", "/x", 1 << 24, 0)))
    merger = compactor(lake, announce=said.append)
    merger.touched({"partition_cell": {cell for cell, _ in files_per_partition(lake)}, "date": {d for _, d in files_per_partition(lake)}})
    merger.round()
    assert merger.done.failures == 1 and "background compaction failed (not enough disk space" in said[0]
    monkeypatch.setattr(lake, "compact_partitions", real)
    merger.round()  # nothing new was touched: the failed round's partitions are the candidates
    assert max(files_per_partition(lake).values()) < CROWDED_FILES
    assert "compacted" in merger.done.note() and "1 rounds failed" in merger.done.note()


def data_files(lake: Lake) -> int:
    return sum(1 for p in lake.path("pings").rglob("*.parquet") if "_delta_log" not in p.parts)


def test_vacuum_keeps_merged_away_files_within_the_retention_window(small_commits):
    lake = small_commits
    kept = compactor(lake, retention_hours=168)
    kept.touched({"partition_cell": {c for c, _ in files_per_partition(lake)}, "date": {d for _, d in files_per_partition(lake)}})
    kept.round()
    assert kept.done.files_merged > 0 and kept.done.files_vacuumed == 0
    assert data_files(lake) == lake.stats("pings").files + kept.done.files_merged  # time travel still reads them
    gone = compactor(lake, retention_hours=0)
    gone.round()
    assert gone.done.files_vacuumed == kept.done.files_merged and data_files(lake) == lake.stats("pings").files


def test_an_unexpected_error_in_the_thread_reaches_the_feed(small_commits, monkeypatch):
    lake = small_commits
    monkeypatch.setattr(lake, "crowded", lambda *a, **k: 1 / 0)
    with compactor(lake, every_s=0.05) as merger:
        merger.touched({"partition_cell": {"1"}, "date": {"2026-11-01"}})
        deadline = time.monotonic() + 10
        while merger.error is None and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(ZeroDivisionError):
            merger.check()
