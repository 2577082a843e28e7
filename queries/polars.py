"""The Polars engine: lazy scans of the lake, an exact point-in-polygon test on boundary cells (``queries.inside``)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import polars as pl

from citylake.h3_index import polars_expr as X
from citylake.h3_index.buckets import bucket_width_us
from citylake.h3_index.polygons import is_polygonal
from citylake.lake import Lake, registry, scan
from citylake.queries.base import FootfallBy
from citylake.queries.filters import Filters
from citylake.queries.group_counts import aligned_chunks, dense_counts
from citylake.queries.inside import Points, contains_each

STREAMING = "streaming"  # Polars' streaming engine: scans, joins and aggregations in bounded memory, and faster here
PLACE = "_place"  # a place's number within one query
INSIDE = "_inside"


class PolarsEngine:
    name = "polars"

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self._covers: dict[tuple, tuple[pl.DataFrame, np.ndarray, pl.LazyFrame]] = {}  # by selection: a footfall cut into
        # windows (``queries.windows``) loads the places once

    def footfalls(self, *, views: list[tuple[FootfallBy, int, str]], filters: Filters) -> list[pl.DataFrame]:
        pings = scan(self.lake, "pings").filter(filters.ping_expr()).select("device_id", "ts", "lat", "lon", "h3_cell")
        if len(views) > 1:  # several views of one window: its pings are read from the lake once, then held
            pings = pings.collect(engine=STREAMING).lazy()
        return [self._footfall(pings, by=by, freq=freq, res=res, filters=filters) for by, res, freq in views]

    def _footfall(self, pings: pl.LazyFrame, *, by: FootfallBy, freq: str, res: int, filters: Filters) -> pl.DataFrame:
        if by == "cell":
            bucket = X.time_bucket("ts", freq).alias("bucket")
            cell = pl.col("h3_cell") if res == self.lake.cell_res else X.cell_to_parent("h3_cell", res).alias("h3_cell")
            return (pings.group_by(cell, bucket).agg(pl.len().alias("pings"), pl.col("device_id").n_unique().alias("devices"))
                    .collect(engine=STREAMING))
        if by == "place":
            places, shape_of, cells = self.covers(filters)
            per_place = place_counts(candidates_in(pings, cells, shape_of), numbers=len(shape_of), freq=freq)
            return (per_place.join(places, on=PLACE, maintain_order="left")
                    .select("place_id", "name", "category", "bucket", "pings", "devices"))
        hits, places = self._hits(pings, filters)
        categories = (places.select(pl.col("category").unique().sort()).with_row_index("_category")  # numbers ride along
                      .with_columns(pl.col("_category").cast(pl.UInt32)))
        codes = places.join(categories, on="category").select(PLACE, "_category")
        once = hits.join(codes.lazy(), on=PLACE).unique(subset=["device_id", "ts", "lat", "lon", "_category"])  # once per category
        per_category = counts_per(once, "_category", freq)
        return (per_category.join(categories, on="_category", maintain_order="left")
                .select("category", "bucket", "pings", "devices"))

    def presence(self, *, filters: Filters) -> pl.DataFrame:
        pings = scan(self.lake, "pings").filter(filters.ping_expr()).select("device_id", "ts", "lat", "lon", "h3_cell")
        hits, places = self._hits(pings, filters)
        hours = hits.select("device_id", PLACE, X.time_bucket("ts", "1h").alias("bucket")).unique().collect(engine=STREAMING)
        return hours.join(places.select(PLACE, "place_id"), on=PLACE).select("device_id", "place_id", "bucket")

    def pings(self, *, filters: Filters) -> pl.DataFrame:
        return scan(self.lake, "pings").filter(filters.ping_expr()).select("device_id", "ts", "lat", "lon").collect()

    def readings(self, *, sensor_ids: list[str], freq: str, filters: Filters) -> pl.DataFrame:
        rows = scan(self.lake, "readings").filter(filters.ping_expr() & pl.col("sensor_id").is_in(sensor_ids))
        return (rows.group_by("sensor_id", "metric", X.time_bucket("ts", freq).alias("bucket"))
                .agg(pl.len().alias("readings"), pl.col("value").mean().alias("mean"), pl.col("value").min().alias("min"),
                     pl.col("value").max().alias("max")).collect())

    def stays(self, *, filters: Filters, max_gap_s: int, min_dwell_s: int) -> pl.DataFrame:
        return self._stays(filters, max_gap_s, edges=False).filter(lasting(min_dwell_s)).select(STAY_COLUMNS).collect()

    def stay_pieces(self, *, filters: Filters, max_gap_s: int) -> pl.DataFrame:
        """Every stay of the filters' pings however short (device_id, place_id, start, end, pings), and whether it holds
        its device's first ping there (``opens``) and its last (``closes``): where it may go on from a stay before the
        window or into one after it (``analytics.fanout.stays_on_cluster`` joins them)."""
        return self._stays(filters, max_gap_s, edges=True).select(*STAY_COLUMNS, "opens", "closes").collect()

    def _stays(self, filters: Filters, max_gap_s: int, *, edges: bool) -> pl.LazyFrame:
        """Stays however short, with the place's id; with ``opens`` and ``closes`` when ``edges`` (a window count per
        device the one-process stays do not need)."""
        # Number each device's pings in time order; a stay is a run of consecutive numbers in one place.
        pings = (scan(self.lake, "pings").filter(filters.ping_expr()).select("device_id", "ts", "lat", "lon", "h3_cell")
                 .with_columns(pl.int_range(1, pl.len() + 1).over("device_id", order_by=["ts", "lat", "lon"]).alias("seq"),
                               *([pl.len().over("device_id").alias("_of")] if edges else [])))
        hits, places = self._hits(pings, filters)
        hits = hits.sort("device_id", PLACE, "seq")
        # rows are sorted by run, so a run's previous row is the row above when it has the same device and place
        same_run = (pl.col("device_id") == pl.col("device_id").shift(1)) & (pl.col(PLACE) == pl.col(PLACE).shift(1))
        new_stay = ~(same_run & (pl.col("seq") == pl.col("seq").shift(1) + 1)
                     & ((pl.col("ts") - pl.col("ts").shift(1)).dt.total_microseconds() <= max_gap_s * 10**6)).fill_null(False)
        ends = [(pl.col("seq").min() == 1).alias("opens"), (pl.col("seq").max() == pl.col("_of").first()).alias("closes")]
        stays = (hits.with_columns(new_stay.cast(pl.Int64).cum_sum().alias("stay"))
                 .group_by("device_id", PLACE, "stay")
                 .agg(pl.col("ts").min().alias("start"), pl.col("ts").max().alias("end"), pl.len().alias("pings"),
                      *(ends if edges else [])))
        return stays.join(places.lazy(), on=PLACE)

    def _hits(self, pings: pl.LazyFrame, filters: Filters) -> tuple[pl.LazyFrame, pl.DataFrame]:
        """Pings inside each selected polygonal place (interior cells as they are, boundary cells tested exactly), each
        with the place's number in ``PLACE``; and the places by number (place_id, name, category). Numbers, not ids,
        ride along with the pings: a ping in several places is one row per place, so this is the widest frame here."""
        places, shape_of, cells = self.covers(filters)
        return hits_in(pings, cells, shape_of), places

    def covers(self, filters: Filters) -> tuple[pl.DataFrame, np.ndarray, pl.LazyFrame]:
        """The selected polygonal places numbered in ``PLACE`` (place_id, name, category), their shapes by number, and
        their H3 covers (h3_cell, ``PLACE``, interior), in memory; loaded once per selection of places."""
        selection = (filters.place_ids, filters.categories)
        if selection not in self._covers:
            self._covers[selection] = self._load_covers(filters)
        return self._covers[selection]

    def _load_covers(self, filters: Filters) -> tuple[pl.DataFrame, np.ndarray, pl.LazyFrame]:
        places = registry.places(self.lake, place_ids=filters.place_ids, categories=filters.categories).sort("place_id")
        shape_of = registry.shapes(places)  # by place number
        places = places.drop("geometry").with_columns(pl.int_range(pl.len(), dtype=pl.UInt32).alias(PLACE))  # in place_id order
        places = places.filter(pl.Series(is_polygonal(shape_of)))
        cells = (scan(self.lake, "place_cells").filter(pl.col("place_id").is_in(places["place_id"].implode()))
                 .join(places.lazy().select("place_id", PLACE), on="place_id").select("h3_cell", PLACE, "interior"))
        return places, shape_of, cells.collect().lazy()


STAY_COLUMNS = ["device_id", "place_id", "start", "end", "pings"]  # a stay, as every engine gives it before ``tidy_stays``


def lasting(min_dwell_s: int, /) -> pl.Expr:
    """Stays (start, end) of at least ``min_dwell_s``."""
    return (pl.col("end") - pl.col("start")).dt.total_microseconds() >= min_dwell_s * 10**6


SLOT = 2**32  # a group's key: its number times SLOT plus its bucket's number, offset by SLOT / 2 (±20,000 years of 5 min)


def counts_per(hits: pl.LazyFrame, number: str, freq: str) -> pl.DataFrame:
    """Pings and distinct devices per (``number``, bucket of ``freq``), sorted by both: grouped on one integer key, which
    Polars groups a quarter faster than the pair, and sorted as integers, so the strings joined on later come in order."""
    width = bucket_width_us(freq)
    slot = (pl.col("ts").dt.epoch("us").floordiv(width) + SLOT // 2).cast(pl.UInt32)  # strict: never wraps into the number
    key = pl.col(number).cast(pl.UInt64) * SLOT + slot.cast(pl.UInt64)
    counts = (hits.group_by(key.alias("_key")).agg(pl.len().alias("pings"), pl.col("device_id").n_unique().alias("devices"))
              .collect(engine=STREAMING).sort("_key"))
    bucket = (((pl.col("_key") % SLOT).cast(pl.Int64) - SLOT // 2) * width).cast(pl.Datetime("us", "UTC"))
    return counts.select((pl.col("_key") // SLOT).cast(pl.UInt32).alias(number), bucket.alias("bucket"), "pings", "devices")


class Candidates(NamedTuple):
    """Pings matched to places through the places' H3 covers, once per place (``PLACE``), and whether each is inside."""

    frame: pl.DataFrame  # device_id, ts, lat, lon, PLACE, interior
    inside: np.ndarray

    def hits(self) -> pl.LazyFrame:
        # filtered lazily, so the query after it keeps only the columns it reads and filters and aggregates in one pass
        return self.frame.with_columns(pl.Series(INSIDE, self.inside)).lazy().filter(pl.col(INSIDE)).drop(INSIDE, "interior")


