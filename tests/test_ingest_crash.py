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


def ingest(lake: Lake, path, *, batch_rows: int = 20_000, buffer_mb: int = 0) -> subprocess.Popen:
    """The ingest CLI in a child; ``buffer_mb=0`` commits every chunk as it comes (many commits to strike between)."""
    env = {**os.environ, "CITYLAKE_PSEUDONYM_KEY": TEST_KEY, "CITYLAKE_INGEST_BATCH_ROWS": str(batch_rows),
           "CITYLAKE_INGEST_BUFFER_MB": str(buffer_mb)}
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


def maintain_check(lake: Lake, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CITYLAKE_PSEUDONYM_KEY": TEST_KEY}
    return subprocess.run([sys.executable, "-m", "citylake.cli", "--lake", str(lake.root), "maintain", "check", *extra],
                          capture_output=True, text=True, env=env, timeout=120)


def ledger_sums(lake: Lake) -> tuple[int, int]:
    accepted = duckdb_for(lake).execute("SELECT coalesce(sum(rows_accepted), 0) FROM batches WHERE table_name = 'pings'").fetchone()[0]
    return int(accepted), lake.rows("pings")


def test_sigkill_at_random_moments_leaves_drift_a_rerun_mends(tmp_path):
    """Kill the ingest at random moments (some land between a chunk's rows and its batches row); `maintain check`
    reports any drift, the next run mends it, and at the end the ledger reconciles with the table exactly."""
    lake = with_key(Lake.init(tmp_path / "lake"))
    write_pings(tmp_path / "pings.csv", 60_000)
    rng = np.random.default_rng(3)
    log = lake.path("pings") / "_delta_log"
    drifted = 0
    for strike in range(8):
        proc = ingest(lake, tmp_path / "pings.csv", batch_rows=2000, buffer_mb=strike % 3)  # 0: a commit per chunk; 1, 2: gathered
        commits = len(list(log.glob("*.json")))
        wait_for = commits + int(rng.integers(1, 4))
        while len(list(log.glob("*.json"))) < wait_for and proc.poll() is None:  # strike just after a data commit...
            time.sleep(0.002)
        if strike % 2:
            time.sleep(float(rng.uniform(0, 0.5)))  # ...or at some moment after it
        proc.kill()
        proc.wait()
        checked = maintain_check(lake)
        assert "Traceback" not in checked.stderr
        accepted, held = ledger_sums(lake)
        if accepted != held:  # rows the ledger does not account for are always reported
            assert checked.returncode == 1 and "have no batches row" in checked.stdout
        drifted += checked.returncode != 0
    assert drifted, "no kill fell between a chunk's commits; strike at other moments"
    rerun = ingest(lake, tmp_path / "pings.csv", batch_rows=2000)
    assert rerun.wait(timeout=300) == 0, rerun.stderr.read()
    assert maintain_check(lake).returncode == 0
    accepted, held = ledger_sums(lake)
    assert accepted == held == len(set(map(tuple, pcsv.read_csv(tmp_path / "pings.csv").to_pandas().itertuples(index=False))))


def test_check_finds_a_lost_batches_row_and_repair_writes_it_back(tmp_path):
    lake = with_key(Lake.init(tmp_path / "lake"))
    write_pings(tmp_path / "pings.csv", 30_000)
    assert ingest(lake, tmp_path / "pings.csv", batch_rows=10_000).wait(timeout=300) == 0
    assert maintain_check(lake).returncode == 0
    batches = lake.table("batches").to_pyarrow_table()
    lost = batches.column("rows_accepted")[0].as_py()
    lake.write("batches", batches.slice(1), mode="overwrite")  # the ledger loses a chunk
    found = maintain_check(lake)
    assert found.returncode == 1 and f"1 committed chunk(s) ({lost:,} rows) have no batches row" in found.stdout
    mended = maintain_check(lake, "--repair")
    assert mended.returncode == 0, mended.stdout
    accepted, held = ledger_sums(lake)
    assert accepted == held > 29_000


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MB file system (tmpfs; mounting needs root, which the CI machine has)."""
    where = tmp_path / "disk"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(where)], check=True)
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root)")
def test_full_disk_says_how_much_space_and_a_rerun_resumes(tmp_path, small_disk):
    lake = with_key(Lake.init(small_disk / "lake"))
    write_pings(tmp_path / "pings.csv", 400_000)
    proc = ingest(lake, tmp_path / "pings.csv", batch_rows=50_000)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1
    assert err.count("\n") == 1 and "not enough disk space" in err and "rerun" in err, err
    assert "Traceback" not in err and "panicked" not in err
    subprocess.run(["mount", "-o", "remount,size=256m", str(small_disk)], check=True)  # the user frees space
    rerun = ingest(lake, tmp_path / "pings.csv", batch_rows=50_000)
    assert rerun.wait(timeout=300) == 0, rerun.stderr.read()
    assert maintain_check(lake).returncode == 0
    accepted, held = ledger_sums(lake)
    assert accepted == held == len(set(map(tuple, pcsv.read_csv(tmp_path / "pings.csv").to_pandas().itertuples(index=False))))


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


def test_check_reports_places_without_cells_and_cells_without_places(tmp_path):
    lake = with_key(Lake.init(tmp_path / "lake"))
    write_places(tmp_path / "places.geojson", 20)
    from citylake.ingestion.map import ingest_places as ingest_in_process

    ingest_in_process(lake, tmp_path / "places.geojson")
    assert maintain_check(lake).returncode == 0
    places = lake.table("places").to_pyarrow_table()
    lake.write("places", places.slice(1), mode="overwrite")  # as if the places commit had not landed for one
    found = maintain_check(lake)
    assert found.returncode == 1 and "place_cells: cells of 1 place id(s) not in places" in found.stdout, found.stdout
    cells = lake.table("place_cells").to_pyarrow_table()
    lake.write("places", places, mode="overwrite")
    lake.write("place_cells", cells.filter(pa.compute.not_equal(cells["place_id"], places["place_id"][0])), mode="overwrite")
    found = maintain_check(lake)
    assert found.returncode == 1 and "places: 1 place(s) have no cells in place_cells" in found.stdout, found.stdout
