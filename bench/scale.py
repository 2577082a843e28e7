"""Figure scale_100m: ingest, publish and footfall at 10M and at 100M pings (a month over a ~1,000 km² city), each step in a
process of its own so its peak memory is its own; growth against linear (10x the pings).

Two data shapes, generated in chunks (100M rows never sit in one process): ``uniform_shuffled`` (positions uniform,
rows in random order, 1 km² grid zones) and ``hotspots_time_ordered`` (40 hotspots, each chunk three days in time
order, irregular park-like zones) — the second not used to develop the ingest.

    python -m bench.scale STEP LAKE [FILE]    (the child: prints {"seconds": …, "peak_rss_mb": …})
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

KEY = b"bench-scale-key-0123456789abcdef0123456789abcdef0123"
CHUNKS = 10


def bench_scale(work: Path, *, small: int = 10_000_000, large: int = 100_000_000) -> dict:
    out: dict = {"how": "each step a child process (peak RSS = its VmHWM); ingest of a Parquet file into a fresh lake, "
                        "publish of every day (epsilon 0.7 per day), steward footfall per zone-hour on the default engine "
                        "(run 3 times in its process: the first run's time and peak are the step's figure, the peak after "
                        "each run in peak_rss_mb_by_run); growth = time at large / time at small, linear = 10",
                 "targets": "growth <= 1.1x linear (<= 11 for 10x the pings); memory flat"}
    steps = {"ingest": "ingest", "publish": "publish", "footfall": "footfall"}
    return _two_sizes(out, work / "one", steps, small, large, rss="peak_rss_mb", rss_growth="rss_growth")


def bench_scale_dask(work: Path, *, small: int = 10_000_000, large: int = 100_000_000) -> dict:
    """The same two sizes and shapes, ingest and footfall on a local Dask cluster of two one-core workers: a task per
    ~2M rows (ingest) and per day (footfall), so a worker's peak memory follows a task, not the lake."""
    out: dict = {"how": "each step a child process starting a local cluster of 2 one-thread worker processes; peak RSS of the "
                        "client and of each worker (VmHWM); ingest_pings_on_cluster of the Parquet file (one commit), "
                        "then footfall_on_cluster per zone-hour (a task per span of days, or per part of a dense day)",
                 "targets": "growth <= 1.1x linear (<= 11 for 10x the pings); memory flat"}
    return _two_sizes(out, work / "dask", {"ingest": "ingest_dask", "footfall": "footfall_dask"}, small, large,
                      rss="worker_peak_rss_mb", rss_growth="worker_rss_growth")


def bench_expo_day_dask(work: Path, *, sizes: tuple[int, ...] = (8_000_000, 16_000_000)) -> dict:
    """One day's pings crowded into a few coarse cells (an expo: a normal spread of ~1 km around one point), ingested on
    a local cluster of two one-core workers, as citylake settles them (a partition denser than a settle share sliced by
    device) and with every partition settled whole (the baseline, by patching the client's plan): each phase's peak
    RSS per worker (stage, then settle) at two sizes."""
    out: dict = {"how": "a child process per run starting a local cluster of 2 one-thread workers; each worker's VmHWM after "
                        "the stage tasks, then reset (clear_refs 5) and read again after the settle tasks",
                 "targets": "memory flat (issue 18)"}
    folder = work / "expo"
    folder.mkdir(parents=True, exist_ok=True)
    for rows in sizes:
        source = _expo_inputs(folder, rows)
        for plan in ("sliced", "whole"):
            lake = folder / f"lake-{rows}-{plan}"
            out[f"{rows}_{plan}"] = _child("expo_dask", lake, str(source), plan)
            shutil.rmtree(lake, ignore_errors=True)
        source.unlink()
    for plan in ("sliced", "whole"):
        small, large = (out[f"{rows}_{plan}"] for rows in (sizes[0], sizes[-1]))
        out[f"{plan}_settle_peak_growth"] = round(large["settle_peak_mb"] / small["settle_peak_mb"], 2)
    print(json.dumps(out), flush=True)
    return out


def _expo_inputs(folder: Path, rows: int) -> Path:
    import numpy as np
    import pyarrow.parquet as pq

    from bench.month_ingest import CITY, _pings

    path, writer = folder / f"pings-{rows}.parquet", None
    for chunk in range(8):
        rng, n = np.random.default_rng(chunk), rows // 8
        lat, lon = np.mean(CITY["lat"]) + rng.normal(0, 0.01, n), np.mean(CITY["lon"]) + rng.normal(0, 0.01, n)
        table = _pings(rng.integers(0, 200_000, n), rng.integers(0, 86400, n), lat, lon, rng)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=1_000_000)
    writer.close()
    return path


