"""The child processes of figure knn_spatialbench_q12: a baseline's k nearest neighbours, timed in its own process.

    python -m bench.knn_baselines sedonadb WORK K true|false   (ST_KNN on the sphere, or planar on lon/lat degrees)
    python -m bench.knn_baselines duckdb WORK K                (a LATERAL ORDER BY distance LIMIT k)

Both read WORK/queries.parquet and WORK/targets.parquet (columns id, wkb) and print the query's wall time in seconds
as the last line; SedonaDB also writes its pairs to WORK/sedona_knn_<true|false>.parquet. The parent kills the
process at its time limit.
"""

from __future__ import annotations

import argparse
import time


def sedonadb_knn(work: str, k: int, sphere: str) -> float:
    """SedonaDB's ST_KNN join (``sphere`` is "true" or "false"); seconds of the query, pairs written after timing."""
    import geoarrow.pyarrow as ga
    import pyarrow as pa
    import pyarrow.parquet as pq
    import sedonadb

    sd = sedonadb.connect()
    for name in ("queries", "targets"):
        t = pq.read_table(f"{work}/{name}.parquet")
        sd.create_data_frame(pa.table({"id": t["id"], "geom": ga.as_wkb(t["wkb"])})).to_view(name, overwrite=True)
    started = time.perf_counter()
    knn = f"SELECT q.id AS query, t.id AS target FROM queries q JOIN targets t ON ST_KNN(q.geom, t.geom, {k}, {sphere})"
    out = sd.sql(knn).to_arrow_table()
    seconds = time.perf_counter() - started
    pq.write_table(out, f"{work}/sedona_knn_{sphere}.parquet")
    return seconds


def duckdb_knn(work: str, k: int) -> float:
    """DuckDB spatial: for every query, the targets ordered by great-circle distance, first ``k``; seconds of the query."""
    from citylake.lake import connect

    con = connect()
    started = time.perf_counter()
    con.execute(f"SELECT q.id, t.id FROM read_parquet('{work}/queries.parquet') q, LATERAL (\n"
                f"    SELECT id FROM read_parquet('{work}/targets.parquet') t\n"
                f"    ORDER BY ST_Distance_Sphere(ST_GeomFromWKB(q.wkb), ST_GeomFromWKB(t.wkb)) LIMIT {k}) t").fetchall()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.knn_baselines", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("engine", choices=("sedonadb", "duckdb"))
    parser.add_argument("work", help="the directory holding queries.parquet and targets.parquet")
    parser.add_argument("k", type=int)
    parser.add_argument("sphere", nargs="?", choices=("true", "false"), default="true", help="SedonaDB only: on the sphere or not")
    args = parser.parse_args()
    if args.engine == "sedonadb":
        print(sedonadb_knn(args.work, args.k, args.sphere))
    else:
        print(duckdb_knn(args.work, args.k))


if __name__ == "__main__":
    main()
