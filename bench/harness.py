"""What every figure shares: timing, the machine's description, the results file, peak memory and the figures' registry.

Only the standard library is imported at the top: Dask workers import this module to run the RSS sampler, and
should not pay for more than the sampler.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent  # the repository: child processes start here, so ``bench`` imports


def median_run(fn: Callable[[], object], repeat: int) -> tuple[list[float], object]:
    """Wall times of ``repeat`` runs in order, and the last result (quote the median: the machine is shared)."""
    seconds, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - started)
    return seconds, result


def timed(fn: Callable[[], object], repeat: int = 1) -> tuple[float, object]:
    """Best wall time of ``repeat`` runs (the machine is shared: the minimum is the least noisy)."""
    seconds, result = median_run(fn, repeat)
    return min(seconds), result


def machine() -> dict:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    packages = ["duckdb", "deltalake", "polars", "pyarrow", "h3", "h3ronpy", "polars-h3", "shapely", "numpy"]
    return {
        "python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "memory_gib": round(mem / 2**30, 1), "processor": platform.processor() or platform.machine(),
        "versions": {p: version(p) for p in packages},
    }


def read_results(path: Path) -> dict:
    """The figures already in ``path`` (none if it does not exist), stamped with this machine and this run's time."""
    results = json.loads(path.read_text()) if path.exists() else {}
    results.update({"machine": machine(), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return results


def write_results(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def peak_rss_mb_so_far() -> int:
    """This process's high-water mark of resident memory, in MB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def start_rss_sampler(dask_worker=None) -> None:
    """In a Dask worker: sample its resident memory every 50 ms into the worker object (ru_maxrss would
    report the parent's peak in a forked worker)."""
    import threading

    import psutil

    worker, me = dask_worker, psutil.Process()  # client.run passes the worker as dask_worker
    worker.citylake_peak_rss = 0

    def sample() -> None:
        while True:
            worker.citylake_peak_rss = max(worker.citylake_peak_rss, me.memory_info().rss)
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()


def peak_rss_mb(dask_worker=None) -> int:
    """In a Dask worker: the highest resident memory its sampler saw, in MB."""
    return round(getattr(dask_worker, "citylake_peak_rss", 0) / 2**20)  # 0: a replacement worker, started after the sampler


@dataclass
class Run:
    """What the figures of one run get: the command's sizes, a scratch directory, and the pings they share."""

    rows: int
    ingest_rows: int
    work: Path
    cache: dict = field(default_factory=dict)

    def pings(self) -> pa.Table:
        """``rows`` pings at the lake's cell resolution, made once for the figures that write them."""
        if "pings" not in self.cache:
            from bench.synthetic import make_pings
            from citylake.lake import Lake

            self.cache["pings"] = make_pings(self.rows, Lake.init(self.work / "probe").cell_res)
        return self.cache["pings"]


def figures() -> list[tuple[str, Callable[[Run], dict]]]:
    """Every figure in the order a full run measures them, under its name in results.json (what ``--only`` picks)."""
    from bench import (
        analysis,
        dask_s3,
        detection_scenarios,
        footfall,
        footfall_zones,
        ingest,
        knn,
        lake_write,
        live,
        month_ingest,
        object_storage,
        point_to_cell,
        queries_scaling,
        release,
        scale,
        serve,
    )

    return [
        ("point_to_cell", lambda run: point_to_cell.bench_point_to_cell(run.rows)),
        ("lake_write", lambda run: lake_write.bench_lake_write(run.pings(), run.work)),
        ("partition_resolution", lambda run: lake_write.bench_partition_resolution(run.pings(), run.work)),
        ("ingest_pings_csv", lambda run: ingest.bench_ingest_pings(run.ingest_rows, run.work)),
        ("ingest_memory", lambda run: ingest.bench_ingest_memory(run.ingest_rows // 10, run.work)),
        ("month_of_pings", lambda run: month_ingest.bench_month_of_pings(run.rows, run.work)),
        ("footfall", lambda run: footfall.bench_footfall(run.rows, run.work)),
        ("footfall_zones", lambda run: footfall_zones.bench_footfall_zones(run.rows, run.work)),
        ("knn_spatialbench_q12", lambda run: knn.bench_knn(run.work)),
        ("queries_scaling", lambda run: queries_scaling.bench_queries_scaling(run.rows, run.work)),
        ("detection_truth", lambda run: analysis.bench_detection_truth(run.work)),
        ("detection_scenarios", lambda run: detection_scenarios.bench_detection_scenarios(run.work)),
        ("detection_scenarios_held_out", lambda run: detection_scenarios.bench_held_out(run.work)),
        ("dask_scaling", lambda run: analysis.bench_dask_scaling(run.work)),
        ("stays_dask", lambda run: analysis.bench_stays_dask(run.work)),
        ("reports_dask", lambda run: analysis.bench_reports_dask(run.work)),
        ("live_alerts", lambda run: live.bench_live_alerts(run.work)),
        ("live_mqtt", lambda run: live.bench_live_mqtt(run.work)),
        ("surge_3x", lambda run: live.bench_three_times_surge(run.work)),
        ("dp_release", lambda run: release.bench_dp_release(run.rows, run.work)),
        ("serve_load", lambda run: serve.bench_serve_load(run.work)),
        ("object_storage", lambda run: object_storage.bench_object_storage(run.work)),
        ("dask_footfall_s3", lambda run: dask_s3.bench_dask_footfall_s3(run.rows, run.work)),
        ("dask_ingest_s3", lambda run: dask_s3.bench_dask_ingest_s3(run.rows, run.work)),
        ("scale_100m", lambda run: scale.bench_scale(run.work, small=run.rows, large=run.rows * 10)),
        ("scale_100m_dask", lambda run: scale.bench_scale_dask(run.work, small=run.rows, large=run.rows * 10)),
        ("expo_day_dask", lambda run: scale.bench_expo_day_dask(run.work)),
    ]