def _expo_on_cluster(lake_dir: str, source: str, plan: str) -> dict:
    from citylake.analytics import dask_client
    from citylake.ingestion import fanout
    from citylake.lake import Lake

    if plan == "whole":  # the baseline: no partition sliced, however dense
        fanout._units = lambda cell, rows: [(rows, fanout.Share(partitions=frozenset([cell])))]
    peaks, settle = {}, fanout._settle_and_commit

    def settle_after_stage(lake, client, *args):
        peaks["stage"] = max(client.run(_reset_peak_rss_mb).values())
        return settle(lake, client, *args)

    fanout._settle_and_commit = settle_after_stage
    said: list[str] = []
    with dask_client(workers=2, announce=lambda _: None) as client:
        client.run(_reset_peak_rss_mb)
        started = time.perf_counter()
        fanout.ingest_pings_on_cluster(Lake.init(lake_dir), [source], client, key=KEY, announce=said.append)
        seconds = time.perf_counter() - started
        peaks["settle"] = max(client.run(_reset_peak_rss_mb).values())
    tasks = next(line for line in said if "settling" in line)
    return {"seconds": round(seconds, 2), "stage_peak_mb": peaks["stage"], "settle_peak_mb": peaks["settle"],
            "settle_tasks": int(tasks.split(" in ")[1].split()[0])}


def _reset_peak_rss_mb() -> int:
    """This process's VmHWM since the last reset, and a reset (so the next phase's peak is its own)."""
    peak = _peak_rss_mb()
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    return peak


def _two_sizes(out: dict, work: Path, steps: dict[str, str], small: int, large: int, *, rss: str, rss_growth: str) -> dict:
    """Each shape at ``small`` and ``large`` pings: every step (name → child step) on a fresh lake, then its growth."""
    for shape in ("uniform_shuffled", "hotspots_time_ordered"):
        figure: dict = {}
        for rows in (small, large):
            folder = work / f"{shape}-{rows}"
            folder.mkdir(parents=True, exist_ok=True)
            pings, zones = _write_inputs(folder, shape, rows)
            lake = folder / "lake"
            _child("init", lake, str(zones))
            figure[str(rows)] = {name: _measured(step, lake, *([str(pings)] if name == "ingest" else [])) for name, step in steps.items()}
            figure[str(rows)]["file_gb"] = round(pings.stat().st_size / 2**30, 2)
            figure[str(rows)]["lake_gb"] = round(sum(f.stat().st_size for f in lake.rglob("*") if f.is_file()) / 2**30, 2)
            shutil.rmtree(folder, ignore_errors=True)
        for name in steps:
            figure[f"{name}_growth"] = round(figure[str(large)][name]["seconds"] / figure[str(small)][name]["seconds"], 2)
            figure[f"{name}_{rss_growth}"] = round(figure[str(large)][name][rss] / figure[str(small)][name][rss], 2)
            if "peak_rss_mb_by_run" in figure[str(small)][name]:  # the same after the runs in one process, at both sizes
                figure[f"{name}_{rss_growth}_last_run"] = round(figure[str(large)][name]["peak_rss_mb_by_run"][-1]
                                                              / figure[str(small)][name]["peak_rss_mb_by_run"][-1], 2)
        out[shape] = figure
        print(json.dumps({shape: figure}), flush=True)
    return out


def _on_cluster(step: str, lake_dir: str, args: list[str]) -> dict:
    if step == "expo_dask":
        return _expo_on_cluster(lake_dir, *args)
    from citylake.analytics import dask_client
    from citylake.lake import Lake

    with dask_client(workers=2, announce=lambda _: None) as client:
        started = time.perf_counter()
        if step == "ingest_dask":
            from citylake.ingestion.fanout import ingest_pings_on_cluster

            ingest_pings_on_cluster(Lake.open(lake_dir), [args[0]], client, key=KEY)
        else:
            from citylake.analytics.fanout import footfall_on_cluster

            footfall_on_cluster(Lake.open(lake_dir), client, freq="1h", k=1)
        seconds = time.perf_counter() - started
        workers = client.run(_peak_rss_mb)
    return {"seconds": round(seconds, 2), "worker_peak_rss_mb": max(workers.values()), "client_peak_rss_mb": _peak_rss_mb()}


