"""Figures lake_write and partition_resolution.

- lake_write: Lake.write of pings (validate, partition keys, sort, Delta commit) vs DuckDB's own
  COPY ... (FORMAT parquet, PARTITION_BY ...) of the same rows (the floor: no checks, no log);
- partition_resolution: files, write time and query times for coarse cells at res 4, 5, 6.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa

from bench.harness import timed
from citylake.lake import Lake, connect, duckdb_for


def bench_lake_write(pings: pa.Table, work: Path) -> dict:
    out: dict = {"rows": pings.num_rows}
    lake = Lake.init(work / "write-lake")
    seconds, _ = timed(lambda: lake.write("pings", pings))
    out["citylake_write_s"] = seconds
    stats = lake.stats("pings")
    out["citylake_files"], out["citylake_bytes"] = stats.files, stats.bytes
    # The floor: DuckDB writes the same rows (partition columns included) with no checks and no log.
    conformed = lake.conform("pings", pings)
    con = connect(extension_dir=work / "ext")
    con.register("rows", conformed)
    target = work / "duckdb-copy"

    def duckdb_copy():
        shutil.rmtree(target, ignore_errors=True)
        con.execute(f"COPY rows TO '{target}' (FORMAT parquet, PARTITION_BY (partition_cell, date))")

    out["duckdb_copy_s"], _ = timed(duckdb_copy)
    out["duckdb_copy_files"] = sum(1 for _ in target.rglob("*.parquet"))
    out["citylake_rows_per_s"] = round(pings.num_rows / out["citylake_write_s"])
    out["duckdb_copy_rows_per_s"] = round(pings.num_rows / out["duckdb_copy_s"])
    out["citylake_over_floor"] = round(out["citylake_write_s"] / out["duckdb_copy_s"], 2)
    shutil.rmtree(target, ignore_errors=True)
    return out


def bench_partition_resolution(pings: pa.Table, work: Path, resolutions: tuple[int, ...] = (4, 5, 6)) -> dict:
    out: dict = {}
    for res in resolutions:
        lake = Lake.init(work / f"part-{res}", partition_res=res)
        write_s, _ = timed(lambda lake=lake: lake.write("pings", pings))
        stats = lake.stats("pings")
        con = duckdb_for(lake, extension_dir=work / "ext")
        cell, day = con.execute(
            "SELECT partition_cell, date FROM pings GROUP BY ALL ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()
        one_s, _ = timed(lambda con=con, cell=cell, day=day: con.execute(
            f"SELECT count(DISTINCT device_id) FROM pings WHERE partition_cell = {cell} AND date = DATE '{day}'").fetchall(), repeat=3)
        day_s, _ = timed(lambda con=con, day=day: con.execute(
            f"SELECT h3_cell_to_parent(h3_cell, 8) c, count(*) FROM pings WHERE date = DATE '{day}' GROUP BY 1").fetchall(), repeat=3)
        out[f"res{res}"] = {
            "write_s": round(write_s, 2), "files": stats.files, "partitions": stats.partitions,
            "mean_file_mb": round(stats.bytes / max(stats.files, 1) / 2**20, 2),
            "one_partition_query_s": round(one_s, 4), "one_day_citywide_query_s": round(day_s, 4),
        }
        shutil.rmtree(lake.root, ignore_errors=True)
    return out
