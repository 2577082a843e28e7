"""Figure month_of_pings: a month of pings over a ~1,000 km² city into a fresh lake, from Parquet and from CSV, against
DuckDB's floor on the same file (read it, write date-partitioned Parquet: no checks, no H3, no log), and footfall per
place-hour on the lake as ingested against the same lake compacted by `maintain compact`.

Two data shapes, generated differently: ``uniform_shuffled`` (positions uniform over the city, rows in random order, a
grid of 1 km² zones) and ``hotspots_time_ordered`` (positions around 40 hotspots of different sizes, rows in time
order, more devices with fewer pings each, irregular park-like zones). The second shape was not used to develop the
ingest's file sizing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from bench.harness import median_run, timed
from citylake.lake import Lake, connect

CITY = {"lat": (31.0, 31.35), "lon": (121.3, 121.56)}  # ~39 x 25 km: about 1,000 km²
DAYS = 30
FOOTFALL_REPEATS = 3


def uniform_shuffled(n: int, seed: int = 21) -> pa.Table:
    rng = np.random.default_rng(seed)
    seconds = rng.integers(0, DAYS * 86400, n)  # random order: every chunk of the file touches every partition
    return _pings(rng.integers(0, 30_000, n), seconds, rng.uniform(*CITY["lat"], n), rng.uniform(*CITY["lon"], n), rng)


def hotspots_time_ordered(n: int, seed: int = 22) -> pa.Table:
    rng = np.random.default_rng(seed)
    centres = np.c_[rng.uniform(*CITY["lat"], 40), rng.uniform(*CITY["lon"], 40)]
    spread = rng.uniform(0.002, 0.03, 40)
    which = rng.choice(40, n, p=rng.dirichlet(np.ones(40)))
    lat = np.clip(centres[which, 0] + rng.normal(0, spread[which]), *CITY["lat"])
    lon = np.clip(centres[which, 1] + rng.normal(0, spread[which]), *CITY["lon"])
    seconds = np.sort(rng.integers(0, DAYS * 86400, n))  # a feed exported in time order
    return _pings(rng.integers(0, 120_000, n), seconds, lat, lon, rng)


def _pings(devices: np.ndarray, seconds: np.ndarray, lat: np.ndarray, lon: np.ndarray, rng: np.random.Generator) -> pa.Table:
    ts = np.datetime64("2026-10-01T00:00:00", "s") + seconds.astype("timedelta64[s]")
    return pa.table({
        "device_id": np.char.add("dev-", devices.astype(str)),
        "ts": pa.array(ts).cast(pa.timestamp("s", tz="UTC")),
        "lat": np.round(lat, 6), "lon": np.round(lon, 6), "accuracy_m": np.round(rng.uniform(3, 40, len(lat)), 1),
    })


def grid_zones(km: float = 1.0) -> list:
    import shapely

    dlat, dlon = km / 111.0, km / (111.0 * np.cos(np.radians(31.2)))
    lats, lons = np.arange(CITY["lat"][0], CITY["lat"][1], dlat), np.arange(CITY["lon"][0], CITY["lon"][1], dlon)
    return [shapely.box(x, y, x + dlon, y + dlat) for y in lats for x in lons]


def park_zones(count: int = 600, seed: int = 9) -> list:
    import shapely

    rng = np.random.default_rng(seed)
    shapes = []
    for _ in range(count):
        lat, lon, n = rng.uniform(*CITY["lat"]), rng.uniform(*CITY["lon"]), int(rng.integers(12, 40))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        r = rng.uniform(0.002, 0.008) * rng.uniform(0.5, 1.0, n)
        shapes.append(shapely.make_valid(shapely.Polygon(np.c_[lon + r * np.cos(angles), lat + r * np.sin(angles)])))
    return shapes


SHAPES = {"uniform_shuffled": (uniform_shuffled, grid_zones), "hotspots_time_ordered": (hotspots_time_ordered, park_zones)}


def bench_month_of_pings(rows: int, work: Path) -> dict:
    out: dict = {"rows": rows, "days": DAYS, "city_km2": 1_000,
                 "how": "each format: DuckDB's floor and citylake's ingest in turns; footfall per place-hour (steward, exact, "
                        f"polars and duckdb engines) median of {FOOTFALL_REPEATS} on the lake as ingested, on a lake ingested "
                        "without the end-of-run merge, and on that lake after `maintain compact`",
                 "targets": "within 2.5x of the floor; mean file >= 8 MB or one file per partition; fresh/compacted footfall <= 1.2x"}
    for shape, (make, zones) in SHAPES.items():
        out[shape] = _one_shape(make(rows), zones(), work / shape)
        shutil.rmtree(work / shape, ignore_errors=True)
    return out


def _one_shape(pings: pa.Table, zones: list, work: Path) -> dict:
    import geopandas as gpd

    work.mkdir(parents=True, exist_ok=True)
    gpd.GeoDataFrame({"id": [f"z{i}" for i in range(len(zones))], "category": "zone"}, geometry=zones,
                     crs="EPSG:4326").to_file(work / "zones.geojson", driver="GeoJSON")
    pq.write_table(pings, work / "pings.parquet")
    pcsv.write_csv(pings, work / "pings.csv")
    out: dict = {"zones": len(zones)}
    for fmt in ("parquet", "csv"):
        out[fmt] = _one_format(work / f"pings.{fmt}", work, pings.num_rows)
    return out


def _one_format(path: Path, work: Path, rows: int) -> dict:
    from citylake.ingestion.location import ingest_pings
    from citylake.ingestion.map import ingest_places

    con = connect(extension_dir=work / "ext")
    reader = "read_parquet" if path.suffix == ".parquet" else "read_csv"
    floor_dir = work / "floor"

    def floor():
        shutil.rmtree(floor_dir, ignore_errors=True)
        con.execute(f"COPY (SELECT *, CAST(ts AS DATE) AS date FROM {reader}('{path}')) TO '{floor_dir}' "
                    "(FORMAT parquet, PARTITION_BY (date))")

    lakes, seconds = {}, {}
    for merged in (True, False):
        name = "ingested" if merged else "unmerged"
        lakes[name] = Lake.init(work / f"lake-{path.suffix[1:]}-{name}")
        ingest_places(lakes[name], work / "zones.geojson")
        seconds[name], report = timed(lambda lake=lakes[name], merged=merged: ingest_pings(
            lake, path, key=f"bench-key-{merged}".encode(), compact=merged))
        assert report.accepted == rows, report.line()
    floor_s = min(timed(floor)[0] for _ in range(2))
    shutil.rmtree(floor_dir, ignore_errors=True)
    out = {"file_mb": round(path.stat().st_size / 2**20, 1), "duckdb_floor_s": round(floor_s, 2),
           "citylake_s": round(seconds["ingested"], 2), "citylake_rows_per_s": round(rows / seconds["ingested"]),
           "citylake_over_floor": round(seconds["ingested"] / floor_s, 2),
           "unmerged_s": round(seconds["unmerged"], 2), "unmerged_over_floor": round(seconds["unmerged"] / floor_s, 2)}
    for name, lake in lakes.items():
        stats = lake.stats("pings")
        out[f"{name}_files"], out[f"{name}_partitions"] = stats.files, stats.partitions
        out[f"{name}_mean_file_mb"] = round(stats.bytes / max(stats.files, 1) / 2**20, 2)
    compacted = lakes["unmerged"]
    out.update(_footfall_times(lakes["ingested"], compacted))
    return out


def _footfall_times(ingested: Lake, unmerged: Lake) -> dict:
    from citylake.queries import footfall

    out: dict = {}
    for engine in ("polars", "duckdb"):
        def run(lake: Lake, engine=engine):
            return footfall(lake, freq="1h", k=1, engine_name=engine)

        fresh, result = median_run(lambda: run(ingested), FOOTFALL_REPEATS)
        unmerged_s, _ = median_run(lambda: run(unmerged), FOOTFALL_REPEATS)
        out[f"footfall_{engine}_ingested_s"] = round(float(np.median(fresh)), 3)
        out[f"footfall_{engine}_unmerged_s"] = round(float(np.median(unmerged_s)), 3)
        out[f"footfall_{engine}_groups"] = result.table.num_rows
    unmerged.compact("pings")
    for engine in ("polars", "duckdb"):
        seconds, _ = median_run(lambda engine=engine: footfall(unmerged, freq="1h", k=1, engine_name=engine), FOOTFALL_REPEATS)
        compacted = out[f"footfall_{engine}_compacted_s"] = round(float(np.median(seconds)), 3)
        for name in ("ingested", "unmerged"):
            out[f"footfall_{engine}_{name}_over_compacted"] = round(out[f"footfall_{engine}_{name}_s"] / compacted, 2)
    return out
