"""Figures dask_footfall_s3 and dask_ingest_s3: the steward's footfall, and the ingest of pings files, on a Dask cluster
of separate processes — `dask scheduler` over TLS and `citylake worker` processes started without the lake's storage
variables, seeing the lake (and the input files) only through s3:// — with 1 and then 2 workers, against the same work
in one process; two data shapes (bench.month_ingest's)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from bench.harness import ROOT, median_run

KEY = b"bench-dask-s3-key-0123456789abcdef0123456789abcdef0123"
REPEATS = 5


def bench_dask_footfall_s3(rows: int, work: Path) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    import seaweed

    from bench.month_ingest import grid_zones, hotspots_time_ordered, park_zones, uniform_shuffled

    server = seaweed.start(work / "seaweedfs")
    try:
        out: dict = {"how": f"footfall per zone-hour, k=1; each setting {REPEATS} runs in turn after one warm-up; best and median. "
                            "Workers: `citylake worker` processes (one thread, one core) joined to `dask scheduler --protocol tls`",
                     "target": "2 workers >= 1.6x 1 worker (best of N and median)"}
        for shape, (make, zones) in {"uniform_shuffled": (uniform_shuffled, grid_zones),
                                     "hotspots_time_ordered": (hotspots_time_ordered, park_zones)}.items():
            lake = _s3_lake(work / shape, server, make(rows), zones())
            out[shape] = _measure(lake, work / shape, server.process)
        return out
    finally:
        server.stop()


INGEST_REPEATS = 3
INGEST_FILES = 10  # the month arrives as ten Parquet files (a feed's daily drops, three days each)


def bench_dask_ingest_s3(rows: int, work: Path) -> dict:
    """Ingest of ``rows`` pings in INGEST_FILES Parquet objects on the store into a fresh s3:// lake: one process (reading
    the same files from a local disk) against `ingest pings --scheduler` with 1 and 2 workers."""
    sys.path.insert(0, str(ROOT / "tests"))
    import seaweed

    from bench.month_ingest import hotspots_time_ordered, uniform_shuffled

    server = seaweed.start(work / "seaweedfs-ingest")
    try:
        out: dict = {"how": f"{rows:,} pings in {INGEST_FILES} Parquet files into a fresh s3:// lake, each setting "
                            f"{INGEST_REPEATS} runs in turn; one process reads the files from local disk (as the CLI: each "
                            "file's buffered run, the partitions merged once after the last), the cluster from s3:// "
                            "(tasks per file; one commit)",
                     "target": "2 workers >= 1.6x 1 worker (best of N and median)"}
        for shape, make in {"uniform_shuffled": uniform_shuffled, "hotspots_time_ordered": hotspots_time_ordered}.items():
            out[shape] = _measure_ingest(server, make(rows), work / f"ingest-{shape}")
        return out
    finally:
        server.stop()


def _measure_ingest(server, pings, folder: Path) -> dict:
    import obstore
    import pyarrow.parquet as pq

    from citylake.api import merge_ingested
    from citylake.ingestion.fanout import ingest_pings_on_cluster
    from citylake.ingestion.location import ingest_pings
    from citylake.lake.storage import locate

    folder.mkdir(parents=True, exist_ok=True)
    inbox = f"s3://citylake/inbox-{uuid.uuid4().hex[:8]}"
    store = locate(inbox, server.storage()).store
    files, size = [], -(-pings.num_rows // INGEST_FILES)
    for n in range(INGEST_FILES):
        local = folder / f"pings-{n:02d}.parquet"
        pq.write_table(pings.slice(n * size, size), local, row_group_size=250_000)
        obstore.put(store, local.name, local.read_bytes())
        files.append((local, f"{inbox}/{local.name}"))
    landed: dict = {}

    def one_process():  # as `citylake ingest pings FILE…` runs: each file lands unmerged, the partitions merged once after
        lake = _fresh_lake(server)
        merge_ingested(lake, [ingest_pings(lake, local, key=KEY, compact=False) for local, _ in files])
        landed["one_process"] = lake.rows("pings")

    out: dict = {"pings": pings.num_rows, "one_process_s": _summary(median_run(one_process, INGEST_REPEATS)[0])}
    for workers, client, processes in _one_then_two_workers(folder):

        def on_cluster(client=client, workers=workers):
            lake = _fresh_lake(server)
            ingest_pings_on_cluster(lake, [uri for _, uri in files], client, key=KEY)
            landed[f"workers_{workers}"] = lake.rows("pings")

        on_cluster()  # warm-up: imports on the workers
        with _cpu_per_run({**processes, "seaweedfs": [server.process]}, INGEST_REPEATS) as cpu:
            out[f"workers_{workers}_s"] = _summary(median_run(on_cluster, INGEST_REPEATS)[0])
        out[f"workers_{workers}_cpu_s_per_run"] = cpu
    out["rows_landed"] = landed
    out["same_rows"] = len(set(landed.values())) == 1
    for stat in ("best", "median"):
        out[f"speedup_1_to_2_{stat}"] = round(out["workers_1_s"][stat] / out["workers_2_s"][stat], 2)
        out[f"two_workers_vs_one_process_{stat}"] = round(out["one_process_s"][stat] / out["workers_2_s"][stat], 2)
    out["speedup_1_to_2_ceiling_here"] = _ceiling(out)
    return out


def _fresh_lake(server):
    from citylake.lake import Lake
    from citylake.privacy import Policy, key_check, write_policy

    lake = Lake.init(f"s3://citylake/ingest-{uuid.uuid4().hex[:8]}", storage=server.storage())
    write_policy(lake, Policy().with_epoch(key_check(KEY)))
    return lake


def _s3_lake(folder: Path, server, pings, zones):
    import geopandas as gpd
    import pyarrow.parquet as pq

    from citylake.ingestion.location import ingest_pings
    from citylake.ingestion.map import ingest_places
    from citylake.lake import Lake
    from citylake.privacy import Policy, key_check, write_policy

    folder.mkdir(parents=True, exist_ok=True)
    gpd.GeoDataFrame({"id": [f"z{i}" for i in range(len(zones))], "category": "zone"}, geometry=zones,
                     crs="EPSG:4326").to_file(folder / "zones.geojson", driver="GeoJSON")
    pq.write_table(pings, folder / "pings.parquet")
    lake = Lake.init(f"s3://citylake/dask-{uuid.uuid4().hex[:8]}", storage=server.storage())
    write_policy(lake, Policy().with_epoch(key_check(KEY)))
    ingest_places(lake, folder / "zones.geojson")
    ingest_pings(lake, folder / "pings.parquet", key=KEY)
    return lake


def _measure(lake, folder: Path, server) -> dict:

    from citylake.analytics.fanout import footfall_on_cluster
    from citylake.queries import footfall

    one_process, result = median_run(lambda: footfall(lake, freq="1h", k=1), REPEATS)
    out: dict = {"pings": lake.rows("pings"), "days": len(lake.rows_per_partition("pings", "date")), "groups": result.table.num_rows,
                 "one_process_s": _summary(one_process)}
    for workers, client, processes in _one_then_two_workers(folder):
        footfall_on_cluster(lake, client, freq="1h", k=1)  # warm-up: imports, covers, connections
        with _cpu_per_run({**processes, "seaweedfs": [server]}, REPEATS) as cpu:
            seconds, fanned = median_run(lambda client=client: footfall_on_cluster(lake, client, freq="1h", k=1), REPEATS)
        out[f"workers_{workers}_s"] = _summary(seconds)
        out[f"workers_{workers}_cpu_s_per_run"] = cpu
        out[f"workers_{workers}_same_answer"] = fanned.table.equals(result.table)
    for stat in ("best", "median"):
        out[f"speedup_1_to_2_{stat}"] = round(out["workers_1_s"][stat] / out["workers_2_s"][stat], 2)
    out["speedup_1_to_2_ceiling_here"] = _ceiling(out)
    return out


def _one_then_two_workers(folder: Path):
    """(1, client, processes) with one `citylake worker` joined to a TLS scheduler, then (2, …) with a second one (the
    processes by role: scheduler, workers); all stopped after."""
    from distributed import Client

    address, security, processes = _tls_scheduler(folder)
    try:
        for workers in (1, 2):
            processes += [_worker(address, folder, n) for n in range(len(processes) - 1, workers)]
            with Client(address, security=security, timeout="30s") as client:
                client.wait_for_workers(workers, timeout=120)
                yield workers, client, {"scheduler": processes[:1], "workers": processes[1:]}
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=30)


@contextmanager
def _cpu_per_run(processes: dict[str, list], runs: int) -> Iterator[dict]:
    """CPU seconds (user + system, children included) each role spent per run while the block ran, and this process's
    own (the client) — on a 2-core machine what the workers did not get: the store, the scheduler and the client share
    the cores with them. Filled in when the block ends."""
    import psutil

    roles = {role: [psutil.Process(p.pid) for p in group] for role, group in processes.items()}
    me = psutil.Process()  # the client; the others are its children, so its own time is counted without them

    def now() -> dict[str, float]:
        return {**{role: _cpu_s(group) for role, group in roles.items()}, "client": _cpu_s([me], children=False)}

    before, spent = now(), {}
    yield spent
    spent.update({role: round((seconds - before[role]) / runs, 2) for role, seconds in now().items()})
    spent["outside_workers"] = round(sum(v for role, v in spent.items() if role != "workers"), 2)


def _cpu_s(group: list, *, children: bool = True) -> float:
    import psutil

    total = 0.0
    for process in group:
        for each in [process, *(process.children(recursive=True) if children else [])]:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = each.cpu_times()
                total += times.user + times.system
    return total


def _ceiling(out: dict) -> float:
    """The most 1 → 2 workers could gain on this machine: a 2-worker run needs its workers' CPU and the rest's (store,
    scheduler, client) on the machine's cores, so it takes at least their sum / cores; against the 1-worker best."""
    spent = out["workers_2_cpu_s_per_run"]
    return round(out["workers_1_s"]["best"] / ((spent["workers"] + spent["outside_workers"]) / (os.cpu_count() or 1)), 2)


