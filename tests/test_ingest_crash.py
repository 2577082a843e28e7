"""SIGKILL in the middle of an ingest, then a rerun: every row exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pytest
from conftest import TEST_KEY, with_key

from citylake.lake import Lake, duckdb_for, scan

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


# --- places: a place is never in `places` without its cells in `place_cells` ----------------------------------------


def write_places(path, n: int) -> None:
    """``n`` seeded polygons (a few hundred metres across) and a few points, as GeoJSON."""
    rng = np.random.default_rng(11)
    features = []
    for i in range(n):
        lon, lat = rng.uniform(121.2, 121.7), rng.uniform(31.0, 31.4)
        angles = np.sort(rng.uniform(0, 2 * np.pi, 8))
        radius = rng.uniform(0.001, 0.004, 8)
        ring = [[lon + r * np.cos(a), lat + r * np.sin(a)] for a, r in zip(angles, radius)]
        geometry = {"type": "Polygon", "coordinates": [[*ring, ring[0]]]} if i % 10 else {"type": "Point", "coordinates": [lon, lat]}
        features.append({"type": "Feature", "geometry": geometry, "properties": {"id": f"p{i}", "category": "park"}})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))


def ingest_places(lake: Lake, path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "citylake.cli", "--lake", str(lake.root), "ingest", "places", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def halves(lake: Lake) -> tuple[set[str], set[str]]:
    """(places without cells: must never be, places' cells without a place: allowed, unread)."""
    placed = set(scan(lake, "places").select("place_id").collect()["place_id"])
    covered = set(scan(lake, "place_cells").select("place_id").unique().collect()["place_id"])
    return placed - covered, covered - placed


def strike(lake: Lake, path, *, seconds: float | None = None) -> None:
    """Start an ingest and SIGKILL it after ``seconds``, or else as soon as either table has a new commit (or when it has
    finished, if it was quicker); then wait for it to die."""
    versions = lake.stats("place_cells").version, lake.stats("places").version
    started = time.monotonic()

    def due() -> bool:
        if seconds is not None:
            return time.monotonic() - started > seconds
        return (lake.stats("place_cells").version, lake.stats("places").version) != versions

    proc = ingest_places(lake, path)
    while proc.poll() is None and not due():
        assert time.monotonic() - started < 120
        time.sleep(0.005)
    proc.kill()
    proc.communicate()


def test_sigkill_during_places_ingest_never_leaves_a_place_without_cells(tmp_path):
    write_places(tmp_path / "places.geojson", 1500)
    # the moment that matters: just after the first of the two commits (a few tries, each on a new lake: the window is
    # short); then random moments over a run (start-up, reading and covering take a few seconds, the commits come last)
    seen_orphans = False
    for attempt in range(4):
        lake = Lake.init(tmp_path / f"lake-{attempt}")
        strike(lake, tmp_path / "places.geojson")
        without_cells, orphans = halves(lake)
        assert not without_cells, f"places without cells after a kill: {sorted(without_cells)[:5]}"
        seen_orphans = bool(orphans)
        if seen_orphans:
            break
    assert seen_orphans, "no kill fell between the two commits"
    for seconds in np.random.default_rng(7).uniform(0.5, 6.0, 3):
        strike(lake, tmp_path / "places.geojson", seconds=seconds)
        assert not halves(lake)[0]
    rerun = ingest_places(lake, tmp_path / "places.geojson")
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert halves(lake) == (set(), set())
    assert lake.rows("places") == 1500
    clean = Lake.init(tmp_path / "clean")
    from citylake.ingestion.map import ingest_places as ingest_in_process

    ingest_in_process(clean, tmp_path / "places.geojson")
    mended = scan(lake, "place_cells").sort("place_id", "h3_cell").collect()
    assert mended.equals(scan(clean, "place_cells").sort("place_id", "h3_cell").collect())
