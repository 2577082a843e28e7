"""SIGKILL in the middle of an ingest, then a rerun: every row exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pytest
from conftest import TEST_KEY, with_key

from citylake.lake import Lake, duckdb_for

pytestmark = pytest.mark.integration


def write_pings(path, n: int) -> None:
    rng = np.random.default_rng(5)
    seconds = rng.integers(0, 3 * 86400, n)
    ts = np.datetime64("2026-11-01T00:00:00", "s") + seconds.astype("timedelta64[s]")
    pcsv.write_csv(pa.table({
        "device_id": np.char.add("dev-", rng.integers(0, 5000, n).astype(str)),
        "ts": np.char.add(np.datetime_as_string(ts, unit="s").astype(str), "Z"),
        "lat": np.round(rng.uniform(31.0, 31.4, n), 6), "lon": np.round(rng.uniform(121.2, 121.7, n), 6), "accuracy_m": np.full(n, 5.0),
    }), path)


def ingest(lake: Lake, path) -> subprocess.Popen:
    env = {**os.environ, "CITYLAKE_PSEUDONYM_KEY": TEST_KEY, "CITYLAKE_INGEST_BATCH_ROWS": "20000"}
    return subprocess.Popen([sys.executable, "-m", "citylake.cli", "--lake", str(lake.root), "ingest", "pings", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_sigkill_mid_ingest_then_rerun_lands_each_row_once(tmp_path):
    lake = with_key(Lake.init(tmp_path / "lake"))
    write_pings(tmp_path / "pings.csv", 200_000)
    proc = ingest(lake, tmp_path / "pings.csv")
    deadline = time.monotonic() + 120
    while lake.stats("pings").version < 3:  # strike after a few of the ten commits
        assert proc.poll() is None, "the ingest finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    partial = lake.rows("pings")
    assert 0 < partial < 200_000
    rerun = ingest(lake, tmp_path / "pings.csv")
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    con = duckdb_for(lake)
    total, distinct = con.execute("SELECT count(*), count(DISTINCT (device_id, ts, lat, lon)) FROM pings").fetchone()
    unique_rows = len(set(map(tuple, pcsv.read_csv(tmp_path / "pings.csv").to_pandas().itertuples(index=False))))
    assert total == distinct == unique_rows
    assert f"{unique_rows - partial:,} accepted" in out
