"""Figure dp_release: what a differentially private release costs and how close it stays to the exact counts.

Two data shapes: the generated city (16 districts tiling it, parks, a business district, an expo; devices commuting
between home and work all day), which the releases were developed on, and park-like blobs visited by the footfall
figure's generator (5 visits a device-day, 10M pings), which they were not. On each: the release at the lake's default
policy (epsilon 1, delta 1e-6 per day, 60% of it to hourly footfall per place, a tenth of that choosing the day's bound on
place-hours per device) against the exact per-place-hour device counts, and the same counts under fixed
bounds; the share of place-hours released; and the release's time against the steward's exact k-anonymous aggregates.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl

from bench.harness import timed
from bench.synthetic import city_polygons, place_pings
from citylake.lake import Lake, scan
from citylake.privacy import Policy, key_check, write_policy
from citylake.privacy.noise import calibrate
from citylake.queries import footfall
from citylake.queries import release as R

KEY = b"bench-release-key-0123456789abcdef0123456789abcdef"
BUSY = 50  # the goal is about place-hours with at least this many devices


def bench_dp_release(rows: int, work: Path) -> dict:
    from bench.analysis import city_lake

    out: dict = {"epsilon_per_day": 1.0, "delta_per_day": 1e-6, "goal": "median relative error <= 10% for place-hours with >= 50 "
                 "devices, at epsilon 1 per day (issue 17)", "shapes": {}}
    _, city = city_lake(work, "dp-city", devices=8_000, days=3, seed=8)
    out["shapes"]["generated_city_8k_devices_3_days"] = _measure(city)
    blobs = _blob_lake(rows, work)
    out["shapes"][f"blobs_{rows // 1_000_000}M_pings_300_places"] = _measure(blobs)
    for lake in (city, blobs):
        shutil.rmtree(lake.root, ignore_errors=True)
    return out


def _blob_lake(rows: int, work: Path) -> Lake:
    import geopandas as gpd

    from citylake.ingestion.map import ingest_places

    shapes = city_polygons(300, seed=11)
    gpd.GeoDataFrame({"id": [f"b{i}" for i in range(300)], "category": "park"}, geometry=shapes, crs="EPSG:4326").to_file(
        work / "dp-blobs.geojson", driver="GeoJSON")
    lake = Lake.init(work / "dp-blobs-lake")
    ingest_places(lake, work / "dp-blobs.geojson")
    lake.write("pings", place_pings(rows, shapes, lake.cell_res, seed=17))
    return lake


def _measure(lake: Lake) -> dict:
    write_policy(lake, Policy().with_epoch(key_check(KEY)))
    policy = Policy()
    exact_s, _ = timed(lambda: R.exact_aggregates(lake, k=policy.k_floor))
    release_s, written = timed(lambda: R.publish(lake, policy=policy, epsilon=1.0, delta=1e-6))
    exact = pl.from_arrow(footfall(lake, by="place", freq="1h", k=1, engine_name="polars").table).select("place_id", "bucket", "devices")
    released = scan(lake, "footfall_hourly").select("place_id", "bucket", pl.col("devices").alias("released")).collect()
    about = scan(lake, "releases").filter(pl.col("table_name") == "footfall_hourly").collect()
    out = {"pings": lake.rows("pings"), "release_s": round(release_s, 2), "exact_k_anonymous_s": round(exact_s, 2),
           "release_vs_exact": round(release_s / exact_s, 2), "rows_released": written,
           "footfall_hourly": {"noise": about["mechanism"][0], "noise_sd": round(float(about["noise_scale"][0]), 1),
                               "threshold": int(about["threshold"][0]), **_utility(exact, released)},
           "bound_per_day": [json.loads(b)["per_device_day"] for b in about["bounds"]]}
    runner = R.engine("polars", lake)
    days = sorted(dt.date.fromisoformat(d) for d in lake.rows_per_partition("pings", "date"))
    presence = {day: R.presence_on(runner, day) for day in days}  # read once, for the bound share and every what-if
    out["devices_over_36_place_hours_a_day"] = _capped(presence, 36)
    out["what_if"] = _what_if(lake, exact, presence)
    return out


def _utility(exact: pl.DataFrame, released: pl.DataFrame) -> dict:
    both = exact.join(released, on=["place_id", "bucket"], how="left")
    busy = both.filter(pl.col("devices") >= BUSY)
    shown = busy.filter(pl.col("released").is_not_null())
    error = ((shown["released"] - shown["devices"]).abs() / shown["devices"])
    empty = released.join(exact, on=["place_id", "bucket"], how="anti").height  # noise alone over the threshold
    return {"place_hours_with_devices": exact.height, "rows_released": released.height, "rows_released_where_nobody_was": empty,
            "share_released": round(both.filter(pl.col("released").is_not_null()).height / max(exact.height, 1), 3),
            f"place_hours_with_{BUSY}_or_more_devices": busy.height,
            "share_of_those_released": round(shown.height / max(busy.height, 1), 3),
            "median_relative_error_of_those": round(float(error.median()), 3) if error.len() else None,
            "median_exact_devices_of_those": float(busy["devices"].median()) if busy.height else None}


def _capped(presence: dict[dt.date, pl.DataFrame], bound: int) -> float:
    """Share of device-days with more place-hours than ``bound`` (a release with that bound leaves their extra hours out)."""
    per = pl.concat([day.group_by("device_id").len() for day in presence.values()])
    return round(float((per["len"] > bound).mean()), 4)


def _what_if(lake: Lake, exact: pl.DataFrame, presence: dict[dt.date, pl.DataFrame]) -> dict:
    """The hourly footfall release's error had it more of the budget, or another fixed bound per device (same counts)."""
    public = R._public_partitions(lake, Policy())
    out = {}
    for epsilon, bound in ((0.6, 8), (0.6, 24), (0.6, 36), (0.6, 48), (1.0, 36), (2.0, 36)):
        noise = calibrate(epsilon=epsilon, delta=1e-6 * epsilon, l1=bound, l2=float(np.sqrt(bound)))
        threshold = max(10, int(np.ceil(Policy().threshold_sigmas * noise.deviation)))
        frames = []
        for day, seen in presence.items():
            parts = R._place_hours([seen], day, Policy(max_place_hours=bound, bound_share=0), public, (epsilon, 1e-6 * epsilon))
            frames.append(parts.keys.with_columns(pl.Series("released", noise.add(parts.counts))).filter(pl.col("released") >= threshold))
        found = _utility(exact, pl.concat(frames).select("place_id", "bucket", "released"))
        out[f"epsilon_{epsilon:g}_max_{bound}_place_hours"] = {"noise_sd": round(noise.deviation, 1), "threshold": threshold,
                                                               **{k: v for k, v in found.items() if "share" in k or "error" in k}}
    return out
