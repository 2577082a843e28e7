"""citylake benchmarks: every figure is measured against a baseline in the same run.

From the repository's root:

    python -m bench --out bench/results.json [--only NAME ...] [--rows N] [--ingest-rows N]

Figures (see README "Benchmarks"), by their names in results.json (what --only picks):
- point_to_cell: citylake's h3_index vs an h3-py loop (baseline), h3ronpy in one call, polars-h3;
- lake_write: Lake.write of pings (validate, partition keys, sort, Delta commit) vs DuckDB's own
  COPY ... (FORMAT parquet, PARTITION_BY ...) of the same rows (the floor: no checks, no log);
- partition_resolution: files, write time and query times for coarse cells at res 4, 5, 6;
- ingest_pings_csv, ingest_memory: a pings CSV into a lake vs DuckDB's floor, the steps no ingest can skip,
  and peak memory as the file grows (bench/ingest.py);
- month_of_pings: a month of pings (Parquet and CSV, two data shapes) vs DuckDB's floor, files left, and footfall on the
  lake as ingested vs compacted (bench/month_ingest.py);
- footfall: footfall per place per hour vs DuckDB ST_Contains, GeoPandas sjoin and SedonaDB (bench/footfall.py);
- knn_spatialbench_q12: k nearest neighbours vs SedonaDB and DuckDB (bench/knn.py);
- queries_scaling: stays, OD, stay points and near-place queries at a tenth of the pings and all (bench/queries_scaling.py);
- detection_truth, dask_scaling: detections against the injected truth, the analysis on 1 and 2 Dask workers
  (bench/analysis.py); stays_dask: the steward's stays in one process and on 1 and 2 workers, two generated cities;
  reports_dask: district reports after one analysis, in one process and on 1 and 2 workers, the same two cities;
- footfall_zones: footfall on the default engine over tessellating grid zones, Voronoi zones and real OSM outlines vs
  DuckDB ST_Contains, GeoPandas sjoin and SedonaDB (bench/footfall_zones.py);
- scale_100m: ingest, publish and footfall at --rows and 10x --rows pings, each step's time and peak RSS (bench/scale.py);
  scale_100m_dask: ingest and footfall of the same on a local cluster of two workers, each worker's peak RSS;
  expo_day_dask: one crowded day (8M and 16M pings in a few coarse cells) ingested on two workers, settled as citylake
  does (dense partitions sliced by device) and whole, each phase's peak RSS per worker;
- dask_footfall_s3: the steward's footfall on 1 and 2 `citylake worker` processes (TLS scheduler) reading an s3:// lake,
  against one process (bench/dask_s3.py);
- dask_ingest_s3: a month of pings in ten Parquet objects ingested by 1 and 2 such workers into an s3:// lake (one
  commit), against one process reading the files from disk (bench/dask_s3.py);
- object_storage: ingest, footfall and publish on S3 (a local SeaweedFS) against a local disk, two data shapes
  (bench/object_storage.py);
- detection_scenarios, detection_scenarios_held_out: the batch detector on a generated family of cities (volumes, weekly
  patterns, history lengths, surges, faults, null cities) and on settings kept out of its development (bench/scenarios.py,
  bench/detection_scenarios.py).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from bench.harness import Run, figures, peak_rss_mb_so_far, read_results, write_results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench/results.json", help="where to write the results (JSON)")
    parser.add_argument("--rows", type=int, default=10_000_000, help="points and pings per figure")
    parser.add_argument("--ingest-rows", type=int, default=5_000_000, help="rows of the pings CSV ingested")
    parser.add_argument("--only", nargs="*", help="run only these figures (names as in results.json)")
    args = parser.parse_args()
    out_path = Path(args.out)
    results = read_results(out_path)
    work = Path(tempfile.mkdtemp(prefix="citylake-bench-"))
    try:
        run = Run(rows=args.rows, ingest_rows=args.ingest_rows, work=work)
        steps = [s for s in figures() if not args.only or s[0] in args.only]
        for name, step in steps:
            print(f"bench: {name} …", flush=True)
            results[name] = step(run)
            results[name]["peak_rss_mb_so_far"] = peak_rss_mb_so_far()
            print(json.dumps(results[name], indent=1), flush=True)
            write_results(out_path, results)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"bench: results in {out_path}")


if __name__ == "__main__":
    main()