def _peak_rss_mb() -> int:
    """This process's VmHWM (ru_maxrss is carried across fork and exec on Linux: a child would report its parent's peak)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) // 1024


def _write_inputs(folder: Path, shape: str, rows: int) -> tuple[Path, Path]:
    """The pings Parquet file, written chunk by chunk, and the zones file."""
    import geopandas as gpd
    import numpy as np
    import pyarrow.parquet as pq

    from bench.month_ingest import CITY, DAYS, _pings, grid_zones, park_zones

    zones = grid_zones() if shape == "uniform_shuffled" else park_zones()
    gpd.GeoDataFrame({"id": [f"z{i}" for i in range(len(zones))], "category": "zone"}, geometry=zones,
                     crs="EPSG:4326").to_file(folder / "zones.geojson", driver="GeoJSON")
    rng = np.random.default_rng(40)
    centres = np.c_[rng.uniform(*CITY["lat"], 40), rng.uniform(*CITY["lon"], 40)]
    spread, weights = rng.uniform(0.002, 0.03, 40), rng.dirichlet(np.ones(40))
    writer = None
    per = rows // CHUNKS
    for chunk in range(CHUNKS):
        rng = np.random.default_rng(100 + chunk)
        if shape == "uniform_shuffled":
            table = _pings(rng.integers(0, 30_000, per), rng.integers(0, DAYS * 86400, per), rng.uniform(*CITY["lat"], per),
                           rng.uniform(*CITY["lon"], per), rng)
        else:
            which = rng.choice(40, per, p=weights)
            lat = np.clip(centres[which, 0] + rng.normal(0, spread[which]), *CITY["lat"])
            lon = np.clip(centres[which, 1] + rng.normal(0, spread[which]), *CITY["lon"])
            days = DAYS // CHUNKS
            seconds = np.sort(rng.integers(chunk * days * 86400, (chunk + 1) * days * 86400, per))
            table = _pings(rng.integers(0, 120_000, per), seconds, lat, lon, rng)
        if writer is None:
            writer = pq.ParquetWriter(folder / "pings.parquet", table.schema)
        writer.write_table(table, row_group_size=1_000_000)
    writer.close()
    return folder / "pings.parquet", folder / "zones.geojson"


def _measured(step: str, lake: Path, *args: str) -> dict:
    """A step's figure; a footfall (which changes nothing) run once before, so no size pays for compiling the kernels
    into numba's cache (the first footfall of a fresh clone does)."""
    if step.startswith("footfall"):
        _child(step, lake, *args)
    return _child(step, lake, *args)


def _child(step: str, lake: Path, *args: str) -> dict:
    from bench.harness import ROOT

    done = subprocess.run([sys.executable, "-m", "bench.scale", step, str(lake), *args], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"bench.scale {step} failed: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _run_step(step: str, lake_dir: str, args: list[str]) -> dict:
    from citylake.lake import Lake

    started = time.perf_counter()
    if step == "init":
        from citylake.ingestion.map import ingest_places
        from citylake.privacy import Policy, key_check, write_policy

        lake = Lake.init(lake_dir)
        write_policy(lake, Policy().with_epoch(key_check(KEY)))
        ingest_places(lake, args[0])
    elif step == "ingest":
        from citylake.ingestion.location import ingest_pings

        ingest_pings(Lake.open(lake_dir), args[0], key=KEY)
    elif step == "publish":
        from citylake.privacy import read_policy
        from citylake.queries.release import publish

        lake = Lake.open(lake_dir)
        policy = read_policy(lake)
        publish(lake, policy=policy, epsilon=policy.release_epsilon, delta=policy.delta_per_day)
    elif step == "footfall":
        return _footfall_runs(Lake.open(lake_dir))
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "peak_rss_mb": _peak_rss_mb()}


FOOTFALL_RUNS = 3


def _footfall_runs(lake) -> dict:
    """The footfall's first run in a fresh process (its time and peak, the step's figure), then the same footfall again
    ``FOOTFALL_RUNS`` - 1 times in that process, with the peak after each: what a long-lived process (the server, a
    notebook) holds once the allocators have kept what earlier runs freed — a lake of many windows reaches it in one call."""
    from citylake.queries import footfall

    seconds, peaks = [], []
    for _ in range(FOOTFALL_RUNS):
        started = time.perf_counter()
        footfall(lake, freq="1h", k=1)
        seconds.append(round(time.perf_counter() - started, 2))
        peaks.append(_peak_rss_mb())
    return {"seconds": seconds[0], "peak_rss_mb": peaks[0], "seconds_by_run": seconds, "peak_rss_mb_by_run": peaks}


if __name__ == "__main__":
    step = _on_cluster if sys.argv[1].endswith("_dask") else _run_step
    print(json.dumps(step(sys.argv[1], sys.argv[2], sys.argv[3:])))
