"""The Polars engine: lazy scans of the lake, shapely's vectorised test on boundary cells."""

from __future__ import annotations

import polars as pl
import shapely

from h3_index import polars_expr as X
from lake import Lake, scan
from queries.base import POLYGONAL, FootfallBy
from queries.filters import Filters


class PolarsEngine:
    name = "polars"

    def __init__(self, lake: Lake) -> None:
        self.lake = lake

    def footfall(self, *, by: FootfallBy, freq: str, res: int, filters: Filters) -> pl.DataFrame:
        pings = scan(self.lake, "pings").filter(filters.ping_expr()).select("device_id", "ts", "lat", "lon", "h3_cell")
        bucket = X.time_bucket("ts", freq).alias("bucket")
        if by == "cell":
            cell = pl.col("h3_cell") if res == self.lake.cell_res else X.cell_to_parent("h3_cell", res).alias("h3_cell")
            return (pings.group_by(cell, bucket).agg(pl.len().alias("pings"), pl.col("device_id").n_unique().alias("devices"))
                    .collect())
        hits = self._hits(pings, filters)
        if by == "place":
            return hits.group_by("place_id", "name", "category", bucket).agg(
                pl.len().alias("pings"), pl.col("device_id").n_unique().alias("devices"))
        once = hits.unique(subset=["device_id", "ts", "lat", "lon", "category"])  # a ping counts once per category
        return once.group_by("category", bucket).agg(pl.len().alias("pings"), pl.col("device_id").n_unique().alias("devices"))

    def pings(self, *, filters: Filters) -> pl.DataFrame:
        return scan(self.lake, "pings").filter(filters.ping_expr()).select("device_id", "ts", "lat", "lon").collect()

    def readings(self, *, sensor_ids: list[str], freq: str, filters: Filters) -> pl.DataFrame:
        rows = scan(self.lake, "readings").filter(filters.ping_expr() & pl.col("sensor_id").is_in(sensor_ids))
        return (rows.group_by("sensor_id", "metric", X.time_bucket("ts", freq).alias("bucket"))
                .agg(pl.len().alias("readings"), pl.col("value").mean().alias("mean"), pl.col("value").min().alias("min"),
                     pl.col("value").max().alias("max")).collect())

    def stays(self, *, filters: Filters, max_gap_s: int, min_dwell_s: int) -> pl.DataFrame:
        # Number each device's pings in time order; a stay is a run of consecutive numbers in one place.
        pings = (scan(self.lake, "pings").filter(filters.ping_expr()).select("device_id", "ts", "lat", "lon", "h3_cell")
                 .with_columns(pl.int_range(1, pl.len() + 1).over("device_id", order_by=["ts", "lat", "lon"]).alias("seq")))
        hits = self._hits(pings, filters).sort("device_id", "place_id", "seq")
        # rows are sorted by run, so a run's previous row is the row above when it has the same device and place
        same_run = (pl.col("device_id") == pl.col("device_id").shift(1)) & (pl.col("place_id") == pl.col("place_id").shift(1))
        new_stay = ~(same_run & (pl.col("seq") == pl.col("seq").shift(1) + 1)
                     & ((pl.col("ts") - pl.col("ts").shift(1)).dt.total_microseconds() <= max_gap_s * 10**6)).fill_null(False)
        stays = (hits.with_columns(new_stay.cast(pl.Int64).cum_sum().alias("stay"))
                 .group_by("device_id", "place_id", "stay")
                 .agg(pl.col("ts").min().alias("start"), pl.col("ts").max().alias("end"), pl.len().alias("pings")))
        return stays.filter((pl.col("end") - pl.col("start")).dt.total_microseconds() >= min_dwell_s * 10**6).drop("stay")

    def _hits(self, pings: pl.LazyFrame, filters: Filters) -> pl.DataFrame:
        """Pings inside each selected polygonal place: interior cells as they are, boundary cells tested exactly."""
        places = scan(self.lake, "places").filter(filters.place_expr()).select("place_id", "name", "category", "geometry").collect()
        shapes = dict(zip(places["place_id"].to_list(), shapely.from_wkb(places["geometry"].to_numpy())))
        shapes = {pid: g for pid, g in shapes.items() if g.geom_type in POLYGONAL}
        cells = scan(self.lake, "place_cells").filter(pl.col("place_id").is_in(list(shapes)))
        candidates = pings.join(cells, on="h3_cell").collect()
        inside = [candidates.filter(pl.col("interior"))]
        for (place_id,), rows in candidates.filter(~pl.col("interior")).partition_by("place_id", as_dict=True).items():
            shape = shapes[place_id]
            shapely.prepare(shape)
            inside.append(rows.filter(pl.Series(shapely.contains_xy(shape, rows["lon"].to_numpy(), rows["lat"].to_numpy()))))
        meta = places.select("place_id", "name", "category")
        return pl.concat(inside).join(meta, on="place_id")
