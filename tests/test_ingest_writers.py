"""Several ingests into one table at once, in separate processes: each key lands once, as with one writer."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pytest
from conftest import with_key
from test_ingest_crash import ingest

from citylake.lake import Lake, duckdb_for

pytestmark = pytest.mark.integration

WRITERS = 4


def overlapping_files(tmp_path, *, pool: int = 60_000, share: float = 0.4) -> list:
    """WRITERS files, each a random ``share`` of one pool of pings (so every pair shares thousands of rows), in
    shuffled order so each file's chunks touch every partition."""
    rng = np.random.default_rng(11)
    ts = np.datetime64("2026-11-01T00:00:00", "s") + rng.integers(0, 2 * 86400, pool).astype("timedelta64[s]")
    rows = pa.table({
        "device_id": np.char.add("dev-", rng.integers(0, 3000, pool).astype(str)),
        "ts": np.char.add(np.datetime_as_string(ts, unit="s").astype(str), "Z"),
        "lat": np.round(rng.uniform(31.0, 31.4, pool), 5), "lon": np.round(rng.uniform(121.2, 121.7, pool), 5),
    })
    paths = []
    for w in range(WRITERS):
        take = rng.permutation(pool)[: int(pool * share)]
        paths.append(tmp_path / f"pings-{w}.csv")
        pcsv.write_csv(rows.take(take), paths[-1])
    return paths


def table_rows(lake: Lake) -> list[tuple]:
    return duckdb_for(lake).execute("SELECT device_id, ts, lat, lon FROM pings ORDER BY ALL").fetchall()


def test_four_writers_on_overlapping_files_land_what_one_writer_lands(tmp_path):
    files = overlapping_files(tmp_path)
    one = with_key(Lake.init(tmp_path / "one"))
    for path in files:
        proc = ingest(one, path, batch_rows=4000)
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    many = with_key(Lake.init(tmp_path / "many"))
    procs = [ingest(many, path, batch_rows=4000, buffer_mb=w % 2) for w, path in enumerate(files)]  # per chunk, and gathered
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    expected = table_rows(one)
    assert len(expected) < sum(len(pcsv.read_csv(p)) for p in files)  # the files do overlap
    assert table_rows(many) == expected
    accepted = duckdb_for(many).execute("SELECT sum(rows_accepted) FROM batches WHERE table_name = 'pings'").fetchone()[0]
    assert accepted == len(expected)  # the ledger counts each row once too


def test_ingesting_with_another_key_is_refused_and_adds_nothing(tmp_path):
    """The same file pseudonymised with another key would look like new devices and land twice: refused, one line."""
    import os
    import subprocess
    import sys

    path = overlapping_files(tmp_path, pool=2_000, share=1.0)[0]
    lake = with_key(Lake.init(tmp_path / "lake"))
    assert ingest(lake, path).wait(timeout=300) == 0
    held = lake.rows("pings")
    env = {**os.environ, "CITYLAKE_PSEUDONYM_KEY": "another-key-of-at-least-32-bytes-0123456789abcdef"}
    proc = subprocess.run([sys.executable, "-m", "citylake.cli", "--lake", str(lake.root), "ingest", "pings", str(path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "not this lake's pseudonym key" in proc.stderr
    assert lake.rows("pings") == held
