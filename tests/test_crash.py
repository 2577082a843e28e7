"""A writer killed with SIGKILL mid-commit leaves only whole commits; concurrent writers lose nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from conftest import make_pings

from citylake.lake import Lake, duckdb_for, scan

pytestmark = pytest.mark.integration
WRITER = Path(__file__).with_name("writer_process.py")


def start_writer(lake: Lake, rows: int, seed: int, batches: int = 1) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(WRITER.parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, str(WRITER), str(lake.root), str(rows), str(seed), str(batches)],
        stdout=subprocess.PIPE, text=True, env=env,
    )


def data_files(lake: Lake) -> set[Path]:
    return set(Path(lake.path("pings")).rglob("*.parquet"))


def both_engines_count(lake: Lake) -> tuple[int, int]:
    return (
        scan(lake, "pings").select(pl.len()).collect().item(),
        duckdb_for(lake).execute("SELECT count(*) FROM pings").fetchone()[0],
    )


@pytest.mark.parametrize("strike_after_files", [1, 20])
def test_sigkill_mid_commit_leaves_the_previous_version(lake, strike_after_files):
    lake.write("pings", make_pings(5_000, seed=1))
    before_version, before_files = lake.stats("pings").version, data_files(lake)
    writer = start_writer(lake, rows=2_000_000, seed=2)
    assert writer.stdout.readline().strip() == "writing"
    deadline = time.monotonic() + 120
    while len(data_files(lake) - before_files) < strike_after_files:  # strike once the new files are landing
        assert writer.poll() is None, "the writer finished before it could be killed; give it more rows"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert writer.returncode == -signal.SIGKILL
    orphans = data_files(lake) - before_files
    assert orphans, "no file was being written when the writer died"
    # Readers see exactly the previous commit, in both engines.
    assert lake.stats("pings").version == before_version
    assert both_engines_count(lake) == (5_000, 5_000)
    # The next writer commits on top, and vacuum clears what the dead one left.
    lake.write("pings", make_pings(1_000, seed=3), mode="append")
    assert both_engines_count(lake) == (6_000, 6_000)
    removed = {Path(lake.path("pings"), f) for f in lake.vacuum("pings", retention_hours=0, dry_run=False)}
    assert orphans <= removed
    assert both_engines_count(lake) == (6_000, 6_000)


def test_two_processes_appending_at_once_lose_nothing(lake):
    writers = [start_writer(lake, rows=20_000, seed=seed, batches=4) for seed in (10, 11)]
    for writer in writers:
        writer.communicate(timeout=300)
        assert writer.returncode == 0
    assert both_engines_count(lake) == (160_000, 160_000)
    assert lake.stats("pings").version == 8