def place_counts(candidates: Candidates, *, numbers: int, freq: str) -> pl.DataFrame:
    """Pings and distinct devices per (``PLACE``, bucket) of the candidates inside their place: on the compiled dense
    grid (``queries.group_counts``), or grouped by Polars where that grid would be far larger than the rows."""
    counts = dense_counts(candidates.frame, candidates.inside, number=PLACE, numbers=numbers, freq=freq)
    return counts_per(candidates.hits(), PLACE, freq) if counts is None else counts


def hits_in(pings: pl.LazyFrame, cells: pl.LazyFrame, shape_of: np.ndarray) -> pl.LazyFrame:
    """``pings`` (with h3_cell, lon, lat) once per place of ``cells`` that holds them, with the place's number."""
    return candidates_in(pings, cells, shape_of).hits()


def candidates_in(pings: pl.LazyFrame, cells: pl.LazyFrame, shape_of: np.ndarray) -> Candidates:
    """``pings`` (with h3_cell, lon, lat) once per place whose cover in ``cells`` has their cell, each tested exactly."""
    cells = cells.collect().lazy()  # the covers first (if not yet): the join then builds on a frame in memory (a few % faster)
    candidates = pings.join(cells, on="h3_cell").drop("h3_cell").collect(engine=STREAMING)
    runs = [Points(*chunks) for chunks in aligned_chunks([candidates[name] for name in (PLACE, "lon", "lat", "interior")])]
    return Candidates(candidates, contains_each(shape_of, runs))
