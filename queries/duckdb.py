"""The DuckDB engine: SQL over the lake's views, spatial for the exact test on boundary cells."""

from __future__ import annotations

import polars as pl

from citylake.lake import Lake, duckdb_for
from citylake.queries.base import FootfallBy
from citylake.queries.filters import Filters


class DuckDBEngine:
    name = "duckdb"

    def __init__(self, lake: Lake, **connect_options: object) -> None:
        self.lake = lake
        self.con = duckdb_for(lake, **connect_options)

    def footfalls(self, *, views: list[tuple[FootfallBy, int, str]], filters: Filters) -> list[pl.DataFrame]:
        return [self._footfall(by=by, freq=freq, res=res, filters=filters) for by, res, freq in views]  # one query per view

    def _footfall(self, *, by: FootfallBy, freq: str, res: int, filters: Filters) -> pl.DataFrame:
        bucket = f"time_bucket_of(p.ts, '{freq}')"
        if by == "cell":
            cell = "p.h3_cell" if res == self.lake.cell_res else f"h3_cell_to_parent(p.h3_cell, {res})"
            sql = f"""SELECT {cell} AS h3_cell, {bucket} AS bucket, count(*) AS pings, count(DISTINCT p.device_id) AS devices
                      FROM pings p WHERE {filters.ping_sql('p')} GROUP BY ALL"""
            return self.con.execute(sql).pl()
        hits = self._hits_sql(filters)
        if by == "place":
            sql = f"""SELECT place_id, name, category, {bucket} AS bucket, count(*) AS pings, count(DISTINCT device_id) AS devices
                      FROM ({hits}) p GROUP BY ALL"""
        else:  # a ping inside two places of one category counts once for it
            sql = f"""SELECT category, {bucket} AS bucket, count(DISTINCT (device_id, ts, lat, lon)) AS pings,
                             count(DISTINCT device_id) AS devices
                      FROM ({hits}) p GROUP BY ALL"""
        return self.con.execute(sql).pl()

    def presence(self, *, filters: Filters) -> pl.DataFrame:
        sql = f"SELECT DISTINCT device_id, place_id, time_bucket_of(ts, '1h') AS bucket FROM ({self._hits_sql(filters)}) p"
        return self.con.execute(sql).pl()

    def pings(self, *, filters: Filters) -> pl.DataFrame:
        return self.con.execute(f"SELECT device_id, ts, lat, lon FROM pings p WHERE {filters.ping_sql('p')}").pl()

    def readings(self, *, sensor_ids: list[str], freq: str, filters: Filters) -> pl.DataFrame:
        ids = ", ".join("'" + i.replace("'", "''") + "'" for i in sensor_ids) or "NULL"
        sql = f"""SELECT r.sensor_id, r.metric, time_bucket_of(r.ts, '{freq}') AS bucket, count(*) AS readings,
                         avg(r.value) AS mean, min(r.value) AS min, max(r.value) AS max
                  FROM readings r WHERE r.sensor_id IN ({ids}) AND {filters.ping_sql('r')} GROUP BY ALL"""
        return self.con.execute(sql).pl()

    def stays(self, *, filters: Filters, max_gap_s: int, min_dwell_s: int) -> pl.DataFrame:
        # Number each device's pings in time order; a stay is a run of consecutive numbers in one place.
        numbered = f"""SELECT p.*, row_number() OVER (PARTITION BY p.device_id ORDER BY p.ts, p.lat, p.lon) AS seq
                       FROM pings p WHERE {filters.ping_sql('p')}"""
        sql = f"""
            WITH hits AS ({self._hits_sql(filters, pings=f"({numbered})", extra=", p.seq")}),
            marked AS (
                SELECT *, CASE WHEN seq = lag(seq) OVER w + 1 AND epoch_us(ts) - epoch_us(lag(ts) OVER w) <= {max_gap_s * 10**6}
                               THEN 0 ELSE 1 END AS new_stay
                FROM hits WINDOW w AS (PARTITION BY device_id, place_id ORDER BY seq)),
            runs AS (SELECT *, sum(new_stay) OVER (PARTITION BY device_id, place_id ORDER BY seq) AS stay FROM marked)
            SELECT device_id, place_id, min(ts) AS start, max(ts) AS "end", count(*) AS pings
            FROM runs GROUP BY device_id, place_id, stay
            HAVING epoch_us(max(ts)) - epoch_us(min(ts)) >= {min_dwell_s * 10**6}"""
        return self.con.execute(sql).pl()

    def _hits_sql(self, filters: Filters, *, pings: str | None = None, extra: str = "") -> str:
        """Pings inside each selected polygonal place: interior cells as they are, boundary cells tested exactly.

        ``pings`` is a subquery already filtered by the caller; without it the pings table is read and filtered here."""
        source, ping_filter = ("pings", filters.ping_sql("p")) if pings is None else (pings, "TRUE")
        return f"""
            WITH pl AS (
                SELECT place_id, name, category, ST_GeomFromWKB(geometry) AS geom FROM places pl
                WHERE {filters.place_sql('pl')}
                  AND ST_GeometryType(ST_GeomFromWKB(geometry))::VARCHAR IN ('POLYGON', 'MULTIPOLYGON')
            )
            SELECT p.device_id, p.ts, p.lat, p.lon, pl.place_id, pl.name, pl.category{extra}
            FROM {source} p JOIN place_cells c USING (h3_cell) JOIN pl USING (place_id)
            WHERE {ping_filter} AND (c.interior OR ST_Contains(pl.geom, ST_Point(p.lon, p.lat)))"""