def _summary(seconds: list[float]) -> dict:
    return {"best": round(min(seconds), 3), "median": round(float(np.median(seconds)), 3), "runs": [round(s, 3) for s in seconds]}


def _tls_scheduler(folder: Path):
    from distributed.security import Security

    temporary = Security.temporary()
    files = {}
    for name in ("tls_ca_file", "tls_client_cert", "tls_client_key"):
        files[name] = folder / f"{name}.pem"
        files[name].write_text(getattr(temporary, name))
    security = Security(tls_ca_file=str(files["tls_ca_file"]), tls_client_cert=str(files["tls_client_cert"]),
                        tls_client_key=str(files["tls_client_key"]), require_encryption=True)
    scheduler_file = folder / "scheduler.json"
    scheduler_file.unlink(missing_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--protocol", "tls", "--host", "127.0.0.1", "--port", "0",
         "--dashboard-address", "127.0.0.1:0", "--tls-ca-file", str(files["tls_ca_file"]), "--tls-cert", str(files["tls_client_cert"]),
         "--tls-key", str(files["tls_client_key"]), "--scheduler-file", str(scheduler_file)],
        env=_clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not scheduler_file.exists():
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError("dask scheduler did not start")
        time.sleep(0.2)
    time.sleep(0.3)
    folder.joinpath("tls.json").write_text(json.dumps({k: str(v) for k, v in files.items()}))
    return json.loads(scheduler_file.read_text())["address"], security, [process]


def _worker(address: str, folder: Path, n: int) -> subprocess.Popen:
    files = json.loads(folder.joinpath("tls.json").read_text())
    env = _clean_env(CITYLAKE_ANALYSIS_TLS_CA_FILE=files["tls_ca_file"], CITYLAKE_ANALYSIS_TLS_CERT=files["tls_client_cert"],
                     CITYLAKE_ANALYSIS_TLS_KEY=files["tls_client_key"])
    return subprocess.Popen([sys.executable, "-m", "citylake.cli", "worker", address, "--name", f"w{n}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _clean_env(**extra: str) -> dict[str, str]:
    """No storage keys and no lake: the workers see the lake only through what the tasks bring."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CITYLAKE_"))}, **extra}
